#!/usr/bin/env bash
# instructions.sh - machine instructions per request of a hot_path.py setup, counted by valgrind.
#
#   bash benchmarks/instructions.sh gateway-get-c16          # this checkout
#   bash benchmarks/instructions.sh sdk-get /path/to/other/checkout
#
# Wall-clock and CPU times move by +-5-10 % on a shared machine; instruction counts do not
# (valgrind --tool=callgrind counts them whatever else runs), so this is the A/B tool for one
# hot-path change: count before, count after, same setup.  It runs `hot_path.py --run SETUP`
# (warm-up, gc.freeze(), then N requests) for N=200 and N=2200, three times each, and prints
# (median(2200) - median(200)) / 2000: the start-up and warm-up cancel out.  Takes about a
# minute (six valgrind runs, two at a time).  Needs valgrind (apt-get install -y valgrind).
set -euo pipefail
SETUP=${1:?usage: instructions.sh SETUP [CHECKOUT]}
ROOT=$(cd "${2:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }
export PYTHONHASHSEED=0
OUT=$(mktemp -d /tmp/stella-instr.XXXXXX)
count() {  # n run: instructions of one run of n requests
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$ROOT/benchmarks/hot_path.py" \
    --run "$SETUP" -n "$1" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' > "$OUT/$1.$2"
}
for i in 1 2 3; do count 200 "$i" & count 2200 "$i" & wait; done
median() { sort -n "$OUT"/"$1".* | sed -n 2p; }
small=$(median 200); large=$(median 2200)
echo "$SETUP: $(( (large - small) / 2000 )) instructions per request ($ROOT)"
rm -r "$OUT"
