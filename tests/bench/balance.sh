#!/usr/bin/env bash
# Leader balance after a paused node (BENCHMARKS.md, "A node paused and resumed"): a fresh
# three-node dev cluster, TOPICS topics of PARTS partitions at RF 3, 40 s idle, then node 1
# SIGSTOPped until no partition of the first topic is led by it, 3 s more, SIGCONT; prints the
# leaders per node (as `cluster status` counts them) at each step.
#   BIN=target/release/gregor GREGOR_LEADER_BALANCE_INTERVAL_MS=10000 tests/bench/balance.sh
# Needs python3 (reads the JSON). Not part of the test suite.
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/gregor}")
TOPICS=${TOPICS:-3}
PARTS=${PARTS:-100}
DIR=$(mktemp -d /tmp/gregor-balance.XXXXXX)
export GREGOR_LEADER_BALANCE_INTERVAL_MS=${GREGOR_LEADER_BALANCE_INTERVAL_MS:-10000}

"$BIN" dev cluster --nodes 3 --data-dir "$DIR" > "$DIR/dev.log" 2>&1 &
DEV=$!
trap 'kill -CONT "$(node_pid 1)" 2>/dev/null || true; kill -INT $DEV 2>/dev/null; wait $DEV 2>/dev/null || true; rm -rf "$DIR"' EXIT

node_pid() { pgrep -f -- "serve --node-id $1 --data-dir $DIR/" | head -1; }
until grep -q "GREGOR_BOOTSTRAP=" "$DIR/dev.log"; do sleep 0.2; done
# Node 1 is the one paused: ask the others first (a stopped process still accepts connections,
# and a client would wait out its request timeout there).
export GREGOR_BOOTSTRAP=$(sed -n 's/.*GREGOR_BOOTSTRAP=//p' "$DIR/dev.log" | head -1 | tr , '\n' | tac | paste -sd,)

leaders() {
    "$BIN" cluster status --json 2>/dev/null | python3 -c '
import json, sys
status = json.load(sys.stdin)
print(" / ".join(str(n["leaders"]) for n in sorted(status["nodes"], key=lambda n: n["node_id"])))'
}
led_by_one() {
    "$BIN" topic describe t0 --json 2>/dev/null | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitions"]
print(sum(1 for p in parts if p.get("leader") in (1, None)))'
}

for t in $(seq 0 $((TOPICS - 1))); do
    "$BIN" topic create "t$t" --partitions "$PARTS" --replication-factor 3 > /dev/null
done
sleep 40
echo "settled: $(leaders)"

kill -STOP "$(node_pid 1)"
stopped=$(date +%s.%N)
until [ "$(led_by_one)" = 0 ]; do sleep 0.1; done
echo "t0 led without node 1 after $(echo "$(date +%s.%N) - $stopped" | bc) s"
sleep 3
kill -CONT "$(node_pid 1)"
for after in 10 30 60 90; do
    sleep $((after - ${last:-0}))
    last=$after
    echo "${after} s after the resume: $(leaders)"
done
