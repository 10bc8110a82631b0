#!/usr/bin/env bash
# cpu_per_request.sh - CPU time per request of each server process, gateway path vs direct Klein.
#
#   bash benchmarks/cpu_per_request.sh            # C=16 and C=1, 10 s each, GET and POST
#   CS="16" SECS=20 POST=0 bash benchmarks/cpu_per_request.sh
#
# Same layout as gateway_vs_klein.sh (gateway, billing, the echo microservice of
# benchmarks/echo.yaml and a plain direct Klein app pinned to SERVER_CPU=1, wrk to WRK_CPU=0).  For
# each C it loads the gateway, then the direct app, with GET /ping and then (POST=1, the default)
# with POST /echo and a 1 KiB body, for SECS seconds each (after a 2 s warm-up), and divides each
# process's user and system CPU time (/proc/PID/stat, clock ticks) by the number of requests wrk
# completed.  Tells which process pays for a proxied request; a ratio alone does not.  Ends with
# each process's resident memory (VmRSS) after the runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CS=${CS:-16 1}; SECS=${SECS:-10}; SERVER_CPU=${SERVER_CPU:-1}; WRK_CPU=${WRK_CPU:-0}; POST=${POST:-1}
POST_BYTES=1024
source "$ROOT/benchmarks/lib.sh"
OUT=${OUT:-$(mktemp -d /tmp/stella-cpu.XXXXXX)}; mkdir -p "$OUT"

for port in 8080 5100 8081; do wait_port_free "$port"; done
taskset -c "$SERVER_CPU" "$TWISTD" -n --pidfile= stella-gateway --config examples/billing/gateway.yaml >"$OUT/gateway.log" 2>&1 &
GW=$!; PIDS+=($GW)
taskset -c "$SERVER_CPU" "$TWISTD" -n --pidfile= stella-micro --config examples/billing/billing.yaml >"$OUT/billing.log" 2>&1 &
MS=$!; PIDS+=($MS)
taskset -c "$SERVER_CPU" "$TWISTD" -n --pidfile= stella-micro --config benchmarks/echo.yaml >"$OUT/echo.log" 2>&1 &
EC=$!; PIDS+=($EC)
taskset -c "$SERVER_CPU" "$PY" benchmarks/direct_klein.py --port 8081 >"$OUT/direct.log" 2>&1 &
DK=$!; PIDS+=($DK)
echo_ok() {  # url: does POST url answer its body?
  [ "$(curl -fs --max-time 1 -X POST -H 'Content-Type: application/octet-stream' --data-binary @- "$1" \
         <<<probe 2>/dev/null)" = probe ]
}
for _ in $(seq 1 150); do
  [ "$(curl -fs --max-time 1 localhost:8080/ping 2>/dev/null)" = pong ] &&
    [ "$(curl -fs --max-time 1 127.0.0.1:8081/ping 2>/dev/null)" = pong ] &&
    echo_ok http://127.0.0.1:8080/echo && echo_ok http://127.0.0.1:8081/echo && break
  sleep 0.2
done

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # utime stime
TCK=$(getconf CLK_TCK)
echo "CPU us per request (user+system), C connections, ${SECS}s runs; servers on CPU $SERVER_CPU"
REQUESTS=("GET http://127.0.0.1:8080/ping" "GET http://127.0.0.1:8081/ping")
if [ "$POST" = 1 ]; then REQUESTS+=("POST http://127.0.0.1:8080/echo" "POST http://127.0.0.1:8081/echo"); fi
for c in $CS; do
  for req in "${REQUESTS[@]}"; do
    read -r method url <<<"$req"
    body=0; [ "$method" = POST ] && body=$POST_BYTES
    export WRK_BODY_BYTES=$body  # benchmarks/wrk_report.lua: POST a body of this size if > 0
    taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d2s -s benchmarks/wrk_report.lua "$url" >/dev/null
    before="$(ticks $GW) $(ticks $MS) $(ticks $EC) $(ticks $DK)"
    out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d"${SECS}"s -s benchmarks/wrk_report.lua "$url")
    after="$(ticks $GW) $(ticks $MS) $(ticks $EC) $(ticks $DK)"
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    "$PY" - "$c" "$method" "$url" "$rps" "$n" "$TCK" "$before" "$after" <<'EOF'
import sys
c, method, url = sys.argv[1], sys.argv[2], sys.argv[3]
rps, n, tck = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
b = [int(x) for x in sys.argv[7].split()]; a = [int(x) for x in sys.argv[8].split()]
us = [(y - x) / tck * 1e6 / n for x, y in zip(b, a)]
g, m, e, d = us[0:2], us[2:4], us[4:6], us[6:8]
what = "GET /ping " if method == "GET" else "POST /echo"
target = "gateway" if ":8080/" in url else "direct "
line = f"C={c:<3} {what} {target} {rps:8.0f} req/s |"
if target == "gateway":
    name, ms = ("billing", m) if method == "GET" else ("echo   ", e)
    line += (f" gateway {g[0]:5.1f}+{g[1]:4.1f}  {name} {ms[0]:5.1f}+{ms[1]:4.1f}"
             f"  = {sum(g) + sum(ms):5.1f} us/req")
else:
    line += f" direct Klein {d[0]:5.1f}+{d[1]:4.1f}  = {sum(d):5.1f} us/req"
print(line)
EOF
  done
done
rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
echo "RSS after the runs (MiB): gateway $(rss $GW), billing $(rss $MS), echo $(rss $EC), direct Klein $(rss $DK)"
