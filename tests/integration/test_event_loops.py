"""The optional uvloop event loop (the 'fast' extra): servers and the client library run on it end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from krocket.client import Message, Producer, PullConsumer, SendStatus

from tests.support.cluster import start_cluster

uvloop = pytest.importorskip("uvloop")


async def _send_and_pull(namesrv: str, topic: str) -> list[bytes]:
    async with Producer("uvloop_pg", namesrv) as producer:
        sent = await producer.send(Message(topic, b"on uvloop"))
        assert sent.status is SendStatus.SEND_OK
    async with PullConsumer("uvloop_cg", namesrv) as consumer:
        result = await consumer.pull(sent.queue, "*", sent.queue_offset, 32)
        return [m.body for m in result.messages]


def test_servers_and_client_on_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Child processes take the loop from KROCKET_LOOP, as `krocket --loop uvloop local up` sets it. The broker
    # has to dial out (registration with the name server) and accept connections on uvloop's transports.
    monkeypatch.setenv("KROCKET_LOOP", "uvloop")
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1)
    try:
        for broker in cluster.brokers:
            assert "event loop uvloop" in broker.log_path.read_text()
        bodies = uvloop.run(_send_and_pull(cluster.namesrv_addr, "UvloopTopic"))
        assert bodies == [b"on uvloop"]
    finally:
        cluster.stop()
