"""`krocket bench grpc --local` end to end: the official RocketMQ 5.x Python SDK (its own venv, see
tests/support/rmq5.py) and krocket's grpc.aio stubs send to a local broker's gRPC port, then receive and ack every
message. Speed is never asserted; only that every client's run measured something and lost nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.support.rmq5 import sdk_python


def test_bench_grpc_local_runs_every_client_and_receives_every_message() -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "--log-level", "WARNING", "bench", "grpc", "--local", "--n", "200",
         "--stub-n", "500", "--sdk-python", str(sdk_python()), "--json", "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    runs = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["mode"] for r in runs] == ["grpc-sdk-seq", "grpc-sdk-threads8", "grpc-sdk-async", "grpc-stubs-window"]
    for r in runs:
        sent = r["produce"]["msgs"]
        assert r["system"] == "krocket" and r["verb"] == "grpc" and r["cluster"] == "local", r
        assert sent == (500 if r["client"] == "stubs-window" else 200), r
        assert r["produce"]["msgs_per_s"] > 0 and r["produce"]["p99_us"] >= r["produce"]["p50_us"] > 0, r
        assert r["consume"]["msgs_per_s"] > 0, r
        assert r["missing"] == 0 and r["consume"]["msgs"] == sent + 20, "every message (and warm-up) received, acked"
        assert "send_errors" not in r and "receive_errors" not in r, r
        assert r["cpu"]["produce"]["client_us_per_msg"] > 0 and r["cpu"]["produce"]["broker_us_per_msg"] is not None
    assert runs[0]["sdk"] == "rocketmq-python-client 5.1.2" and runs[-1]["window"] == 256
    assert time.monotonic() - t0 < 60
