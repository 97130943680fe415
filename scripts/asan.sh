#!/usr/bin/env bash
# Runs the C fast path's tests and a bounded fuzz run under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds krocket.broker.fastpath._cserve with -fsanitize=address,undefined into a temporary folder (the in-tree
# module is left alone), puts that folder first on the package's path, and runs, with LD_PRELOAD=libasan,
# PYTHONMALLOC=malloc_debug (so ASan sees every Python allocation) and python -X dev:
#   - tests/unit/broker/test_fastpath_c.py (C against the Python twin, malformed input, errors, refcounts);
#   - tests/fuzz/fastpath_target.py --driver random (C against the twin on mutated frames).
# Any out-of-bounds access, use after free or undefined behaviour aborts the run.
#
# Needs gcc (or $CC) and its libasan. Without them it says so and exits 0, or 1 when $CI is set.
# Usage: scripts/asan.sh [--fuzz-runs N] [--fuzz-seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KROCKET_VENV:-.venv}"
PY="$VENV/bin/python"
FUZZ_RUNS=3000
FUZZ_SECONDS=60
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-runs) FUZZ_RUNS="$2"; shift 2 ;;
    --fuzz-seconds) FUZZ_SECONDS="$2"; shift 2 ;;
    *) echo "usage: $0 [--fuzz-runs N] [--fuzz-seconds S]" >&2; exit 2 ;;
  esac
done

missing() {
  echo "asan.sh: $1: the AddressSanitizer run of the C fast path is SKIPPED" >&2
  if [ -n "${CI:-}" ]; then
    echo "asan.sh: CI is set, so this is a failure (install gcc and libasan, e.g. apt-get install gcc libc6-dev)" >&2
    exit 1
  fi
  exit 0
}

[ -x "$PY" ] || PY="$(command -v python3)"
CC_CMD="${CC:-$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")')}"
CC_BIN="${CC_CMD%% *}"
command -v "$CC_BIN" >/dev/null 2>&1 || missing "no C compiler ($CC_BIN)"
LIBASAN="$($CC_BIN -print-file-name=libasan.so 2>/dev/null || true)"
case "$LIBASAN" in
  /*) [ -e "$LIBASAN" ] || missing "libasan not found ($LIBASAN)" ;;
  *) missing "$CC_BIN has no libasan (-print-file-name=libasan.so gave '$LIBASAN')" ;;
esac
LIBASAN="$(readlink -f "$LIBASAN")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/krocket-asan.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SUFFIX="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
echo "==> asan: building _cserve with -fsanitize=address,undefined ($CC_BIN, $LIBASAN)" >&2
"$PY" - "$WORK/_cserve$SUFFIX" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, ".")
import hatch_build

flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
failure = hatch_build.build_extension(Path(hatch_build.SOURCE), Path(sys.argv[1]), flags)
if failure:
    sys.exit(f"asan.sh: the sanitized build failed: {failure}")
EOF

# A pytest plugin / startup hook that serves krocket.broker.fastpath._cserve from $WORK.
cat > "$WORK/krocket_asan_hook.py" <<EOF
import krocket.broker.fastpath as fastpath

fastpath.__path__.insert(0, "$WORK")
from krocket.broker.fastpath import _cserve

assert _cserve.__file__.startswith("$WORK"), _cserve.__file__
EOF

export LD_PRELOAD="$LIBASAN"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc_debug
export KROCKET_FUZZ_EXACT_BUFFERS=1  # tests/fuzz/fastpath_target.py: buffers of exactly their size
export PYTHONPATH="$WORK:.${PYTHONPATH:+:$PYTHONPATH}"

echo "==> asan: tests/unit/broker/test_fastpath_c.py (python -X dev)" >&2
"$PY" -X dev -m pytest -q -p krocket_asan_hook -p no:cacheprovider tests/unit/broker/test_fastpath_c.py \
  -k "not wheel and not no_extensions" -W ignore::DeprecationWarning

echo "==> asan: fuzz, C against the Python twin ($FUZZ_RUNS inputs or ${FUZZ_SECONDS}s)" >&2
"$PY" -X dev -c "import krocket_asan_hook, sys; from tests.fuzz.fastpath_target import main; sys.exit(main(sys.argv[1:]))" \
  --driver random --runs "$FUZZ_RUNS" --seconds "$FUZZ_SECONDS" --seed "${KROCKET_FUZZ_SEED:-$RANDOM}"
echo "==> asan: clean" >&2
