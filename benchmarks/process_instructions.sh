#!/usr/bin/env bash
# process_instructions.sh - machine instructions per request of the real processes (twistd, real
# TCP, the default log sinks), counted by valgrind: what gateway_vs_klein.sh's servers execute in
# user space per GET /ping, without its noise.
#
#   bash benchmarks/process_instructions.sh on       # gateway + Billing, the default configuration
#   bash benchmarks/process_instructions.sh quiet    # the same with metrics and both access logs off
#   bash benchmarks/process_instructions.sh klein    # bare Klein (benchmarks/direct_klein.py)
#   N=3000 bash benchmarks/process_instructions.sh on
#
# Starts the servers of gateway_vs_klein.sh (same configuration and environment, its ports) under
# valgrind --tool=callgrind, sends WARM requests (benchmarks/load.py, 16 keep-alive connections),
# zeroes the counters (callgrind_control -z), sends N more, dumps them (callgrind_control -d) and
# prints the instructions of all server processes together divided by N.  The kernel's share
# (system calls, loopback TCP) is not counted: it is the same per request in on and quiet, so
# on / quiet here is a lower bound of the throughput ratio.  Takes a few minutes (start-up under
# valgrind is slow).  Needs valgrind.
set -euo pipefail
MODE=${1:?usage: process_instructions.sh on|quiet|klein}
N=${N:-2000}; WARM=${WARM:-400}; C=${C:-16}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source "$ROOT/benchmarks/lib.sh"
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }
export PYTHONHASHSEED=0
OUT=${OUT:-$(mktemp -d /tmp/stella-pinstr.XXXXXX)}
NAMES=()
start() {  # name cmd...: run under callgrind (with the environment ENV), log to $OUT/name.log
  local name=$1; shift
  env "${ENV[@]}" valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.cg" "$@" \
    >"$OUT/$name.log" 2>&1 &
  PIDS+=($!); NAMES+=("$name")
}
ENV=()
case "$MODE" in
  on|quiet)
    [ "$MODE" = quiet ] && ENV=(STELLAROUTER_ACCESS_LOG__ENABLED=false STELLAROUTER_METRICS__ENABLED=false
                               STELLAROUTER_MICRO__ACCESS_LOG__ENABLED=false)
    wait_port_free 8080; wait_port_free 5100; wait_port_free 9901
    start gateway "$TWISTD" -n --pidfile= stella-gateway --config examples/billing/gateway.yaml
    start billing "$TWISTD" -n --pidfile= stella-micro --config examples/billing/billing.yaml
    URL=http://127.0.0.1:8080/ping;;
  klein)
    wait_port_free 8081
    start klein "$PY" benchmarks/direct_klein.py --port 8081
    URL=http://127.0.0.1:8081/ping;;
  *) echo "unknown mode $MODE (on, quiet, klein)" >&2; exit 2;;
esac
for _ in $(seq 1 300); do
  [ "$(curl -fs --max-time 2 "$URL" 2>/dev/null)" = pong ] && break
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "!! a server exited; logs in $OUT" >&2; tail -n 20 "$OUT"/*.log >&2; exit 1; }
  done
  sleep 1
done
[ "$(curl -fs --max-time 2 "$URL")" = pong ] || { echo "!! not ready; logs in $OUT" >&2; exit 1; }
"$PY" benchmarks/load.py "$URL" -n "$WARM" -c "$C"
for p in "${PIDS[@]}"; do callgrind_control -z "$p" >/dev/null; done
"$PY" benchmarks/load.py "$URL" -n "$N" -c "$C"
for p in "${PIDS[@]}"; do callgrind_control -d "$p" >/dev/null; done
total=0
for name in "${NAMES[@]}"; do
  dump=$(ls "$OUT/$name.cg".* | sort -t. -k3 -n | tail -1)
  n=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$dump")
  echo "  $name: $(( n / N )) instructions per request"
  total=$(( total + n ))
done
echo "$MODE: $(( total / N )) instructions per request, all server processes ($N requests, C=$C; $ROOT)"
