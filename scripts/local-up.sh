#!/usr/bin/env bash
# Sets up a virtual environment (once) and runs a local cluster: `krocket local up` with any extra flags.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KROCKET_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -e . >&2
exec "$VENV/bin/krocket" local up "$@"
