#!/usr/bin/env bash
# klein_bridge.sh - issue 25: the notes Klein app (examples/migration/notes_app.py) mounted with
# service.mount_klein behind the gateway, against the same app served directly by Klein: GET
# /notes/1 (a 200 JSON answer run by the app's own code on a real twisted.web request).
#
#   bash benchmarks/klein_bridge.sh             # D=10 ROUNDS=3 C=16
#   D=5 ROUNDS=3 CONNS="16 1" bash benchmarks/klein_bridge.sh
#
# Starts, pinned to SERVER_CPU (default 1) with taskset, on ports of their own (8180, 5180, 8181)
# (the microservice on MICRO_CPU, default SERVER_CPU: MICRO_CPU=0 puts it beside wrk, as a
# microservice on a host of its own would not compete with its gateway):
#   * twistd stella-gateway (HTTP 127.0.0.1:8180, TCP 127.0.0.1:5180, access log off);
#   * twistd stella-micro --app examples.migration.bridged:service (dials 5180);
#   * benchmarks/notes_direct.py on 127.0.0.1:8181 (Site(app.resource()), access log off);
# creates note 1 on both, then runs the interleaved A/B script (wrk pinned to WRK_CPU, default 0)
# at every C in CONNS. Target (issue 25): bridged >= 0.8x direct.
# Then (CPU=1, the default) CPU time per request of each process: SECS (default 10) s of wrk at
# C=16 on each URL, user+system ticks of the gateway, the microservice and the direct app
# (/proc/PID/stat) divided by the requests wrk completed; "own cores" is the throughput ratio the
# bridged path reaches when the gateway and the microservice each have a core (the slower one
# bounds it): direct CPU per request / max(gateway's, microservice's).
# env knobs: D ROUNDS WARMUP CONNS SERVER_CPU WRK_CPU AB_SCRIPT STELLA_VENV OUT (as gateway_vs_klein.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export D=${D:-10} ROUNDS=${ROUNDS:-3} WARMUP=${WARMUP:-2}
export WRK_CPU=${WRK_CPU-0}
SERVER_CPU=${SERVER_CPU:-1}
MICRO_CPU=${MICRO_CPU:-$SERVER_CPU}
CONNS=${CONNS:-16}
AB_SCRIPT=${AB_SCRIPT:-/work/shared/perf/gateway_vs_direct.sh}
GW_PORT=8180; MS_PORT=5180; DIRECT_PORT=8181
source "$ROOT/benchmarks/lib.sh"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/stella-klein-bridge.XXXXXX)}
mkdir -p "$OUT"
for p in $GW_PORT $MS_PORT $DIRECT_PORT; do wait_port_free "$p"; done
cat >"$OUT/gateway.yaml" <<YAML
node: {node_id: gw-bench, region: eu1}
http: {listen: "tcp:$GW_PORT:interface=127.0.0.1"}
transports: [{type: tcp, listen: "tcp:$MS_PORT:interface=127.0.0.1"}]
YAML
cat >"$OUT/notes.yaml" <<YAML
region: eu1
instance_id: notes-bench
routers: [{transport: tcp, address: "tcp:host=127.0.0.1:port=$MS_PORT"}]
YAML
start() {  # cpu name cmd...
  local cpu=$1 name=$2; shift 2
  taskset -c "$cpu" "$@" >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
}
start "$SERVER_CPU" gateway "$TWISTD" -n --pidfile= stella-gateway --config "$OUT/gateway.yaml"
GW_PID=${PIDS[-1]}
start "$MICRO_CPU" notes "$TWISTD" -n --pidfile= stella-micro --config "$OUT/notes.yaml" \
  --app examples.migration.bridged:service
MS_PID=${PIDS[-1]}
start "$SERVER_CPU" direct "$PY" benchmarks/notes_direct.py --port $DIRECT_PORT
DK_PID=${PIDS[-1]}
for url in "http://127.0.0.1:$GW_PORT" "http://127.0.0.1:$DIRECT_PORT"; do
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d 'text=benchmark&tag=b' "$url/notes" || true)
    [ "$code" = 201 ] && break
    sleep 0.2
  done
  [ "$code" = 201 ] || { echo "!! $url/notes did not answer 201 (logs in $OUT)" >&2; exit 1; }
done
echo "== GET /notes/1: bridged (gateway :$GW_PORT, cpu $SERVER_CPU; microservice cpu $MICRO_CPU) vs" \
     "direct Klein (:$DIRECT_PORT, cpu $SERVER_CPU); logs in $OUT"
for c in $CONNS; do
  echo "== C=$c"
  C=$c bash "$AB_SCRIPT" "http://127.0.0.1:$GW_PORT/notes/1" "http://127.0.0.1:$DIRECT_PORT/notes/1"
done

[ "${CPU:-1}" = 1 ] || exit 0
SECS=${SECS:-10}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
load() {  # url -> completed requests
  taskset -c "$WRK_CPU" wrk -t1 -c16 -d"${SECS}s" "$1" 2>&1 | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p'
}
HZ=$(getconf CLK_TCK)
g0=$(ticks "$GW_PID"); m0=$(ticks "$MS_PID")
n_bridged=$(load "http://127.0.0.1:$GW_PORT/notes/1")
g1=$(ticks "$GW_PID"); m1=$(ticks "$MS_PID")
d0=$(ticks "$DK_PID")
n_direct=$(load "http://127.0.0.1:$DIRECT_PORT/notes/1")
d1=$(ticks "$DK_PID")
python3 - "$HZ" "$n_bridged" $((g1 - g0)) $((m1 - m0)) "$n_direct" $((d1 - d0)) <<'PY'
import sys
hz, nb, g, m, nd, d = (float(x) for x in sys.argv[1:])
us = lambda ticks, n: ticks / hz / n * 1e6
gw, ms, dk = us(g, nb), us(m, nb), us(d, nd)
print(f"CPU per request (C=16): gateway {gw:.0f} us + microservice (bridge + app) {ms:.0f} us"
      f" = {gw + ms:.0f} us bridged; direct Klein {dk:.0f} us")
print(f"ratio bridged/direct: one shared core {dk / (gw + ms):.2f}x; own cores "
      f"{dk / max(gw, ms):.2f}x")
PY
