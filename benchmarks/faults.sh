#!/usr/bin/env bash
# The fault suite (issue 24): real processes, a Python load generator (16
# keep-alive connections on loopback), one fault per scenario; prints a table of
# client errors, their kind and the time to recover.  Arguments go to
# benchmarks/faults.py (e.g. --stop-seconds 10 --scenarios kill9,sigstop).
# The rabbitmq scenario stops the shared broker's app for 5 s: leave it out with
# --scenarios kill9,sigstop,drain,gateway,udp,post when others need the broker.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benchmarks/lib.sh
source "$ROOT/benchmarks/lib.sh"
exec "$PY" "$ROOT/benchmarks/faults.py" "$@"
