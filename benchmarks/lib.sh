# lib.sh - what the benchmark scripts share; sourced, not run:
#   ROOT=...; source "$ROOT/benchmarks/lib.sh"
#
# Sets STELLA_VENV (default: this checkout's .venv, or the main worktree's from a git worktree),
# TWISTD and PY, puts the checkout first on PYTHONPATH (the code measured is the checkout's),
# and gives:
#   PIDS+=(pid)          processes stopped on exit (and their children, e.g. nginx's worker)
#   wait_port_free PORT  wait up to 120 s for a port another run may hold; never kill its owner
# shellcheck shell=bash

if [ -z "${STELLA_VENV:-}" ]; then
  if [ -x "$ROOT/.venv/bin/twistd" ]; then
    STELLA_VENV=$ROOT/.venv
  else  # a git worktree: use the main checkout's virtualenv
    common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
    STELLA_VENV=${common%/.git}/.venv
  fi
fi
TWISTD=$STELLA_VENV/bin/twistd; PY=$STELLA_VENV/bin/python
[ -x "$TWISTD" ] || { echo "no twistd in $STELLA_VENV (set STELLA_VENV)" >&2; exit 1; }
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

PIDS=()
with_children() {  # pids...: them and their child processes
  local p
  for p in "$@"; do echo "$p"; pgrep -P "$p" || true; done
}
cleanup() {
  local p all
  [ "${#PIDS[@]}" -gt 0 ] || return 0
  mapfile -t all < <(with_children "${PIDS[@]}")
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${all[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_port_free() {
  local port=$1 i
  for i in $(seq 1 60); do
    port_busy "$port" || return 0
    [ "$i" = 1 ] && echo "== port $port is busy (not ours); waiting up to 120 s"
    sleep 2
  done
  echo "!! port $port still busy; giving up" >&2; exit 1
}
