# Shared by scripts/test.sh and scripts/demo.sh: a virtualenv with the package installed.
# (sourced, not run)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${STELLA_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "== installing stellarouter with its test extras into $VENV"
  # Non-editable on purpose: twistd finds the plugins in site-packages/twisted/plugins.
  (cd "$ROOT" && "$VENV/bin/pip" install --quiet --disable-pip-version-check ".[test]")
  rm -rf "$ROOT/build"
}
