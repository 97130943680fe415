"""The idle spin (idleSpinMicros) end to end: a broker started with it serves sends and pulls, its flag and the
bench's are validated, and the bench's JSON line reports the value. Speed is never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from krocket.client import Message, Producer, PullConsumer, SendStatus

from tests.support.cluster import create_topic, start_cluster

KROCKET = [sys.executable, "-m", "krocket.cli.main"]


def krocket(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KROCKET, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


async def test_a_broker_with_the_idle_spin_serves_sends_and_pulls(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, extra_broker_args=["--idle-spin-micros", "200"])
    try:
        broker = cluster.brokers[0]
        assert "idle spin on: the event loop polls without blocking for up to 200 us" in broker.log_path.read_text()
        await create_topic(cluster, "SpinTopic", queues=2)
        async with Producer("spin_pg", cluster.namesrv_addr) as producer:
            sent = [await producer.send(Message("SpinTopic", f"spin {i}".encode())) for i in range(40)]
        assert {s.status for s in sent} == {SendStatus.SEND_OK}
        got: list[bytes] = []
        async with PullConsumer("spin_cg", cluster.namesrv_addr) as consumer:
            for queue in sorted({s.queue for s in sent}):
                result = await consumer.pull(queue, "*", 0, 64)
                got += [m.body for m in result.messages]
        assert sorted(got) == sorted(f"spin {i}".encode() for i in range(40))
    finally:
        cluster.stop()
    assert broker.proc is not None and broker.proc.returncode == 0, "SIGTERM still stops it cleanly"


def test_the_idle_spin_is_read_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("idleSpinMicros: -1\n")
    result = krocket("broker", "--config", str(cfg), "--store-dir", str(tmp_path / "store"))
    assert result.returncode == 2
    assert "idleSpinMicros must be between 0 (off) and 1000000 microseconds, got -1" in result.stderr
    cfg.write_text("idleSpinMicros: often\n")
    result = krocket("broker", "--config", str(cfg), "--store-dir", str(tmp_path / "store"))
    assert result.returncode == 2 and "'idleSpinMicros' must be of type int" in result.stderr


@pytest.mark.parametrize(
    "value, message",
    [
        ("-1", "argument --idle-spin-micros: must be between 0 (off) and 1000000 microseconds, got -1"),
        ("2000000", "argument --idle-spin-micros: must be between 0 (off) and 1000000 microseconds, got 2000000"),
        ("1.5", "argument --idle-spin-micros: must be a whole number of microseconds, got '1.5'"),
        ("lots", "argument --idle-spin-micros: must be a whole number of microseconds, got 'lots'"),
    ],
)
@pytest.mark.parametrize("verb", [["broker"], ["bench", "produce"]])
def test_bad_spin_values_exit_2_with_a_clear_message(verb: list[str], value: str, message: str) -> None:
    result = krocket(*verb, "--idle-spin-micros", value)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("verb", [["broker"], ["bench", "produce", "--local"]])
def test_the_spin_is_refused_under_uvloop(verb: list[str], tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    result = krocket("--loop", "uvloop", *verb, "--idle-spin-micros", "50", env={"KROCKET_STORE_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "needs the asyncio event loop: uvloop has no hook to poll before it blocks" in result.stderr


SHORT = ["--n", "2000", "--duration", "1", "--consume-budget", "20", "--json", "-q", "--local"]


def _bench_line(*args: str) -> dict:
    result = krocket("--log-level", "WARNING", "bench", "produce", "--mode", "seq", *args, *SHORT, timeout=90)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_the_bench_line_reports_the_spin_of_its_local_broker() -> None:
    r = _bench_line("--idle-spin-micros", "100")
    assert r["idle_spin_micros"] == 100 and r["cluster"] == "local"
    assert r["produce"]["msgs"] > 0 and r["consume"]["msgs"] == r["produce"]["msgs"]


def test_the_bench_line_reports_no_spin_by_default() -> None:
    r = _bench_line()
    assert r["idle_spin_micros"] == 0 and r["produce"]["msgs"] > 0
