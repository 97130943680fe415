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
# The RocketMQ 5.x Python SDK for the gRPC conformance tests lives in its own environment: its package `rocketmq`
# is also the 4.x C++ client's, and its generated protocol modules clash with the broker's in one process.
RMQ5_VENV="${KROCKET_RMQ5_VENV:-.venv-rmq5}"
RMQ5_SDK="rocketmq-python-client==5.1.2"
if ! "$RMQ5_VENV/bin/python" -c "import rocketmq.v5" 2>/dev/null; then
  echo "==> creating $RMQ5_VENV with $RMQ5_SDK (the 5.x gRPC conformance client)" >&2
  python3 -m venv "$RMQ5_VENV"
  "$RMQ5_VENV/bin/python" -m pip install -q "$RMQ5_SDK"
fi
echo "==> ruff" >&2
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "==> mypy" >&2
"$VENV/bin/mypy"
run_pytest() {
  set +e
  "$VENV/bin/python" -m pytest -q "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
  fi
  [ "$rc" -eq 0 ] || exit "$rc"
}
if [ "$#" -gt 0 ]; then
  echo "==> pytest $*" >&2
  run_pytest "$@"
else
  # The operator layer (kmock's emulated API server, kopf in threads: mostly waiting on timers) runs in three
  # worker processes (pytest-xdist), about 80 s instead of 200 s on 2 cores; every other layer runs serially, as
  # its real broker and name server processes are timed against one another.
  echo "==> pytest (every layer but the operator's)" >&2
  run_pytest --ignore=tests/operator
  echo "==> pytest tests/operator (3 workers)" >&2
  run_pytest -n 3 tests/operator
fi
# The whole run (no pytest arguments) goes on with the broker's send fast path checked both ways.
[ "$#" -eq 0 ] || exit 0
# The C fast path (krocket.broker.fastpath._cserve), when it is built: its tests and a bounded fuzz run under
# AddressSanitizer, then a bounded coverage-guided fuzz run (atheris/libFuzzer; the mutation driver without it),
# C against the Python twin. About 1.5 minutes on 2 cores. KROCKET_SKIP_C_CHECKS=1 skips them.
if [ "${KROCKET_SKIP_C_CHECKS:-0}" != "1" ]; then
  if "$VENV/bin/python" -c "import krocket.broker.fastpath._cserve" 2>/dev/null; then
    echo "==> C fast path under AddressSanitizer" >&2
    ./scripts/asan.sh --fuzz-runs 1500 --fuzz-seconds 40
    echo "==> C fast path fuzz (C against the Python twin)" >&2
    "$VENV/bin/python" -m tests.fuzz.fastpath_target --runs 20000 --seconds 40
  else
    echo "==> the C fast path is not built (no compiler?): its ASan and fuzz runs are SKIPPED" >&2
    [ -z "${CI:-}" ] || exit 1
  fi
fi
# The suite above ran the broker on the C fast path where it is built; the layers that matter most for it run
# again on its Python twin (what an install without a compiler gets): the C++ client's send conformance, recovery
# of what it wrote, the send door and parked acks (the golden-bytes unit test runs the twin in the suite).
echo "==> the broker on the fast path's Python twin (KROCKET_NO_EXTENSIONS=1)" >&2
KROCKET_NO_EXTENSIONS=1 "$VENV/bin/python" -m pytest -q tests/conformance/test_fast_path_cpp_client.py \
  tests/conformance/test_rocketmq_cpp_client.py tests/faults/test_corruption.py \
  tests/integration/test_fast_path.py tests/integration/test_send_door.py tests/integration/test_parked_acks.py
