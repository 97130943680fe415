"""The broker's resident memory does not grow with the backlog (run with ``./scripts/test.sh -m slow``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from krocket.client import Message, Producer

from tests.support.cluster import create_topic, start_cluster

BACKLOG = 1_000_000
BATCH = 500


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_broker_rss_stays_flat_with_a_million_message_backlog(tmp_path: Path, capsys):
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1)
    broker = cluster.brokers[0]
    try:
        asyncio.run(create_topic(cluster, "Backlog", 4))

        async def fill() -> None:
            async with Producer("backlog-producer", cluster.namesrv_addr) as producer:
                await producer.send(Message("Backlog", b"warm-up"))
                empty[0] = _rss_mib(broker.pid)
                body = b"m" * 100
                sem = asyncio.Semaphore(4)

                async def one() -> None:
                    async with sem:
                        await producer.send_batch([Message("Backlog", body) for _ in range(BATCH)])

                for _ in range(BACKLOG // (BATCH * 40)):
                    await asyncio.gather(*(one() for _i in range(40)))

        empty = [0.0]
        asyncio.run(fill())
        full = _rss_mib(broker.pid)
        stored = broker.http_json("/api/v1/topics/Backlog")["queues"]
        assert sum(q["maxOffset"] for q in stored) >= BACKLOG
        with capsys.disabled():
            print(f"\nbroker RSS: {empty[0]:.1f} MiB empty, {full:.1f} MiB with {BACKLOG:,} messages stored")
        assert full <= empty[0] * 1.10 + 4, (empty[0], full)
    finally:
        cluster.stop()
