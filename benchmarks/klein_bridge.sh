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
start "$MICRO_CPU" notes "$TWISTD" -n --pidfile= stella-micro --config "$OUT/notes.yaml" \
  --app examples.migration.bridged:service
start "$SERVER_CPU" direct "$PY" benchmarks/notes_direct.py --port $DIRECT_PORT
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
