#!/usr/bin/env bash
# Peers (Redis Streams, NATS JetStream, RabbitMQ) and krocket's matching modes, 3 rounds, medians and
# verdicts written to docs/performance.md. Arguments go to `krocket bench compare` (see --help), e.g.
#
#   bench/compare.sh --quick --rounds 1          # smoke run, a few minutes
#   bench/compare.sh                             # full: N=200000, 45 s budget per run, 3 rounds
#   bench/compare.sh --n 100000 --budget 20 --results /tmp/compare.jsonl
#
# Environment: KROCKET_PEERS_SCRIPT = the peer kit's run.sh (a separate checkout, not part of this
# repository; or pass --peers-script, or --peers none for krocket's rows only); PYTHON = the interpreter
# with krocket installed (default .venv/bin/python, else python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" -m krocket.cli.main bench compare "$@"
