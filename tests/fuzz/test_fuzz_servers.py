"""Mutated frames against a real name server and broker: every frame answered or its connection closed
cleanly, the processes stay up and serve normal requests afterwards, and the log stays small."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import ConnectionPool, RemotingCommand

from .driver import FuzzStats, fuzz_server
from .mutations import broker_frames, namesrv_frames
from tests.support.cluster import LocalCluster, start_cluster

LOG_LIMIT_BYTES = 50 * 1024


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("fuzz") / "cluster", namesrvs=1, groups=1)
    try:
        yield cluster
    finally:
        cluster.stop()


async def _fuzz(cluster: LocalCluster, role: str, frames: int, seed: int) -> tuple[FuzzStats, int, str]:
    child = cluster.namesrvs[0] if role == "namesrv" else cluster.brokers[0]
    bases = namesrv_frames() if role == "namesrv" else broker_frames()
    log_path = Path(child.log_path)
    before = log_path.stat().st_size
    stats = await fuzz_server("127.0.0.1", child.port, bases, frames, connections=4, seed=seed)
    await asyncio.sleep(0.2)  # let the last log lines land
    text = log_path.read_bytes()[before:].decode(errors="replace")
    assert child.is_running(), child.tail_log()
    pool = ConnectionPool()  # still serving ordinary requests
    try:
        code = RequestCode.GET_BROKER_CLUSTER_INFO if role == "namesrv" else RequestCode.GET_BROKER_RUNTIME_INFO
        reply = await pool.request(child.addr, RemotingCommand(code), 5.0)
        assert reply.code == ResponseCode.SUCCESS
    finally:
        await pool.close()
    return stats, len(text), text


def _check(role: str, stats: FuzzStats, log_bytes: int, log_text: str) -> None:
    """No failure, no traceback; warnings and errors (what hostile frames cause) under 50 KB for the run;
    the whole log (with the INFO lines of requests that were valid, e.g. registrations) under 50 KB per
    2,000 frames."""
    complaints = sum(len(line) + 1 for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line)
    print(
        f"\n{role}: {stats.frames} frames fuzzed in {stats.seconds:.1f}s, {stats.answered} answered, "
        f"{stats.closed_by_server} connections closed, log grew {log_bytes} bytes ({complaints} of warnings)"
    )
    assert not stats.failures, stats.failures[:5]
    assert stats.answered > stats.frames // 10
    assert "Traceback" not in log_text, log_text[-3000:]
    assert complaints < LOG_LIMIT_BYTES, log_text[-3000:]
    assert log_bytes < LOG_LIMIT_BYTES * max(1, stats.frames // 2000), log_text[-3000:]


@pytest.mark.parametrize("role", ["namesrv", "broker"])
async def test_fuzzed_frames_are_answered_or_closed(fuzz_cluster: LocalCluster, role: str) -> None:
    stats, log_bytes, log_text = await _fuzz(fuzz_cluster, role, frames=2000, seed=12)
    _check(role, stats, log_bytes, log_text)


@pytest.mark.fuzz
@pytest.mark.parametrize("role", ["namesrv", "broker"])
async def test_long_fuzz_run(fuzz_cluster: LocalCluster, role: str) -> None:
    stats, log_bytes, log_text = await _fuzz(fuzz_cluster, role, frames=40_000, seed=2026)
    _check(role, stats, log_bytes, log_text)
