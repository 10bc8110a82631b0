#!/usr/bin/env bash
# Run the whole test suite: creates .venv if needed, installs the package with its test
# extras, makes sure RabbitMQ answers, then runs trial and prints "trial: N passed, N failed".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

ensure_rabbitmq() {
  # The broker the RabbitMQ transport's tests use: 127.0.0.1:5672, guest/guest.
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then return 0; fi
  if ! command -v rabbitmq-server >/dev/null; then
    echo "== RabbitMQ is not installed; installing it"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server) \
      || { echo "!! could not install rabbitmq-server" >&2; return 1; }
  fi
  echo "== starting RabbitMQ"
  rabbitmq-server -detached || true
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 \
    || { echo "!! RabbitMQ did not start within 120 s" >&2; return 1; }
}

ensure_venv
ensure_rabbitmq || echo "!! continuing without RabbitMQ: no test needs it yet"
exec "$VENV/bin/python" scripts/run_tests.py "$@"
