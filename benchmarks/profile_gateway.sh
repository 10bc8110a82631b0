#!/usr/bin/env bash
# profile_gateway.sh - sample the gateway process with py-spy while wrk loads GET /ping.
#
#   bash benchmarks/profile_gateway.sh                # C=16, 10 s of samples, billing on CPU 0
#   C=1 SECS=10 TOP=25 IDLE=1 bash benchmarks/profile_gateway.sh
#
# Starts the Billing demo (gateway pinned to SERVER_CPU=1, billing to MICRO_CPU=0), runs wrk on
# WRK_CPU=0 for SECS+4 s, and records the gateway with `py-spy record` (blocking sampling,
# RATE=100 Hz; py-spy pinned to WRK_CPU) for SECS s after a 2 s warm-up.  Prints the TOP
# functions by own time (leaf Python frame of each sample; a C call such as socket.send is
# charged to the Python line that made it) and the path of the raw collapsed stacks.
#
# Why billing is NOT on the gateway's CPU here (unlike gateway_vs_klein.sh): py-spy samples wall
# time, so when both share one core, the time the gateway spends preempted by billing (woken by
# the gateway's own send()) shows up as "time in send".  With the gateway alone on its core and
# idle samples dropped (IDLE=0, the default) the profile approximates on-CPU time.  Caveat seen
# on a 2-vCPU VM: blocking sampling over-samples lines that make a syscall (epoll_ctl, send,
# recv, getrandom, getsockname) about 3x compared with the processes' system-time share; read
# them as "a syscall happens here", and cross-check with cProfile or cpu_per_request.sh.
# PYSPY_OPTS adds py-spy options (e.g. --nonblocking, which on that VM failed on most samples).
# Needs py-spy in the virtualenv (pip install py-spy) and ptrace rights.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
C=${C:-16}; SECS=${SECS:-10}; TOP=${TOP:-15}; RATE=${RATE:-100}
SERVER_CPU=${SERVER_CPU:-1}; MICRO_CPU=${MICRO_CPU:-0}; WRK_CPU=${WRK_CPU:-0}; IDLE=${IDLE:-0}
source "$ROOT/benchmarks/lib.sh"
PYSPY=$STELLA_VENV/bin/py-spy
[ -x "$PYSPY" ] || { echo "py-spy missing: $STELLA_VENV/bin/pip install py-spy" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/stella-prof.XXXXXX)}; mkdir -p "$OUT"

for port in 8080 5100; do wait_port_free "$port"; done

taskset -c "$SERVER_CPU" "$TWISTD" -n --pidfile= stella-gateway --config examples/billing/gateway.yaml >"$OUT/gateway.log" 2>&1 &
GW=$!; PIDS+=($GW)
taskset -c "$MICRO_CPU" "$TWISTD" -n --pidfile= stella-micro --config examples/billing/billing.yaml >"$OUT/billing.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
  [ "$(curl -fs --max-time 1 localhost:8080/ping 2>/dev/null)" = pong ] && break
  sleep 0.2
done
[ "$(curl -fs --max-time 1 localhost:8080/ping 2>/dev/null)" = pong ] || { echo "gateway not ready" >&2; tail "$OUT"/*.log >&2; exit 1; }

taskset -c "$WRK_CPU" wrk -t1 -c"$C" -d$((SECS + 4))s --timeout 5s http://127.0.0.1:8080/ping >"$OUT/wrk.txt" 2>&1 &
WRK=$!; PIDS+=($WRK)
sleep 2
taskset -c "$WRK_CPU" "$PYSPY" record $([ "$IDLE" = 1 ] && echo --idle) ${PYSPY_OPTS-} -r "$RATE" -d "$SECS" -f raw -o "$OUT/gateway.stacks" -p "$GW" >"$OUT/py-spy.log" 2>&1 \
  || { echo "py-spy failed:" >&2; cat "$OUT/py-spy.log" >&2; exit 1; }
wait "$WRK" || true
echo "== wrk during the profile (C=$C):"; sed -n '/Latency/,$p' "$OUT/wrk.txt"
echo "== py-spy: $(grep -o 'Samples: [0-9]* Errors: [0-9]*' "$OUT/py-spy.log" || echo '?'); stacks in $OUT/gateway.stacks"
"$PY" - "$OUT/gateway.stacks" "$TOP" <<'EOF'
import re, sys
from collections import Counter
path, top = sys.argv[1], int(sys.argv[2])
own, total = Counter(), Counter()
n = 0
for line in open(path):
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack:
        continue
    count = int(count)
    n += count
    # frames look like "func (path/to/file.py:123)"; drop the line number, shorten the path
    frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
    frames = [re.sub(r"\((?:.*/site-packages/|.*/(?=stellarouter/))", "(", f) for f in frames]
    own[frames[-1]] += count
    for f in set(frames):
        total[f] += count
print(f"{n} samples; top {top} functions by own time (leaf samples), with inclusive %:")
print(f"{'own%':>6} {'incl%':>6}  function")
for f, c in own.most_common(top):
    print(f"{100*c/n:6.1f} {100*total[f]/n:6.1f}  {f}")
EOF
