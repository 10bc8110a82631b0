#!/usr/bin/env bash
# Set everything up and run the demo: the gateway and the Billing microservice over TCP on
# 127.0.0.1, then a few requests through the gateway. Keeps running until Ctrl-C when run
# in a terminal; pass --once (or run without a terminal) to stop after the requests.
# --tls: the same over mutual TLS (development certificates are created in .demo/certs).
# --amqp: the microservice connected through RabbitMQ on 127.0.0.1:5672 (guest/guest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
ONCE=0; [ -t 0 ] || ONCE=1
GATEWAY_CONFIG=examples/billing/gateway.yaml; BILLING_CONFIG=examples/billing/billing.yaml
for arg in "$@"; do
  case "$arg" in
    --once) ONCE=1 ;;
    --tls) GATEWAY_CONFIG=examples/billing/gateway-tls.yaml; BILLING_CONFIG=examples/billing/billing-tls.yaml ;;
    --amqp) GATEWAY_CONFIG=examples/billing/gateway-amqp.yaml; BILLING_CONFIG=examples/billing/billing-amqp.yaml ;;
    *) echo "usage: $0 [--once] [--tls|--amqp]" >&2; exit 2 ;;
  esac
done

check_ports_free $(listen_ports "$GATEWAY_CONFIG") 9901 || exit 1   # 9901: the admin listener
ensure_venv
mkdir -p .demo
if [ "$GATEWAY_CONFIG" = examples/billing/gateway-tls.yaml ] && [ ! -f .demo/certs/ca.pem ]; then
  "$VENV/bin/stellarouter" certs init .demo/certs --service billing
fi
TWISTD="$VENV/bin/twistd"
"$TWISTD" -n --pidfile= --logfile=.demo/gateway.log stella-gateway --config "$GATEWAY_CONFIG" &
GW=$!
"$TWISTD" -n --pidfile= --logfile=.demo/billing.log stella-micro --config "$BILLING_CONFIG" &
MS=$!
cleanup() { kill "$MS" "$GW" 2>/dev/null || true; wait "$MS" "$GW" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "== waiting for the gateway (logs in .demo/)"
for _ in $(seq 1 100); do
  if curl -fs localhost:9901/services 2>/dev/null | grep -q '"billing"'; then break; fi
  kill -0 "$GW" 2>/dev/null || { echo "!! the gateway exited; see .demo/gateway.log"; tail -20 .demo/gateway.log; exit 1; }
  kill -0 "$MS" 2>/dev/null || { echo "!! billing exited; see .demo/billing.log"; tail -20 .demo/billing.log; exit 1; }
  sleep 0.1
done

run() { echo; echo "\$ $(shell_quote "$@")"; "$@"; echo; }
run curl -si localhost:8080/ping
run curl -si -X POST localhost:8080/invoices -d '{"customer":"acme","amount_cents":1250}'
ID=$(curl -s -X POST localhost:8080/invoices -d '{"customer":"globex","amount_cents":990}' \
     | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
run curl -si "localhost:8080/invoices/$ID"
run curl -si localhost:8080/nope
run curl -si -X DELETE localhost:8080/ping
run curl -si localhost:8080/health
echo "== operations: the admin listener on 127.0.0.1:9901 (docs/router/operations.md)"
run "$VENV/bin/stellarouter" instances
run "$VENV/bin/stellarouter" routes
echo "== claims: DELETE /invoices/{id} needs scope=billing:write"
run curl -si -X DELETE "localhost:8080/invoices/$ID"
T=$("$VENV/bin/stellarouter" token --config "$GATEWAY_CONFIG" --claim scope=billing:read)
run curl -si -X DELETE -H "Authorization: Bearer $T" "localhost:8080/invoices/$ID"
T=$("$VENV/bin/stellarouter" token --config "$GATEWAY_CONFIG" --claim scope=billing:write)
run curl -si -X DELETE -H "Authorization: Bearer $T" "localhost:8080/invoices/$ID"

if [ "$ONCE" = 1 ]; then exit 0; fi
echo "== the demo is running: gateway on http://localhost:8080, Billing connected ($BILLING_CONFIG)."
echo "   Try the curl lines above; Ctrl-C stops both processes."
wait
