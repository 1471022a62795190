#!/usr/bin/env bash
# Issue 9's one-node figures (BENCHMARKS.md, "Results against the targets"), on a fresh data
# directory: produce 3M records to one partition (acks=all), consume them, produce 1M at a steady
# 50,000 rec/s with linger 0 (p99 / p99.9), then end to end at 20,000 rec/s (a consumer tailing
# the topic while the producer writes; latency from the producer's µs send stamps).
#   BIN=target/release/gregor tests/bench/one_node.sh
# Not part of the test suite.
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/gregor}")
DIR=$(mktemp -d /tmp/gregor-one.XXXXXX)
PORT=${PORT:-29292}
"$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT > "$DIR/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true; rm -rf "$DIR"' EXIT
export GREGOR_BOOTSTRAP=127.0.0.1:$PORT
until "$BIN" topic create p1 > /dev/null 2>&1; do sleep 0.2; done
"$BIN" topic create lat > /dev/null
"$BIN" topic create e2e > /dev/null
summary() { python3 -c "
import json, sys
run = json.load(open(sys.argv[1]))
print(sys.argv[2], round(run['records_per_sec']), 'rec/s; latency ms', run.get('latency_ms'))" "$@"; }
"$BIN" perf produce --topic p1 --records 3000000 --record-size 100 --acks all --json > "$DIR/p.json" 2>> "$DIR/perf.log"
summary "$DIR/p.json" "produce 3M:"
"$BIN" perf consume --topic p1 --records 3000000 --json > "$DIR/c.json" 2>> "$DIR/perf.log"
summary "$DIR/c.json" "consume 3M:"
"$BIN" perf produce --topic lat --records 1000000 --record-size 100 --acks all --throughput 50000 --linger-ms 0 --json > "$DIR/l.json" 2>> "$DIR/perf.log"
summary "$DIR/l.json" "at 50K:"
"$BIN" perf consume --topic e2e --records 400000 --from latest --timeout-ms 30000 --json > "$DIR/e.json" 2>> "$DIR/perf.log" &
CONSUMER=$!
sleep 1   # the consumer's first fetch is parked before the first record is sent
"$BIN" perf produce --topic e2e --records 400000 --record-size 100 --acks all --throughput 20000 --linger-ms 0 --json > "$DIR/ep.json" 2>> "$DIR/perf.log"
wait $CONSUMER
summary "$DIR/e.json" "end to end at 20K (consumer):"
summary "$DIR/ep.json" "   its producer:"
