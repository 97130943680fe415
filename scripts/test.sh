#!/usr/bin/env bash
# Sets up a virtual environment with the dev extras and runs the whole test suite.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -k broker).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KROCKET_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV" >&2
  python3 -m venv "$VENV"
fi
echo "==> installing krocket with the dev extras" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[dev]'
echo "==> ruff" >&2
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "==> mypy" >&2
"$VENV/bin/mypy"
echo "==> pytest" >&2
set +e
"$VENV/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
