"""The broker's send fast path in real broker processes: which implementation runs (and the switches that choose
it), that sends take it, and that what it stores reads back as sent."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from krocket.client import Message, Producer, PullConsumer, PullStatus

from tests.support.cluster import LocalCluster, create_topic, start_cluster
from tests.support.metrics import metric_value


def _fast_sends(cluster: LocalCluster) -> float:
    return sum(metric_value(broker.http_port, "krocket_broker_fast_path_sends_total") for broker in cluster.brokers)


def _fast_path_line(cluster: LocalCluster) -> str:
    lines = [
        line
        for broker in cluster.brokers
        for line in broker.log_path.read_text(errors="replace").splitlines()
        if "send fast path:" in line
    ]
    assert len(lines) == len(cluster.brokers), lines
    return lines[0]


async def _round_trip(cluster: LocalCluster, topic: str, count: int) -> None:
    """Send ``count`` messages (one at a time and many in flight), then read every one back as sent."""
    producer = Producer(f"pg_{uuid.uuid4().hex[:6]}", cluster.namesrv_addr)
    await producer.start()
    sent: dict[str, Message] = {}
    try:
        for i in range(count // 2):
            msg = Message(topic, f"one-{i}".encode() * (i % 40 + 1), tags="TagA", keys=[f"k{i}", "shared"])
            msg.properties["user-é"] = f'v{i} " \\'
            sent[(await producer.send(msg)).msg_id] = msg
        msgs = [Message(topic, f"many-{i}".encode(), tags="TagB") for i in range(count - count // 2)]
        results = await asyncio.gather(*(producer.send(m) for m in msgs))
        sent.update({r.msg_id: m for r, m in zip(results, msgs, strict=True)})
    finally:
        await producer.shutdown()
    consumer = PullConsumer(f"cg_{uuid.uuid4().hex[:6]}", cluster.namesrv_addr)
    await consumer.start()
    got = {}
    try:
        for queue in await consumer.fetch_queues(topic):
            offset = 0
            while True:
                result = await consumer.pull(queue, "*", offset, 32)
                if result.status != PullStatus.FOUND:
                    break
                got.update({m.msg_id: m for m in result.messages})
                offset = result.next_begin_offset
    finally:
        await consumer.shutdown()
    assert set(got) == set(sent)
    for msg_id, msg in sent.items():
        ext = got[msg_id]
        assert ext.body == msg.body and ext.tags == msg.tags and ext.keys == list(msg.keys or [])
        assert ext.properties.get("user-é") == msg.properties.get("user-é")


@pytest.mark.parametrize(
    ("env", "implementation", "flush"),
    [({}, None, "async"), ({"KROCKET_NO_EXTENSIONS": "1"}, "Python", "async"), ({}, None, "sync")],
    ids=["default", "python-twin", "sync-flush"],
)
def test_sends_take_the_fast_path_and_read_back_as_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], implementation: str | None, flush: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, flush=flush)
    try:
        asyncio.run(create_topic(cluster, "FastTopic", 4))
        line = _fast_path_line(cluster)
        assert "off" not in line.split("send fast path:")[1]
        if implementation is not None:
            assert implementation in line
        asyncio.run(_round_trip(cluster, "FastTopic", 200))
        # The store's first send creates its first commit log segment on the general path; the rest take the fast one.
        assert _fast_sends(cluster) == 199
    finally:
        cluster.stop()


def test_the_fast_path_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KROCKET_FAST_PATH", "0")
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1)
    try:
        asyncio.run(create_topic(cluster, "SlowTopic", 2))
        assert "off (KROCKET_FAST_PATH=0)" in _fast_path_line(cluster)
        asyncio.run(_round_trip(cluster, "SlowTopic", 40))
        assert _fast_sends(cluster) == 0
    finally:
        cluster.stop()
