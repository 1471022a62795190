#!/usr/bin/env bash
# End-to-end latency on one node (BENCHMARKS.md, issue 9's "end to end at 20,000 rec/s"): a
# fresh `gregor serve`, a consumer tailing topic e2e from its end, a producer at RATE rec/s
# (default 20,000) with linger 0 and acks=all. Prints the consumer's summary (latency = hand-over
# to the consumer minus the producer's µs send stamp) and the producer's.
#   BIN=target/release/gregor tests/bench/e2e.sh [RATE] [RECORDS]
# Extra `gregor serve` flags go in SERVE_ARGS. Not part of the test suite.
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/gregor}")
RATE=${1:-20000}
RECORDS=${2:-400000}
DIR=$(mktemp -d /tmp/gregor-e2e.XXXXXX)
PORT=${PORT:-29192}
"$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT ${SERVE_ARGS:-} > "$DIR/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true; rm -rf "$DIR"' EXIT
export GREGOR_BOOTSTRAP=127.0.0.1:$PORT
until "$BIN" topic create e2e > /dev/null 2>&1; do sleep 0.2; done
"$BIN" perf consume --topic e2e --records "$RECORDS" --from latest --timeout-ms 30000 --json > "$DIR/consume.json" 2> /dev/null &
CONSUMER=$!
sleep 1   # the consumer's first fetch is parked before the first record is sent
"$BIN" perf produce --topic e2e --records "$RECORDS" --record-size 100 --acks all \
    --throughput "$RATE" --linger-ms 0 --json > "$DIR/produce.json"
wait $CONSUMER
python3 - "$DIR/consume.json" "$DIR/produce.json" <<'PY'
import json, sys
for label, path in (("consumer (end to end)", sys.argv[1]), ("producer (acks)", sys.argv[2])):
    run = json.load(open(path))
    print(f"{label}: {round(run['records_per_sec'])} rec/s, latency ms {run.get('latency_ms')}")
    slow = [(w["at_s"], (w.get("latency_ms") or {}).get("p99"), (w.get("latency_ms") or {}).get("max"))
            for w in run.get("timeline", []) if (w.get("latency_ms") or {}).get("max", 0) > 5]
    print("   seconds with a record over 5 ms (at_s, p99, max):", slow)
PY
