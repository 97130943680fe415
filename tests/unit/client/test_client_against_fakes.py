"""The client end to end against tiny in-process fake servers (the real ones: tests/integration)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from krocket.client import (
    Admin,
    ConsumeStatus,
    Message,
    MessageExt,
    PullConsumer,
    PullStatus,
    PushConsumer,
    SendStatus,
    SyncProducer,
)
from krocket.client.producer import Producer
from krocket.client.selector import select_by_hash
from krocket.common.message import PROPERTY_UNIQ_KEY, decode_properties

from tests.unit.client.client_fakes import FakeCluster


@pytest.fixture
async def fake() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster()
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_send_auto_creates_through_tbw102_and_spreads(fake: FakeCluster) -> None:
    async with Producer("pg", fake.namesrv_addr) as producer:
        results = [await producer.send(Message("NewTopic", f"m{i}".encode(), tags="A")) for i in range(8)]
    assert all(r.status is SendStatus.SEND_OK for r in results)
    assert {r.queue.broker_name for r in results} == {"broker-a", "broker-b"}
    header = fake.brokers[0].sent_headers[0]
    assert header["c"] == "TBW102" and header["d"] == "4" and header["m"] == "false"
    props = decode_properties(header["i"])
    assert props["TAGS"] == "A" and props[PROPERTY_UNIQ_KEY] in {r.msg_id for r in results}
    assert all(len(r.offset_msg_id) == 32 for r in results)
    assert any(hb["producerDataSet"] == [{"groupName": "pg"}] for hb in fake.brokers[0].heartbeats)


async def test_send_retries_on_another_broker(fake: FakeCluster) -> None:
    fake.create_topic("T")
    fake.brokers[0].fail_sends = 100
    async with Producer("pg", fake.namesrv_addr) as producer:
        results = [await producer.send(Message("T", b"x")) for _ in range(6)]
    assert {r.queue.broker_name for r in results} == {"broker-b"}
    assert len(fake.brokers[0].sent_headers) == 1  # then avoided while it is in the fault list


async def test_topic_without_auto_create_fails_clearly() -> None:
    cluster = FakeCluster(auto_create=False)
    await cluster.start()
    try:
        async with Producer("pg", cluster.namesrv_addr) as producer:
            with pytest.raises(Exception, match="TBW102|does not exist|auto-creat"):
                await producer.send(Message("Nope", b"x"))
    finally:
        await cluster.stop()


async def test_batch_oneway_and_ordered(fake: FakeCluster) -> None:
    fake.create_topic("T", queues=4)
    async with Producer("pg", fake.namesrv_addr) as producer:
        batch = await producer.send_batch([Message("T", f"b{i}".encode()) for i in range(5)])
        assert len(batch.msg_id.split(",")) == 5
        await producer.send_oneway(Message("T", b"one"))
        queues = await producer.queues("T")
        ordered = [await producer.send(Message("T", b"o"), select_by_hash, 5) for _ in range(3)]
        with pytest.raises(Exception, match="one topic"):
            await producer.send_batch([Message("T", b"a"), Message("U", b"b")])
    assert {r.queue for r in ordered} == {queues[5 % len(queues)]}
    await wait_for(lambda: sum(len(q) for b in fake.brokers for q in b.topics["T"].logs) == 9, what="9 stored")


async def test_push_clustering_rebalances_and_commits(fake: FakeCluster, tmp_path: Path) -> None:
    fake.create_topic("T", queues=4)
    got: dict[str, list[str]] = {"c1": [], "c2": []}

    def listener_for(name: str) -> Callable[[list[MessageExt]], ConsumeStatus]:
        def listen(msgs: list[MessageExt]) -> ConsumeStatus:
            got[name].extend(m.msg_id for m in msgs)
            return ConsumeStatus.SUCCESS

        return listen

    c1 = PushConsumer("cg", fake.namesrv_addr, consume_from="FIRST")
    c1.subscribe("T")
    c1.register_listener(listener_for("c1"))
    await c1.start()
    assert len(c1.assigned_queues()) == 8
    c2 = PushConsumer("cg", fake.namesrv_addr, consume_from="FIRST")
    c2.subscribe("T")
    c2.register_listener(listener_for("c2"))
    await c2.start()
    await wait_for(
        lambda: len(c1.assigned_queues()) == 4 and len(c2.assigned_queues()) == 4,
        what="4 queues each after NOTIFY_CONSUMER_IDS_CHANGED",
    )
    assert set(c1.assigned_queues()).isdisjoint(c2.assigned_queues())
    async with Producer("pg", fake.namesrv_addr) as producer:
        ids = {(await producer.send(Message("T", f"m{i}".encode()))).msg_id for i in range(40)}
    await wait_for(lambda: set(got["c1"]) | set(got["c2"]) == ids, what="all 40 consumed")
    assert got["c1"] and got["c2"]
    await c2.shutdown()
    await wait_for(lambda: len(c1.assigned_queues()) == 8, what="c1 takes every queue")
    await c1.persist_offsets()
    stored = sum(o for (g, _, _), o in fake.brokers[0].offsets.items() if g == "cg")
    stored += sum(o for (g, _, _), o in fake.brokers[1].offsets.items() if g == "cg")
    assert stored == 40
    await c1.shutdown()


async def test_push_tag_filter_reconsume_and_async_listener(fake: FakeCluster) -> None:
    fake.create_topic("T", queues=2)
    got: list[str] = []
    attempts: dict[str, int] = {}

    async def listen(msgs: list[MessageExt]) -> ConsumeStatus:
        for m in msgs:
            attempts[m.msg_id] = attempts.get(m.msg_id, 0) + 1
            if m.body == b"flaky" and attempts[m.msg_id] == 1:
                return ConsumeStatus.RECONSUME_LATER
            got.append(m.tags or "")
        return ConsumeStatus.SUCCESS

    consumer = PushConsumer("cg", fake.namesrv_addr, consume_from="LAST", reconsume_delay=0.05)
    consumer.subscribe("T", "A || C")
    consumer.register_listener(listen)
    await consumer.start()
    async with Producer("pg", fake.namesrv_addr) as producer:
        for tag in ("A", "B", "C", "B"):
            await producer.send(Message("T", b"x", tags=tag))
        await producer.send(Message("T", b"flaky", tags="A"))
    await wait_for(lambda: len(got) == 3, what="A, C and the retried A")
    assert sorted(got) == ["A", "A", "C"]
    assert max(attempts.values()) == 2
    await consumer.shutdown()


async def test_broadcasting_everyone_gets_everything(fake: FakeCluster, tmp_path: Path) -> None:
    fake.create_topic("T", queues=2)
    got: list[list[bytes]] = [[], []]
    consumers = []
    for i in range(2):
        c = PushConsumer(
            "bg",
            fake.namesrv_addr,
            message_model="BROADCASTING",
            consume_from="FIRST",
            instance_name=f"b{i}",
            offset_dir=tmp_path,
        )
        c.subscribe("T")
        c.register_listener(lambda msgs, i=i: got[i].extend(m.body for m in msgs))
        await c.start()
        consumers.append(c)
    async with Producer("pg", fake.namesrv_addr) as producer:
        for n in range(10):
            await producer.send(Message("T", str(n).encode()))
    await wait_for(lambda: len(got[0]) == 10 and len(got[1]) == 10, what="10 each")
    for c in consumers:
        await c.shutdown()
    files = sorted(tmp_path.glob("*/bg/offsets.json"))
    assert len(files) == 2


async def test_pull_consumer_and_admin(fake: FakeCluster) -> None:
    async with Admin(fake.namesrv_addr) as admin:
        assert await admin.create_topic("P", 2, 2) == ["broker-a", "broker-b"]
        assert "P" in await admin.list_topics()
        route = await admin.topic_route("P")
        assert {q.broker_name for q in route.queue_datas} == {"broker-a", "broker-b"}
        info = await admin.cluster_info()
        assert sorted(info.masters("c")) == ["broker-a", "broker-b"]
        async with Producer("pg", fake.namesrv_addr) as producer:
            sent = [await producer.send(Message("P", f"{i}".encode(), tags="T1")) for i in range(6)]
        async with PullConsumer("pullg", fake.namesrv_addr) as pc:
            queues = await pc.fetch_queues("P")
            assert len(queues) == 4
            seen = []
            for q in queues:
                result = await pc.pull(q, "T1", 0, 32)
                if result.status is PullStatus.FOUND:
                    seen += [m.msg_id for m in result.messages]
                    assert result.next_begin_offset == await pc.max_offset(q)
                    await pc.update_offset(q, result.next_begin_offset)
                    assert await pc.fetch_offset(q) == result.next_begin_offset
                else:
                    assert result.status is PullStatus.NO_NEW_MSG
            assert sorted(seen) == sorted(r.msg_id for r in sent)
            assert await pc.pull(queues[0], "Other", 0) is not None
            progress = await admin.consumer_progress("pullg", "P")
            assert sum(p.lag for p in progress) == 0 and sum(p.broker_offset for p in progress) == 6
            q = queues[0]
            assert (await pc.pull(q, "*", 10_000)).status is PullStatus.OFFSET_ILLEGAL
        await admin.delete_topic("P")
        assert "P" not in await admin.list_topics()


async def test_sync_producer_wrapper(fake: FakeCluster) -> None:
    fake.create_topic("T")
    addr = fake.namesrv_addr

    def run() -> list[SendStatus]:
        with SyncProducer("pg", addr) as producer:
            return [producer.send(Message("T", b"s")).status for _ in range(3)]

    # The fake servers live on this loop; the sync producer runs its own loop in a thread.
    assert await asyncio.to_thread(run) == [SendStatus.SEND_OK] * 3


async def test_name_server_failover(fake: FakeCluster) -> None:
    fake.create_topic("T")
    dead = "127.0.0.1:1"
    async with Producer("pg", f"{dead};{fake.namesrv_addr}") as producer:
        assert (await producer.send(Message("T", b"x"))).status is SendStatus.SEND_OK


async def test_existing_read_only_topic_is_not_auto_created_elsewhere(fake: FakeCluster) -> None:
    fake.create_topic("RO")
    for b in fake.brokers:
        b.topics["RO"].perm = 4
    async with Producer("pg", fake.namesrv_addr) as producer:
        with pytest.raises(Exception, match="no writable queue"):
            await producer.send(Message("RO", b"x"))
    assert all(not b.sent_headers for b in fake.brokers)


def test_flow_control_by_count_and_bytes() -> None:
    from krocket.client.process_queue import ProcessQueue
    from krocket.client.pull_service import flow_control_reason

    consumer = PushConsumer("cg", "127.0.0.1:1", pull_threshold_for_queue=2, pull_threshold_size_mib_for_queue=1)
    limits = (consumer.pull_threshold_for_queue, consumer.pull_threshold_bytes)
    pq = ProcessQueue()

    def msg(offset: int, size: int) -> MessageExt:
        return MessageExt("T", b"x" * size, {}, 0, offset, 0, 0, 0, 0, 0, "", 0, "", 0, "")

    pq.put([msg(0, 1), msg(1, 1)])
    assert flow_control_reason(pq, *limits) is None
    pq.put([msg(2, 1)])
    assert flow_control_reason(pq, *limits) == "3 messages held"  # 3 messages > 2
    pq = ProcessQueue()
    pq.put([msg(0, 2 * 1024 * 1024)])
    assert flow_control_reason(pq, *limits) == "2 MiB held"  # 2 MiB > 1 MiB
    pq = ProcessQueue()
    pq.put([msg(0, 1), msg(2001, 1)])
    assert flow_control_reason(pq, 10, 1024) == "offset span 2001"
