"""Deleting a BrokerGroup whose real broker process holds a backlog: refused, then drained on request.

The operator (kopf against kmock) asks the broker's admin API for its lag, withdraws its write permission
(sends are refused, reads go on), waits until the consumer group has caught up, then deletes the broker's
topics and lets the deletion go on.
"""

from __future__ import annotations

import aiohttp
import pytest

from krocket.client import Producer, PullConsumer
from krocket.client.types import PullStatus
from krocket.common.errors import RemoteError
from krocket.common.message import Message
from krocket.operator.broker_admin import BrokerAdmin

from tests.operator.api import BGS, MERGE, TOPICS, G, topic_body
from tests.operator.kopf_harness import StampingEmulator, condition, get, wait_for
from tests.operator.real_broker import admin_base, brokergroup, operator_on
from tests.support.cluster import create_topic

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

TOPIC, GROUP = "Drain", "billing"


async def test_delete_with_backlog_is_refused_then_drained(kmock, cluster):
    base = admin_base(cluster)
    await create_topic(cluster, TOPIC, queues=2)

    async with (
        aiohttp.ClientSession() as session,
        Producer("drain-producer", cluster.namesrv_addr) as producer,
        PullConsumer(GROUP, cluster.namesrv_addr) as consumer,
        operator_on(kmock, base),
    ):
        admin = BrokerAdmin(session)
        queues = await consumer.fetch_queues(TOPIC)
        for q in queues:  # the group's offsets at 0: everything sent is its lag
            await consumer.update_offset(q, 0)
        for i in range(10):
            await producer.send(Message(TOPIC, f"order {i}".encode()))

        await kmock.post(f"/apis/{G}/namespaces/mq/brokergroups", json=brokergroup(cluster.namesrv_addr))
        await wait_for(lambda: "krocket.io/finalizer" in get(kmock, BGS, "mq", "broker-a")["metadata"]["finalizers"])
        await kmock.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-a")

        def cond(ctype: str) -> dict | None:
            return condition(get(kmock, BGS, "mq", "broker-a"), ctype)

        refused = await wait_for(lambda: (c := cond("DrainRequired")) and c["status"] == "True" and c, what="refused")
        assert f"{TOPIC} 10 ({GROUP}=10)" in refused["message"]
        assert (await admin.broker_info(base))["brokerPermission"] == 6, "no drain asked for: still writable"

        # drain: write permission withdrawn on the broker, sends refused, progress in status
        await kmock.patch(
            f"/apis/{G}/namespaces/mq/brokergroups/broker-a",
            json={"metadata": {"annotations": {"krocket.io/drain": "true"}}},
            headers=MERGE,
        )
        await wait_for(lambda: (c := cond("Draining")) and c["status"] == "True", what="Draining")
        assert (await admin.broker_info(base))["brokerPermission"] == 4
        with pytest.raises(RemoteError, match="NO_PERMISSION"):
            await producer.send(Message(TOPIC, b"too late"))
        assert get(kmock, BGS, "mq", "broker-a")["status"]["drain"]["remainingMessages"] == 10

        # the consumers catch up: the deletion goes on and the broker's topics are deleted
        consumed = 0
        for q in queues:
            offset = 0
            while True:
                result = await consumer.pull(q, "*", offset, 32)
                if result.status is not PullStatus.FOUND:
                    break
                consumed += len(result.messages)
                offset = result.next_begin_offset
            await consumer.update_offset(q, offset)
        assert consumed == 10, "reads go on while writes are withdrawn"
        await wait_for(lambda: get(kmock, BGS, "mq", "broker-a") is None, timeout=20, what="deletion went on")
        assert await admin.get_topic(base, TOPIC) is None


async def test_two_phase_queue_shrink_waits_for_the_removed_queues(kmock, cluster):
    """writeQueues 4 -> 2 goes through with no annotation; readQueues 4 -> 2 waits until the consumer group has
    read queues 2 and 3 (the broker's per-queue offsets and the group's per-queue rows)."""
    base = admin_base(cluster)
    await create_topic(cluster, TOPIC, queues=4)
    topic_path = f"/apis/{G}/namespaces/mq/topics/drain"

    async with (
        aiohttp.ClientSession() as session,
        Producer("shrink-producer", cluster.namesrv_addr) as producer,
        PullConsumer(GROUP, cluster.namesrv_addr) as consumer,
        operator_on(kmock, base),
    ):
        admin = BrokerAdmin(session)
        queues = sorted(await consumer.fetch_queues(TOPIC), key=lambda q: q.queue_id)
        for q in queues:
            await consumer.update_offset(q, 0)
        for i in range(20):
            await producer.send(Message(TOPIC, f"order {i}".encode()))
        await kmock.post(f"/apis/{G}/namespaces/mq/brokergroups", json=brokergroup(cluster.namesrv_addr))
        await kmock.post(
            f"/apis/{G}/namespaces/mq/topics",
            json=topic_body("drain", placement={"clusterName": "DefaultCluster"}, topicName=TOPIC),
        )

        def ready() -> dict | None:
            return condition(get(kmock, TOPICS, "mq", "drain"))

        await wait_for(lambda: (c := ready()) and c["status"] == "True", what="Topic Ready")

        async def held() -> tuple[int, int]:
            t = await admin.get_topic(base, TOPIC) or {}
            return int(t.get("readQueueNums", 0)), int(t.get("writeQueueNums", 0))

        await kmock.patch(topic_path, json={"spec": {"writeQueues": 2}}, headers=MERGE)
        await wait_for(lambda: get(kmock, TOPICS, "mq", "drain")["status"]["queues"] == 2, what="write 2")
        assert await held() == (4, 2)

        lag_in_upper = sum(r["lag"] for r in (await admin.group_offsets(base, GROUP))["offsets"] if r["queueId"] >= 2)
        assert lag_in_upper > 0
        await kmock.patch(topic_path, json={"spec": {"readQueues": 2}}, headers=MERGE)
        refused = await wait_for(lambda: (c := ready()) and c["status"] == "False" and c, what="read cut refused")
        assert f"{GROUP}={lag_in_upper}" in refused["message"] and "queues 2..3" in refused["message"]
        assert await held() == (4, 2)

        for q in queues[2:]:  # the consumer reads the queues that go, and commits
            offset = 0
            while (result := await consumer.pull(q, "*", offset, 32)).status is PullStatus.FOUND:
                offset = result.next_begin_offset
            await consumer.update_offset(q, offset)
        await wait_for(lambda: (c := ready()) and c["status"] == "True", timeout=20, what="read cut applied")
        assert await held() == (2, 2)
