#!/usr/bin/env bash
# Run the benchmark suite and print every summary line; --quick finishes in under two minutes (~100 s).
#
#   bash benchmarks/run_all.sh            # the numbers in docs/benchmarks.md (~20 min)
#   bash benchmarks/run_all.sh --quick    # smaller sizes, shorter runs
#
# Needs wrk (apt-get install -y wrk); nginx (apt-get install -y nginx) for the nginx -> Klein
# reference of gateway_vs_klein.sh, which is skipped without it.  gateway_vs_klein.sh takes its
# knobs from the environment (VARIANTS, CONNS, POST, ...).  Runs on loopback only; everything it
# starts is stopped.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${STELLA_VENV:-$ROOT/.venv}/bin/python
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

section() { echo; echo "== $*"; }
if [ "$QUICK" = 1 ]; then
  section "proxied path CPU in one process (no sockets)"; "$PY" benchmarks/hot_path.py -n 2000 -r 1
  section "resolution + routing, 10 vs 10,000 endpoints"; "$PY" benchmarks/resolution.py --lookups 50000
  section "cancellation latency over TCP";              "$PY" benchmarks/cancel_latency.py --runs 50
  section "transports (TCP, TLS, UDP)";                 "$PY" benchmarks/transports.py --seconds 3 --rounds 1
  section "streaming (64 MiB)";                         "$PY" benchmarks/streaming.py --size-mib 64 --pings 50
  section "scale (200 instances, 10,000 endpoints)";    "$PY" benchmarks/scale.py --instances 200 --services 20 --soak-seconds 5
  section "gateway vs direct Klein and nginx -> Klein (GET /ping, POST 1 KiB echo)"
  CONNS=${CONNS:-16} VARIANTS=${VARIANTS:-plain nginx} bash benchmarks/gateway_vs_klein.sh --quick
  section "CPU per request of each process, and RSS"; CS=16 SECS=2 POST=0 bash benchmarks/cpu_per_request.sh
else
  section "proxied path CPU in one process (no sockets)"; "$PY" benchmarks/hot_path.py
  section "resolution + routing, 10 vs 10,000 endpoints"; "$PY" benchmarks/resolution.py
  section "cancellation latency over TCP";              "$PY" benchmarks/cancel_latency.py --runs 200
  section "transports (TCP, TLS, UDP)";                 "$PY" benchmarks/transports.py --seconds 5 --rounds 3
  section "streaming (1 GiB)";                          "$PY" benchmarks/streaming.py --size-mib 1024 --pings 300
  section "scale (1,000 instances, 10,000 endpoints)";  "$PY" benchmarks/scale.py --soak-seconds ${SOAK:-120}
  section "gateway vs direct Klein and nginx -> Klein (GET /ping, POST 1 KiB echo)"
  D=${D:-5} ROUNDS=${ROUNDS:-3} bash benchmarks/gateway_vs_klein.sh
  section "CPU per request of each process, and RSS"; SECS=8 bash benchmarks/cpu_per_request.sh
fi
