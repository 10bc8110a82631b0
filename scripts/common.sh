# Shared by scripts/test.sh and scripts/demo.sh: a virtualenv with the package installed.
# (sourced, not run)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${STELLA_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

source_stamp() {
  # A hash of everything `pip install .` copies: reinstall only when it changed.
  (cd "$ROOT" && find setup.py README.md stellarouter twisted -type f \
     \( -name '*.py' -o -name '*.md' -o -name '*.typed' \) -not -path '*/__pycache__/*' \
     -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp; stamp=$(source_stamp)
  if [ -f "$VENV/.stellarouter-source" ] && [ "$(cat "$VENV/.stellarouter-source")" = "$stamp" ]; then
    echo "== stellarouter in $VENV is up to date with the source"
    return 0
  fi
  echo "== installing stellarouter with its test extras into $VENV"
  # Non-editable on purpose: twistd finds the plugins in site-packages/twisted/plugins.
  (cd "$ROOT" && "$VENV/bin/pip" install --quiet --disable-pip-version-check ".[test]")
  rm -rf "$ROOT/build"
  echo "$stamp" > "$VENV/.stellarouter-source"
}

shell_quote() {
  # The arguments as one line a shell reads back as the same arguments (for echoed commands).
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=" $arg"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${out# }"
}

port_holder() {
  # Who listens on TCP port $1 (pid and command), or nothing.
  local pids pid
  pids=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
  [ -n "$pids" ] || pids=$(lsof -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | sort -u)
  for pid in $pids; do
    echo "pid $pid ($(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-120))"
  done
}

check_ports_free() {
  # Fail, naming the process holding it, if any of the TCP ports given is already listened on.
  local port busy=0
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "!! port $port is already in use by $(port_holder "$port" | paste -sd';' - || true)" >&2
      busy=1
    fi
  done
  if [ "$busy" = 1 ]; then
    echo "!! stop that process (a demo still running?) and try again" >&2
    return 1
  fi
}

listen_ports() {
  # The TCP ports a gateway configuration listens on (tcp:/ssl: endpoint strings).
  grep -oE 'listen: *"?(tcp|ssl):[0-9]+' "$1" | grep -oE '[0-9]+$'
}
