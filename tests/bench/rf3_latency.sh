#!/usr/bin/env bash
# Produce latency at replication factor 3 (BENCHMARKS.md, "RF 3 at 20,000 rec/s"): a fresh
# three-node dev cluster, a topic of 8 partitions at RF 3, 2M records with 2 producers at full
# speed, then 400,000 at 20,000 rec/s with the default linger and again with linger 0. Prints
# each `perf produce` summary (the JSON run also has the per-second timeline).
#   BIN=target/release/gregor tests/bench/rf3_latency.sh
# With TRACE=1, `perf trace` records every fsync-family call over TRACE_MIN_MS (default 20) ms in the three nodes
# during the linger-0 run ($DIR/syncs.txt, kept). Not part of the test suite.
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/gregor}")
DIR=$(mktemp -d /tmp/gregor-rf3.XXXXXX)
"$BIN" dev cluster --nodes 3 --data-dir "$DIR" > "$DIR/dev.log" 2>&1 &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null; wait $DEV 2>/dev/null || true; [ -n "${TRACE:-}" ] || rm -rf "$DIR"' EXIT
until grep -q "GREGOR_BOOTSTRAP=" "$DIR/dev.log"; do sleep 0.2; done
export GREGOR_BOOTSTRAP=$(sed -n 's/.*GREGOR_BOOTSTRAP=//p' "$DIR/dev.log" | head -1)

"$BIN" topic create perf --partitions 8 --replication-factor 3 > /dev/null
sleep 5
echo "== full speed, 2 producers"
"$BIN" perf produce --topic perf --partitions 8 --records 2000000 --producers 2 2>&1 | tail -3
echo "== 20,000 rec/s, default linger"
"$BIN" perf produce --topic perf --partitions 8 --records 400000 --throughput 20000 2>&1 | tail -3
echo "== 20,000 rec/s, linger 0"
if [ -n "${TRACE:-}" ]; then
    pids=$(pgrep -d, -f -- "serve --node-id .* --data-dir $DIR/")
    perf trace -p "$pids" --duration "${TRACE_MIN_MS:-20}" -e fsync,fdatasync,sync_file_range -o "$DIR/syncs.txt" &
    TRACER=$!
fi
"$BIN" perf produce --topic perf --partitions 8 --records 400000 --throughput 20000 --linger-ms 0 --json > "$DIR/linger0.json"
python3 - "$DIR/linger0.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
print("records/s", round(run["records_per_sec"]), "latency ms", run.get("latency_ms"))
for window in run.get("timeline", []):
    latency = window.get("latency_ms") or {}
    if latency.get("max", 0) > 20:
        print("stall at", window["at_s"], "s:", latency)
PY
if [ -n "${TRACE:-}" ]; then kill -INT $TRACER; wait $TRACER || true; echo "syncs over 20 ms: $DIR/syncs.txt"; fi
