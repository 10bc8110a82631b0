#!/usr/bin/env bash
# gateway_vs_klein.sh - the gateway (Billing demo) vs a bare Klein app: GET /ping, and POST /echo
# with a 1 KiB body echoed back.
#
#   bash benchmarks/gateway_vs_klein.sh            # full: D=10 ROUNDS=3, C=16 then C=1
#   bash benchmarks/gateway_vs_klein.sh --quick    # smoke: D=3 ROUNDS=1
#   D=20 ROUNDS=5 CONNS="16 64" bash benchmarks/gateway_vs_klein.sh
#   POST=0 VARIANTS=plain bash benchmarks/gateway_vs_klein.sh    # GET vs plain Klein only
#   POST_VARIANTS="plain like-gateway-frozen" bash benchmarks/gateway_vs_klein.sh   # POST like for like
#
# Starts, all pinned to SERVER_CPU (default 1) with taskset:
#   * twistd stella-gateway --config examples/billing/gateway.yaml   (HTTP 127.0.0.1:8080, TCP 5100)
#   * twistd stella-micro   --config examples/billing/billing.yaml   (GET /ping; dials 127.0.0.1:5100)
#   * twistd stella-micro   --config benchmarks/echo.yaml            (POST /echo, service bench-echo;
#                                                                     only with POST=1)
#   * benchmarks/direct_klein.py (GET /ping, POST /echo), one process per direct Klein variant in
#     VARIANTS and (with POST=1) POST_VARIANTS; plain also whenever nginx is used:
#       plain                on 127.0.0.1:8081  Site(app.resource()), no access log
#       like-gateway         on 127.0.0.1:8082  --like-gateway: the gateway's Site settings
#       like-gateway-frozen  on 127.0.0.1:8083  --like-gateway --gc-freeze (as twistd stella-gateway
#                                               does after start-up)
#   * for the variant quiet: a second gateway + Billing pair with metrics and both access logs off
#     (HTTP 127.0.0.1:8085, TCP 5110, admin 9902; STELLAROUTER_*ACCESS_LOG__ENABLED=false,
#     STELLAROUTER_METRICS__ENABLED=false): gateway vs quiet is what metrics + access log cost
#     (target >= 0.9x; issue 21).  Both are on in the default configuration (the first pair).
#   * for the variant nginx, if nginx is installed (else it is skipped, with a message):
#       nginx                on 127.0.0.1:8084  nginx -> the plain direct Klein: one worker, daemon off,
#                                               no access log, upstream keep-alive (32 connections,
#                                               HTTP/1.1); config, pid, error log, temp files in $OUT
# then, at every C in CONNS, runs the interleaved A/B script (wrk pinned to WRK_CPU, default 0) for
#   * GET /ping: gateway vs each variant in VARIANTS (target: >= 1.0x plain Klein); for nginx that
#     is gateway vs nginx -> Klein, so its ratio is directly the ">= 1.3x nginx -> Klein" target;
#   * POST /echo with a BODY=1024-byte body: gateway (-> bench-echo) vs each variant in
#     POST_VARIANTS, by default the plain direct Klein (POST=1, the default; target >= 0.9x plain).
#     plain parses every POST's Content-Type (form parsing on), the gateway does not; compare with
#     like-gateway(-frozen) for the like-for-like ratio,
# prints the per-round and SUMMARY lines, and stops everything it started on exit.  After each A/B
# it prints how much of the server core other processes used, and how busy wrk's core was (wrk
# alone: about 10 %): if either is far more, the run was disturbed (a busy wrk core starves wrk:
# both sides drop in bursts, rounds swing from 0.6x to 1.5x).  Run it on an otherwise idle machine: no test suite,
# no helper, nothing else; then rounds agree within a few percent.
#
# env knobs (defaults):
#   D=10 ROUNDS=3 WARMUP=2     passed through to the A/B script
#   CONNS="16 1"               connection counts to run
#   VARIANTS="plain like-gateway-frozen nginx"   what GET /ping is compared against (see above;
#                              without nginx installed: "plain like-gateway-frozen"); like-gateway
#                              and quiet are available too
#   NGINX=nginx                the nginx binary (default: nginx on PATH, else /usr/sbin/nginx)
#   POST=1                     also POST 1 KiB /echo (0: GET only)
#   POST_VARIANTS="plain"      what POST /echo is compared against (any of the variants above)
#   SERVER_CPU=1 WRK_CPU=0     CPU pinning (servers / wrk)
#   AB_SCRIPT=/work/shared/perf/gateway_vs_direct.sh   the interleaved A/B wrk script
#   STELLA_VENV                virtualenv with Twisted/Klein/stellarouter (default: .venv of this
#                              checkout, else of the main worktree)
#   OUT                        directory for logs and raw results (default: a new temp dir)
# The code under test is this checkout's (PYTHONPATH is set to the repository root).
# Only loopback addresses are used.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" = "--quick" ]; then
  D=3; ROUNDS=1; shift
elif [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "$0"; exit 0
fi
[ $# -eq 0 ] || { echo "unknown argument: $1 (only --quick)" >&2; exit 2; }
export D=${D:-10} ROUNDS=${ROUNDS:-3} WARMUP=${WARMUP:-2}
export WRK_CPU=${WRK_CPU-0}
SERVER_CPU=${SERVER_CPU:-1}
CONNS=${CONNS:-16 1}
if [ -z "${NGINX:-}" ]; then  # /usr/sbin may not be on a non-root PATH
  NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || echo nginx)
fi
HAVE_NGINX=0; command -v "$NGINX" >/dev/null && HAVE_NGINX=1
if [ "$HAVE_NGINX" = 1 ]; then VARIANTS=${VARIANTS:-plain like-gateway-frozen nginx}
else VARIANTS=${VARIANTS:-plain like-gateway-frozen}
fi
POST=${POST:-1}
case "$POST" in 0|1) ;; *) echo "POST must be 0 or 1, not $POST" >&2; exit 2;; esac
POST_VARIANTS=${POST_VARIANTS:-plain}
POST_BYTES=1024
AB_SCRIPT=${AB_SCRIPT:-/work/shared/perf/gateway_vs_direct.sh}
GW_PORT=8080; MS_PORT=5100
variant_port() { case "$1" in plain) echo 8081;; like-gateway) echo 8082;; like-gateway-frozen) echo 8083;;
                   nginx) echo 8084;; quiet) echo 8085;;
                   *) echo "unknown variant $1 (plain, like-gateway, like-gateway-frozen, nginx, quiet)" >&2; exit 2;;
                 esac; }
variant_args() { case "$1" in plain) ;; like-gateway) echo --like-gateway;;
                   like-gateway-frozen) echo --like-gateway --gc-freeze;; esac; }
[ "$POST" = 1 ] || POST_VARIANTS=
in_list() { [[ " $2 " == *" $1 "* ]]; }  # word list
without_nginx() { local v kept=(); for v in $1; do [ "$v" = nginx ] || kept+=("$v"); done; echo "${kept[*]}"; }
for v in $VARIANTS $POST_VARIANTS; do variant_port "$v" >/dev/null; done
if in_list nginx "$VARIANTS $POST_VARIANTS" && [ "$HAVE_NGINX" = 0 ]; then
  echo "!! nginx requested but $NGINX is not installed (apt-get install -y nginx): skipping the nginx variant" >&2
  VARIANTS=$(without_nginx "$VARIANTS"); POST_VARIANTS=$(without_nginx "$POST_VARIANTS")
fi
[ -n "$VARIANTS$POST_VARIANTS" ] || { echo "nothing to compare (VARIANTS and POST_VARIANTS empty)" >&2; exit 2; }
USE_NGINX=0; in_list nginx "$VARIANTS $POST_VARIANTS" && USE_NGINX=1
KLEIN_VARIANTS=  # the direct Klein processes to start, each once; nginx proxies to plain
for v in $([ "$USE_NGINX" = 1 ] && echo plain) $VARIANTS $POST_VARIANTS; do
  [ "$v" = nginx ] || [ "$v" = quiet ] || in_list "$v" "$KLEIN_VARIANTS" || KLEIN_VARIANTS="${KLEIN_VARIANTS:+$KLEIN_VARIANTS }$v"
done
DIRECT_PORTS=(); for v in $KLEIN_VARIANTS; do DIRECT_PORTS+=("$(variant_port "$v")"); done
PLAIN_PORT=$(variant_port plain)
NGINX_PORT=$(variant_port nginx)
FRONT_PORTS=("${DIRECT_PORTS[@]}")  # every direct port that must answer GET /ping
if [ "$USE_NGINX" = 1 ]; then FRONT_PORTS+=("$NGINX_PORT"); fi
USE_QUIET=0; in_list quiet "$VARIANTS $POST_VARIANTS" && USE_QUIET=1
QUIET_MS_PORT=5110
if [ "$USE_QUIET" = 1 ]; then FRONT_PORTS+=("$(variant_port quiet)"); fi

source "$ROOT/benchmarks/lib.sh"
[ -r "$AB_SCRIPT" ] || { echo "A/B script not found: $AB_SCRIPT (set AB_SCRIPT)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset missing (util-linux)" >&2; exit 1; }

OUT=${OUT:-$(mktemp -d /tmp/stella-bench.XXXXXX)}
mkdir -p "$OUT"; : >"$OUT/pids.txt"
for p in $GW_PORT $MS_PORT "${FRONT_PORTS[@]}" $([ "$USE_QUIET" = 1 ] && echo $QUIET_MS_PORT); do
  wait_port_free "$p"
done

start() {  # name cmd... : start pinned to SERVER_CPU, log to $OUT/name.log
  local name=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  echo "   $name: pid $!" >>"$OUT/pids.txt"
}
start gateway "$TWISTD" -n --pidfile= stella-gateway --config examples/billing/gateway.yaml
start billing "$TWISTD" -n --pidfile= stella-micro --config examples/billing/billing.yaml
if [ "$POST" = 1 ]; then
  start echo "$TWISTD" -n --pidfile= stella-micro --config benchmarks/echo.yaml
fi
if [ "$USE_QUIET" = 1 ]; then
  # The same pair with metrics and both access logs off (environment overrides of the same files).
  QUIET_OFF=(STELLAROUTER_ACCESS_LOG__ENABLED=false STELLAROUTER_METRICS__ENABLED=false
             STELLAROUTER_MICRO__ACCESS_LOG__ENABLED=false)
  start gateway-quiet env "${QUIET_OFF[@]}" \
    "STELLAROUTER_HTTP__LISTEN=tcp:$(variant_port quiet):interface=127.0.0.1" \
    "STELLAROUTER_TRANSPORTS__0__LISTEN=tcp:$QUIET_MS_PORT:interface=127.0.0.1" \
    STELLAROUTER_NODE__NODE_ID=gw-quiet STELLAROUTER_ADMIN__LISTEN=tcp:9902:interface=127.0.0.1 \
    "$TWISTD" -n --pidfile= stella-gateway --config examples/billing/gateway.yaml
  start billing-quiet env "${QUIET_OFF[@]}" \
    "STELLAROUTER_MICRO__ROUTERS__0__ADDRESS=tcp:host=127.0.0.1:port=$QUIET_MS_PORT" \
    STELLAROUTER_MICRO__INSTANCE_ID=billing-quiet \
    "$TWISTD" -n --pidfile= stella-micro --config examples/billing/billing.yaml
fi
for v in $KLEIN_VARIANTS; do
  # shellcheck disable=SC2046
  start "direct-$v" "$PY" benchmarks/direct_klein.py --port "$(variant_port "$v")" $(variant_args "$v")
done
if [ "$USE_NGINX" = 1 ]; then
  # nginx -> plain Klein, everything it writes under $OUT.  Running as root, the worker must be root
  # too: nginx's default user could not enter the mktemp directory (mode 0700) for temp files.
  mkdir -p "$OUT/nginx"
  {
    if [ "$(id -u)" = 0 ]; then echo "user root;"; fi
    cat <<NGINX_CONF
worker_processes 1;
daemon off;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/client_body;
  proxy_temp_path $OUT/nginx/proxy;
  fastcgi_temp_path $OUT/nginx/fastcgi;
  uwsgi_temp_path $OUT/nginx/uwsgi;
  scgi_temp_path $OUT/nginx/scgi;
  upstream k { server 127.0.0.1:$PLAIN_PORT; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://k;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX_CONF
  } >"$OUT/nginx.conf"
  NGINX_ARGS=(-p "$OUT/nginx/" -e "$OUT/nginx-error.log" -c "$OUT/nginx.conf")
  "$NGINX" -t -q "${NGINX_ARGS[@]}" || { echo "!! nginx rejects $OUT/nginx.conf" >&2; exit 1; }
  start nginx "$NGINX" "${NGINX_ARGS[@]}"  # the master; its worker inherits the CPU pinning
fi

echo_ok() {  # url: does POST url answer its body?
  local probe=stella-echo-probe
  [ "$(curl -fs --max-time 1 -X POST -H 'Content-Type: application/octet-stream' --data-binary @- "$1" \
         <<<"$probe" 2>/dev/null)" = "$probe" ]
}
all_ready() {
  local url
  for url in "localhost:$GW_PORT" "${FRONT_PORTS[@]/#/127.0.0.1:}"; do
    [ "$(curl -fs --max-time 1 "$url/ping" 2>/dev/null)" = pong ] || return 1
  done
  if [ "$POST" = 1 ]; then
    echo_ok "http://127.0.0.1:$GW_PORT/echo" || return 1
    for v in $POST_VARIANTS; do echo_ok "http://127.0.0.1:$(variant_port "$v")/echo" || return 1; done
  fi
}
echo "== waiting for the servers (logs in $OUT)"
ready=0
for _ in $(seq 1 150); do
  all_ready && { ready=1; break; }
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "!! a server exited early; logs:" >&2; tail -n 20 "$OUT"/*.log >&2; exit 1; }
  done
  sleep 0.2
done
[ "$ready" = 1 ] || { echo "!! servers not ready after 30 s; logs:" >&2; tail -n 20 "$OUT"/*.log >&2; exit 1; }

echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "== $("$PY" -c 'import sys, twisted, klein; print("Python %s, Twisted %s, Klein %s" % (sys.version.split()[0], twisted.__version__, klein.__version__))')"
echo "== code: $ROOT @ $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
echo "== servers on CPU $SERVER_CPU, wrk on CPU ${WRK_CPU:-unpinned}:"; cat "$OUT/pids.txt"
echo "== D=$D ROUNDS=$ROUNDS WARMUP=$WARMUP CONNS=\"$CONNS\" VARIANTS=\"$VARIANTS\" POST=$POST POST_VARIANTS=\"$POST_VARIANTS\""

# Interference check: CPU time spent on the server core by anything but our servers (other
# processes, this machine's other work) during each A/B.  A few percent is normal.
TCK=$(getconf CLK_TCK)
cpu_snapshot() {  # -> non-idle jiffies of the server core, our servers' jiffies, non-idle of wrk's core
  local busy ours=0 p wrkcore
  busy=$(awk -v c="cpu$SERVER_CPU" '$1 == c {print $2+$3+$4+$7+$8+$9}' /proc/stat)
  wrkcore=$(awk -v c="cpu${WRK_CPU:-none}" '$1 == c {print $2+$3+$4+$7+$8+$9}' /proc/stat)
  for p in $(with_children "${PIDS[@]}"); do
    ours=$((ours + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$busy $ours ${wrkcore:-0}"
}

summaries=()
ab() {  # c name label gateway_url direct_url body_bytes: one A/B at C=c, its interference check,
         # a summary line
  local c=$1 name=$2 label=$3 gw=$4 direct=$5 body=$6 busy0 ours0 wc0 busy1 ours1 wc1 t0 t1 other wrkcore p
  echo
  echo "== C=$c: $label"
  read -r busy0 ours0 wc0 < <(cpu_snapshot); t0=$(date +%s)
  C=$c BODY=$body bash "$AB_SCRIPT" "$gw" "$direct" | tee "$OUT/ab-c$c-$name.txt"
  read -r busy1 ours1 wc1 < <(cpu_snapshot); t1=$(date +%s)
  other=$(awk -v b=$((busy1 - busy0)) -v o=$((ours1 - ours0)) -v t="$TCK" -v w=$((t1 - t0)) \
    'BEGIN { x = (b - o) / t; printf "%.1f s of %d s (%.1f %%; core non-idle %.1f s, our servers %.1f s)", x, w, (w > 0 ? 100 * x / w : 0), b / t, o / t }')
  wrkcore=$(awk -v x=$((wc1 - wc0)) -v t="$TCK" 'BEGIN { printf "%.1f s", x / t }')
  # (wrk itself keeps its core about 10 % busy at C=16; far more means something else ran there
  # and starved it: both sides then drop in bursts, rounds of ~0.65x with p99 ~8 ms.)
  echo "CPU $SERVER_CPU time used by other processes during this A/B: $other; CPU ${WRK_CPU:-?} (wrk's) non-idle $wrkcore of $((t1 - t0)) s" | tee -a "$OUT/ab-c$c-$name.txt"
  summaries+=("C=$c $label: $(grep '^SUMMARY' "$OUT/ab-c$c-$name.txt" || echo 'SUMMARY missing') | other load on CPU $SERVER_CPU: $other; CPU ${WRK_CPU:-?} (wrk's) non-idle $wrkcore of $((t1 - t0)) s")
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "!! a server died during the run; logs in $OUT" >&2; exit 1; }
  done
}
for c in $CONNS; do
  for v in $VARIANTS; do
    case "$v" in
      nginx) label="GET /ping, gateway vs nginx -> Klein (plain) [target >= 1.3x]";;
      plain) label="GET /ping, gateway vs direct Klein (plain) [target >= 1.0x]";;
      quiet) label="GET /ping, gateway vs gateway with metrics and access logs off [target >= 0.9x]";;
      *)     label="GET /ping, gateway vs direct Klein ($v)";;
    esac
    ab "$c" "get-$v" "$label" "http://127.0.0.1:$GW_PORT/ping" "http://127.0.0.1:$(variant_port "$v")/ping" 0
  done
  for v in $POST_VARIANTS; do
    label="POST /echo ${POST_BYTES} B body echoed, gateway vs"
    case "$v" in
      nginx) label="$label nginx -> Klein (plain)";;
      plain) label="$label direct Klein (plain) [target >= 0.9x]";;
      quiet) label="$label gateway with metrics and access logs off";;
      *)     label="$label direct Klein ($v)";;
    esac
    ab "$c" "post-$v" "$label" "http://127.0.0.1:$GW_PORT/echo" "http://127.0.0.1:$(variant_port "$v")/echo" "$POST_BYTES"
  done
done

echo
echo "== SUMMARY (raw results and server logs in $OUT)"
printf '%s\n' "${summaries[@]}"
