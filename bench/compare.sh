#!/usr/bin/env bash
# Peers (Redis Streams, NATS JetStream, RabbitMQ) and krocket's matching modes, 3 rounds, medians and
# verdicts written to docs/performance.md. Arguments go to `krocket bench compare` (see --help), e.g.
#
#   bench/compare.sh --quick --rounds 1          # smoke run, a few minutes
#   bench/compare.sh                             # full: N=200000, 45 s budget per run, 3 rounds
#   bench/compare.sh --n 100000 --budget 20 --results /tmp/compare.jsonl
#
# Environment: KROCKET_PEERS_SCRIPT = the peer kit's run.sh (default: ../shared/bench/peers/run.sh next to
# the repository); PYTHON = the interpreter with krocket installed (default python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=${KROCKET_PEERS_SCRIPT:-$ROOT/../shared/bench/peers/run.sh}
cd "$ROOT"
exec "${PYTHON:-python3}" -m krocket.cli.main bench compare --peers-script "$PEERS" "$@"
