#!/usr/bin/env bash
# Packaging smoke test: install the package WITHOUT extras into a fresh virtualenv, outside the
# source tree, and start both twistd plugins from it: a gateway on free ports and a microservice
# that registers with it and answers one request. Catches a dependency only the test extras
# bring (pyOpenSSL and service-identity used to). Run by .ci/run; ~30 s.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for_line() {
  # wait_for_line FILE REGEX PID: until FILE has a line matching REGEX (at most 30 s)
  for _ in $(seq 1 300); do
    if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "!! the process exited; its log:" >&2; tail -20 "$1" >&2; return 1; }
    sleep 0.1
  done
  echo "!! timed out waiting for /$2/ in $1:" >&2; tail -20 "$1" >&2; return 1
}

echo "== check_install: pip install . (no extras) into a fresh virtualenv"
"$PYTHON" -m venv "$WORK/venv"
mkdir "$WORK/src"
tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='./_trial_temp*' \
    --exclude=./.demo --exclude='*.egg-info' -cf - . | tar -C "$WORK/src" -xf -
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "$WORK/src"
# The Swagger UI files /docs serves are package data (a missing glob in setup.py loses them).
"$WORK/venv/bin/python" -c "
from importlib.resources import files
for name in ('swagger-ui-bundle.js', 'swagger-ui.css'):
    assert (files('stellarouter.gateway') / 'swagger_ui' / name).is_file(), name
" || { echo "!! the installed package lacks the Swagger UI files" >&2; exit 1; }
cd "$WORK"
cat > gateway.yaml <<'YAML'
node: {node_id: gw-install-check, region: eu1}
http: {listen: "tcp:0:interface=127.0.0.1"}
admin: {listen: "tcp:0:interface=127.0.0.1"}
transports: [{type: tcp, listen: "tcp:0:interface=127.0.0.1"}]
YAML
cat > smoke_app.py <<'PY'
from stellarouter.microservice import Microservice, RawResponse

service = Microservice("smoke", "1.0.0")


@service.endpoint("GET", "/smoke")
def smoke(ctx):
    return RawResponse.text("installed")
PY
"$WORK/venv/bin/twistd" -n --pidfile= --logfile=gateway.log stella-gateway --config gateway.yaml &
PIDS+=($!)
wait_for_line gateway.log 'ready: ' "${PIDS[0]}"
HTTP=$(sed -n 's/.*ready: {"http": "\([^"]*\)".*/\1/p' gateway.log)
PORT=$(sed -n 's/.*"transports": \["tcp:[0-9.]*:\([0-9]*\)".*/\1/p' gateway.log)
cat > smoke.yaml <<YAML
app: smoke_app:service
region: eu1
instance_id: smoke-1
routers: [{transport: tcp, address: "tcp:host=127.0.0.1:port=$PORT"}]
YAML
"$WORK/venv/bin/twistd" -n --pidfile= --logfile=smoke.log stella-micro --config smoke.yaml &
PIDS+=($!)
wait_for_line gateway.log 'registered instance smoke-1 ' "${PIDS[1]}"
BODY=$(curl -fsS "http://$HTTP/smoke")
[ "$BODY" = installed ] || { echo "!! GET /smoke answered '$BODY'" >&2; exit 1; }
echo "== check_install: both plugins start from a plain 'pip install .' (GET /smoke: $BODY)"
