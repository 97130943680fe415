"""Consumer groups against real processes: clustering rebalance, broadcasting, a name server going away."""

from __future__ import annotations

import asyncio
import collections
import uuid
from pathlib import Path

from krocket.client import (
    ConsumeStatus,
    Message,
    MessageExt,
    MessageQueue,
    Producer,
    PushConsumer,
    SendStatus,
)

from tests.support.cluster import LocalCluster, create_topic, wait_until_async


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Member:
    """One consumer of a group and the ids of the messages it received."""

    def __init__(self, consumer: PushConsumer) -> None:
        self.consumer = consumer
        self.got: list[str] = []
        consumer.register_listener(self.listen)

    def listen(self, msgs: list[MessageExt]) -> ConsumeStatus:
        self.got.extend(m.msg_id for m in msgs)
        return ConsumeStatus.SUCCESS

    @property
    def ids(self) -> set[str]:
        return set(self.got)


async def test_client_clustering_spreads_and_rebalances_without_loss(cluster: LocalCluster) -> None:
    topic, group = name("Clu"), name("cg")
    await create_topic(cluster, topic)  # 4 queues on each of 2 brokers
    members = []
    for _ in range(3):
        consumer = PushConsumer(group, cluster.namesrv_addr, consume_from="FIRST", rebalance_interval=2.0)
        consumer.subscribe(topic)
        members.append(Member(consumer))
        await consumer.start()

    def spread() -> bool:
        sets = [set(m.consumer.assigned_queues()) for m in members]
        union = set().union(*sets)
        return len(union) == 8 and sum(len(s) for s in sets) == 8 and sorted(len(s) for s in sets) == [2, 3, 3]

    await wait_until_async(spread, timeout=30, message="8 queues spread 3/3/2 over 3 consumers")
    before = {q: i for i, m in enumerate(members) for q in m.consumer.assigned_queues()}

    sent: dict[str, MessageQueue] = {}
    async with Producer(name("pg"), cluster.namesrv_addr) as producer:

        async def produce(n: int) -> None:
            for i in range(n):
                r = await producer.send(Message(topic, f"m{i}".encode()))
                assert r.status is SendStatus.SEND_OK
                sent[r.msg_id] = r.queue

        await produce(150)
        await wait_until_async(
            lambda: set().union(*(m.ids for m in members)) >= set(sent), timeout=30, message="first 150 consumed"
        )
        sending = asyncio.ensure_future(produce(150))
        await members[2].consumer.shutdown()  # leaves mid-stream: NOTIFY makes the others rebalance at once
        await sending

    remaining = members[:2]
    await wait_until_async(
        lambda: sorted(len(m.consumer.assigned_queues()) for m in remaining) == [4, 4],
        timeout=30,
        message="two consumers with 4 queues each",
    )
    await wait_until_async(
        lambda: set().union(*(m.ids for m in members)) >= set(sent), timeout=30, message="all 300 consumed"
    )
    after = {q: i for i, m in enumerate(remaining) for q in m.consumer.assigned_queues()}
    moved = {q for q in before if before[q] != after.get(q)}
    counts = collections.Counter(i for m in members for i in m.got)
    assert set(counts) == set(sent)  # nothing lost, nothing foreign
    duplicates = {i for i, c in counts.items() if c > 1}
    assert all(sent[i] in moved for i in duplicates), "duplicates only on queues that changed owner"
    assert len(duplicates) <= 64, f"{len(duplicates)} duplicates"
    for m in remaining:
        await m.consumer.shutdown()


async def test_client_broadcasting_delivers_everything_to_everyone(cluster: LocalCluster, tmp_path: Path) -> None:
    topic, group = name("Bro"), name("bg")
    await create_topic(cluster, topic, queues=2)
    members = []
    for i in range(3):
        consumer = PushConsumer(
            group,
            cluster.namesrv_addr,
            message_model="BROADCASTING",
            consume_from="FIRST",
            instance_name=f"bc{i}",
            offset_dir=tmp_path,
        )
        consumer.subscribe(topic)
        members.append(Member(consumer))
        await consumer.start()
        assert len(consumer.assigned_queues()) == 4
    async with Producer(name("pg"), cluster.namesrv_addr) as producer:
        sent = {(await producer.send(Message(topic, str(i).encode()))).msg_id for i in range(30)}
    await wait_until_async(lambda: all(m.ids >= sent for m in members), timeout=30, message="30 each")
    for m in members:
        assert m.ids == sent and len(m.got) == 30
        await m.consumer.shutdown()
    files = sorted(tmp_path.glob(f"*/{group}/offsets.json"))
    assert len(files) == 3

    # A restarted broadcasting consumer resumes from its local offsets: nothing is delivered twice.
    again = PushConsumer(
        group,
        cluster.namesrv_addr,
        message_model="BROADCASTING",
        consume_from="FIRST",
        instance_name="bc0",
        offset_dir=tmp_path,
    )
    again.subscribe(topic)
    member = Member(again)
    await again.start()
    try:
        async with Producer(name("pg"), cluster.namesrv_addr) as producer:
            extra = (await producer.send(Message(topic, b"extra"))).msg_id
        await wait_until_async(lambda: extra in member.ids, timeout=20, message="the new message")
        assert member.ids == {extra}
    finally:
        await again.shutdown()


async def test_client_survives_a_stopped_name_server(cluster: LocalCluster) -> None:
    topic = name("NS")
    await create_topic(cluster, topic)
    got: set[str] = set()

    def listen(msgs: list[MessageExt]) -> None:
        got.update(m.msg_id for m in msgs)

    consumer = PushConsumer(name("cg"), cluster.namesrv_addr, consume_from="FIRST")
    consumer.subscribe(topic)
    consumer.register_listener(listen)
    await consumer.start()
    producer = Producer(name("pg"), cluster.namesrv_addr)
    await producer.start()
    try:
        sent = {(await producer.send(Message(topic, b"before"))).msg_id for _ in range(5)}
        cluster.namesrvs[0].stop()
        # Route refreshes (every 30 s) must fail over; force them now.
        await producer.instance.refresh_routes()
        await consumer._instance.refresh_routes()  # type: ignore[union-attr]
        await consumer.rebalance()
        sent |= {(await producer.send(Message(topic, b"after"))).msg_id for _ in range(5)}
        # New clients, and a topic they have never seen, only have the second name server left.
        async with Producer(name("pg"), cluster.namesrv_addr) as late:
            result = await late.send(Message(topic, b"late"))
            assert result.status is SendStatus.SEND_OK
            sent.add(result.msg_id)
        await wait_until_async(lambda: got >= sent, timeout=30, message="everything consumed")
    finally:
        await producer.shutdown()
        await consumer.shutdown()
