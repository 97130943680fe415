"""A push consumer of a few hundred topics against real processes: every topic gets its queues and is consumed, a
route refresh asks once per topic, a round with nothing changed does no rebalance work, and a changed route
rebalances that topic alone. Structural facts (request counts, rebalance stats), never timings."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krocket.client import Admin, Message, MessageExt, Producer, PushConsumer
from krocket.client import instance as instance_module
from krocket.client.instance import ClientInstance
from krocket.common.codes import RequestCode
from krocket.common.remoting import RemotingCommand
from krocket.common.topic import TopicConfig

from tests.support.cluster import LocalCluster, start_cluster, wait_until_async

TOPICS = 300
QUEUES = 2  # per broker group: 4 queues a topic on the two groups


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path / "cluster", namesrvs=1, groups=2, auto_create=False)
    try:
        yield c
    finally:
        c.stop()


class RequestCounter:
    """Counts the requests a client instance sends, by code, and the route lookups by topic."""

    def __init__(self, instance: ClientInstance) -> None:
        self.codes: collections.Counter[int] = collections.Counter()
        self.routes: collections.Counter[str] = collections.Counter()
        pool = instance.pool
        send = pool.request

        async def counting(addr: str, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
            self.codes[cmd.code] += 1
            if cmd.code == RequestCode.GET_ROUTEINFO_BY_TOPIC:
                self.routes[cmd.ext_fields["topic"]] += 1
            return await send(addr, cmd, timeout)

        pool.request = counting  # type: ignore[method-assign]

    def clear(self) -> None:
        self.codes.clear()
        self.routes.clear()


async def routed(admin: Admin, topics: list[str], queues: int) -> bool:
    routes = await asyncio.gather(*(admin.topic_route(t) for t in topics), return_exceptions=True)
    return all(
        not isinstance(r, BaseException)
        and len(r.queue_datas) == 2
        and all(q.read_queue_nums == queues for q in r.queue_datas)
        for r in routes
    )


async def test_a_consumer_of_many_topics(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_module, "ROUTE_REFRESH_S", 3600.0)  # this test runs the refresh rounds itself
    tag = uuid.uuid4().hex[:6]
    retry = f"%RETRY%cg_{tag}"
    topics = [f"many_{tag}_{i:03d}" for i in range(TOPICS)]
    async with Admin(cluster.namesrv_addr) as admin:
        await admin.create_topics([TopicConfig(t, QUEUES, QUEUES) for t in topics])
        await wait_until_async(lambda: routed(admin, topics, QUEUES), timeout=40, message="routes of every topic")

    got: collections.Counter[str] = collections.Counter()

    def listen(msgs: list[MessageExt]) -> None:
        got.update(m.topic for m in msgs)

    consumer = PushConsumer(f"cg_{tag}", cluster.namesrv_addr, consume_from="FIRST", rebalance_interval=3600)
    for t in topics:
        consumer.subscribe(t)
    consumer.register_listener(listen)
    producer = Producer(f"pg_{tag}", cluster.namesrv_addr)
    await producer.start()
    await consumer.start()
    try:
        # Every topic has its queues once start returns: one consumer owns all of them.
        assigned = consumer.assigned_queues()
        assert collections.Counter(q.topic for q in assigned) == dict.fromkeys(topics, 2 * QUEUES)
        for t in topics:
            await producer.send(Message(t, f"to {t}".encode()))
        await wait_until_async(lambda: set(got) == set(topics), timeout=30, message="a message of every topic")
        assert got == dict.fromkeys(topics, 1)

        instance = consumer._instance
        rebalancer = consumer._rebalancer
        assert instance is not None and rebalancer is not None
        counter = RequestCounter(instance)

        # A refresh round asks once per topic it keeps (the subscribed ones and the group's retry topic).
        changed = await instance.refresh_routes()
        assert changed <= {retry}
        assert {t: counter.routes[t] for t in topics} == dict.fromkeys(topics, 1)
        assert set(counter.routes) <= set(instance.topics) == {*topics, retry}

        # A round with nothing changed: one consumer list for every topic, nothing allocated, started or stopped.
        before: dict[str, Any] = dataclasses.asdict(rebalancer.stats)
        counter.clear()
        await consumer.rebalance()
        after = dataclasses.asdict(rebalancer.stats)
        rounds = after["rounds"] - before["rounds"]
        assert rounds >= 1
        assert after["allocated"] == before["allocated"]
        assert after["skipped"] - before["skipped"] >= TOPICS
        assert counter.codes[RequestCode.GET_CONSUMER_LIST_BY_GROUP] == rounds  # not one per topic
        for code in (RequestCode.QUERY_CONSUMER_OFFSET, RequestCode.GET_MIN_OFFSET, RequestCode.UNLOCK_BATCH_MQ):
            assert counter.codes[code] == 0
        assert consumer.assigned_queues() == assigned

        # One topic grows: the refresh finds its route changed and only that topic is rebalanced.
        grown = topics[7]
        async with Admin(cluster.namesrv_addr) as admin:
            await admin.create_topics([TopicConfig(grown, 2 * QUEUES, 2 * QUEUES)])
            await wait_until_async(lambda: routed(admin, [grown], 2 * QUEUES), timeout=40, message="the grown route")
        before = dataclasses.asdict(rebalancer.stats)
        assert grown in await instance.refresh_routes()
        await wait_until_async(
            lambda: len([q for q in consumer.assigned_queues() if q.topic == grown]) == 4 * QUEUES,
            timeout=20,
            message="the grown topic's new queues",
        )
        after = dataclasses.asdict(rebalancer.stats)
        assert after["allocated"] - before["allocated"] == 1
        await producer.send(Message(grown, b"after growing"))
        await wait_until_async(lambda: got[grown] == 2, timeout=20, message="a message on the grown topic")
    finally:
        await consumer.shutdown()
        await producer.shutdown()
