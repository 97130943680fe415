#!/usr/bin/env bash
# Sets up a virtual environment and runs a local cluster: `krocket local up` with any extra flags.
# krocket is installed (editable) only when the venv is new or pyproject.toml changed since the last install:
# the hash of pyproject.toml is kept in "$VENV/.krocket-install-stamp".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KROCKET_VENV:-.venv}"
STAMP="$VENV/.krocket-install-stamp"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
WANT="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' pyproject.toml)"
if [ ! -x "$VENV/bin/krocket" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "local-up.sh: installing krocket into $VENV" >&2
  "$VENV/bin/python" -m pip install -q -e . >&2
  echo "$WANT" > "$STAMP"
fi
exec "$VENV/bin/krocket" local up "$@"
