"""Retries and dead letters against real processes: a krocket PushConsumer whose listener fails a poison message
keeps consuming the rest of its queue; the poison message comes back through %RETRY%<group> with reconsume times
1, 2, ... and its first topic, and lands in %DLQ%<group> after max_reconsume_times; `krocket dlq` lists, shows and
resends it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.broker.config import BrokerConfig
from krocket.cli.dlq_commands import read_dead_letters
from krocket.client import ConsumeStatus, Message, MessageExt, Producer, PushConsumer

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until_async

KROCKET = [sys.executable, "-m", "krocket.cli.main"]
MAX_RECONSUME = 2


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def retry_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """One name server and one broker; short delay levels where the broker has them (helper S's setting)."""
    extra: list[str] = []
    if hasattr(BrokerConfig, "message_delay_level"):
        config = tmp_path / "broker.yaml"
        config.write_text("messageDelayLevel: " + " ".join(["1s"] * 18) + "\n")
        extra = ["--config", str(config)]
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, extra_broker_args=extra)
    try:
        yield cluster
    finally:
        cluster.stop()


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KROCKET, *args, "--namesrv", cluster.namesrv_addr], capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_poison_message_is_retried_then_dead_lettered_without_blocking_its_queue(
    retry_cluster: LocalCluster,
) -> None:
    cluster = retry_cluster
    topic, group = name("Orders"), name("cg")
    await create_topic(cluster, topic, queues=1)
    poison_seen: list[tuple[int, str, float]] = []
    good: list[bytes] = []

    def listener(messages: list[MessageExt]) -> ConsumeStatus:
        for m in messages:
            if m.body == b"poison":
                poison_seen.append((m.reconsume_times, m.topic, time.monotonic()))
                return ConsumeStatus.RECONSUME_LATER
            good.append(m.body)
        return ConsumeStatus.SUCCESS

    consumer = PushConsumer(
        group, cluster.namesrv_addr, consume_from="FIRST", rebalance_interval=1.0, max_reconsume_times=MAX_RECONSUME
    )
    consumer.subscribe(topic)
    consumer.register_listener(listener)
    async with Producer(name("pg"), cluster.namesrv_addr) as producer:
        poison = await producer.send(Message(topic, b"poison", tags="bad", keys=["order-1"]))
        for i in range(5):
            await producer.send(Message(topic, f"ok-{i}".encode()))
        await consumer.start()
        try:
            await wait_until_async(lambda: len(good) == 5, timeout=20, message="the messages behind the poison one")
            assert poison_seen and poison_seen[0][0] == 0
            await wait_until_async(
                lambda: len(poison_seen) == MAX_RECONSUME + 1, timeout=90, message="every redelivery of the poison"
            )
            assert [times for times, _, _ in poison_seen] == [0, 1, 2]
            gaps = [later[2] - earlier[2] for earlier, later in zip(poison_seen, poison_seen[1:], strict=False)]
            assert all(gap >= 0.9 for gap in gaps), gaps  # each retry waited its delay level (1 s here)
            assert {t for _, t, _ in poison_seen} == {topic}  # redeliveries show the first topic
            letters: list[MessageExt] = []

            async def dead() -> bool:
                letters[:] = await read_dead_letters(group, cluster.namesrv_addr)
                return bool(letters)

            await wait_until_async(dead, timeout=20, message="the poison message in the DLQ")
            await asyncio.sleep(3)  # nothing more comes back
            assert len(poison_seen) == MAX_RECONSUME + 1
            assert [m.msg_id for m in letters] == [poison.msg_id]
            assert letters[0].reconsume_times == MAX_RECONSUME + 1
            assert letters[0].properties["RETRY_TOPIC"] == topic
            assert sorted(good) == [f"ok-{i}".encode() for i in range(5)]
            progress = {(p.topic, p.queue_id): p for p in await _progress(cluster, group)}
            assert progress[(topic, 0)].consumer_offset == 6  # the queue moved past the poison message
        finally:
            await consumer.shutdown()

    listed = cli(cluster, "dlq", "list", group)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert [(r["msgId"], r["originalTopic"], r["reconsumeTimes"]) for r in rows] == [
        (poison.msg_id, topic, MAX_RECONSUME + 1)
    ]
    shown = cli(cluster, "dlq", "show", group, poison.msg_id)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["body"] == "poison"
    assert detail["properties"]["ORIGIN_MESSAGE_ID"]
    missing = cli(cluster, "dlq", "show", group, "0" * 32)
    assert missing.returncode != 0

    resent = cli(cluster, "dlq", "resend", group, "--msg-id", poison.msg_id)
    assert resent.returncode == 0, resent.stderr
    assert json.loads(resent.stdout.splitlines()[0])["topic"] == topic
    again: list[MessageExt] = []
    fresh = PushConsumer(name("cg2"), cluster.namesrv_addr, consume_from="FIRST")
    fresh.subscribe(topic)
    fresh.register_listener(lambda msgs: again.extend(msgs))
    await fresh.start()
    try:
        await wait_until_async(lambda: len(again) == 7, timeout=20, message="the resent message in its topic")
    finally:
        await fresh.shutdown()
    resent_msg = next(m for m in again if m.body == b"poison" and m.msg_id != poison.msg_id)
    assert resent_msg.tags == "bad"
    assert resent_msg.keys == ["order-1"]
    assert "RETRY_TOPIC" not in resent_msg.properties


async def _progress(cluster: LocalCluster, group: str) -> list:  # type: ignore[type-arg]
    from krocket.client import Admin

    async with Admin(cluster.namesrv_addr) as admin:
        return await admin.consumer_progress(group)
