#!/usr/bin/env bash
# Run the whole test suite: creates .venv if needed, installs the package with its test
# extras, makes sure RabbitMQ and PostgreSQL answer, then runs trial and prints
# "trial: N passed, N failed".
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

ensure_postgresql() {
  # The database the Ledger example's tests use: 127.0.0.1:5432, role postgres, trust
  # authentication from 127.0.0.1 (the example creates its database and tables itself).
  if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "== PostgreSQL is not installed; installing it"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
      || { echo "!! could not install postgresql" >&2; return 1; }
    # A fresh Debian cluster asks for a password on TCP: let the tests' role in from loopback.
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      grep -q "^host all postgres 127.0.0.1/32 trust" "$hba" \
        || sed -i "1i host all postgres 127.0.0.1/32 trust" "$hba"
    done
  fi
  echo "== starting PostgreSQL"
  local version cluster
  while read -r version cluster _; do
    # Running already (apt-get's install may start it): reload, for the pg_hba.conf line above.
    pg_ctlcluster "$version" "$cluster" start 2>/dev/null \
      || pg_ctlcluster "$version" "$cluster" reload || true
  done < <(pg_lsclusters --no-header)
  local _try
  for _try in $(seq 60); do
    if pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
    sleep 1
  done
  echo "!! PostgreSQL did not answer on 127.0.0.1:5432 within 60 s" >&2
  return 1
}

ensure_chromium() {
  # The headless browser of the /docs test (tests/integration/test_openapi_browser.py):
  # Debian's chromium and its chromedriver.
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return 0; fi
  echo "== Chromium is not installed; installing chromium and chromium-driver"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
     chromium-driver) || { echo "!! could not install chromium" >&2; return 1; }
}

ensure_venv
ensure_chromium || echo "!! continuing without Chromium: the /docs browser test will fail"
ensure_rabbitmq || echo "!! continuing without RabbitMQ: no test needs it yet"
ensure_postgresql || echo "!! continuing without PostgreSQL: the Ledger example's tests will fail"
exec "$VENV/bin/python" scripts/run_tests.py "$@"
