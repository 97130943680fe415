"""krocket.client against real name server and broker processes: sends, pulls, filters, start points."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from krocket.client import (
    Admin,
    ConsumeStatus,
    Message,
    MessageExt,
    MessageQueue,
    Producer,
    PullConsumer,
    PullStatus,
    PushConsumer,
    SendResult,
    SendStatus,
    SyncAdmin,
    SyncProducer,
    SyncPullConsumer,
    SyncPushConsumer,
)
from krocket.common.errors import KrocketError, MessageIllegalError

from tests.support.cluster import LocalCluster, create_topic, wait_until, wait_until_async


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Collector:
    """A listener that records what it got."""

    def __init__(self) -> None:
        self.messages: list[MessageExt] = []

    def __call__(self, msgs: list[MessageExt]) -> ConsumeStatus:
        self.messages.extend(msgs)
        return ConsumeStatus.SUCCESS

    @property
    def ids(self) -> set[str]:
        return {m.msg_id for m in self.messages}


@pytest.fixture
async def producer(cluster: LocalCluster) -> AsyncIterator[Producer]:
    p = Producer(name("pg"), cluster.namesrv_addr)
    await p.start()
    try:
        yield p
    finally:
        await p.shutdown()


async def start_consumer(
    cluster: LocalCluster, topic: str, expression: str = "*", group: str | None = None, **kwargs: object
) -> tuple[PushConsumer, Collector]:
    collector = Collector()
    consumer = PushConsumer(group or name("cg"), cluster.namesrv_addr, **kwargs)  # type: ignore[arg-type]
    consumer.subscribe(topic, expression)
    consumer.register_listener(collector)
    await consumer.start()
    return consumer, collector


async def test_client_produce_consume_across_two_brokers_and_name_servers(
    cluster: LocalCluster, producer: Producer
) -> None:
    assert len(cluster.namesrvs) == 2 and len(cluster.brokers) == 2
    topic = name("T")
    await create_topic(cluster, topic)
    results = [await producer.send(Message(topic, f"m{i}".encode(), tags="A", keys=[f"k{i}"])) for i in range(40)]
    assert all(r.status is SendStatus.SEND_OK for r in results)
    assert {r.queue.broker_name for r in results} == {b.broker_name for b in cluster.brokers}
    sent = {r.msg_id for r in results}
    consumer, got = await start_consumer(cluster, topic, consume_from="FIRST")
    try:
        assert len(consumer.assigned_queues()) == 8
        await wait_until_async(lambda: got.ids >= sent, timeout=30, message="all 40 messages consumed")
        assert got.ids == sent
        by_id = {m.msg_id: m for m in got.messages}
        assert by_id[results[3].msg_id].body == b"m3" and by_id[results[3].msg_id].keys == ["k3"]
        assert by_id[results[3].msg_id].tags == "A"
    finally:
        await consumer.shutdown()


async def test_client_auto_created_topic(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("Auto")
    result = await producer.send(Message(topic, b"first"))
    assert result.status is SendStatus.SEND_OK
    async with Admin(cluster.namesrv_addr) as admin:
        await wait_until_async(lambda: _has_topic(admin, topic), timeout=40, message="auto-created topic listed")


async def _has_topic(admin: Admin, topic: str) -> bool:
    return topic in await admin.list_topics()


async def pull_queue(pc: PullConsumer, queue: MessageQueue, start: int = 0, expression: str = "*") -> list[MessageExt]:
    out: list[MessageExt] = []
    offset = start
    for _ in range(1000):
        result = await pc.pull(queue, expression, offset, 32)
        if result.status is not PullStatus.FOUND and result.status is not PullStatus.NO_MATCHED_MSG:
            break
        out.extend(result.messages)
        offset = result.next_begin_offset
    return out


async def test_client_batch_oneway_and_ordered_send(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("B")
    await create_topic(cluster, topic)
    batch = await producer.send_batch([Message(topic, f"b{i}".encode(), tags="T") for i in range(10)])
    assert batch.status is SendStatus.SEND_OK and len(batch.msg_id.split(",")) == 10
    queues = await producer.queues(topic)
    target = queues[5]
    ordered = [
        await producer.send(Message(topic, f"ord{i}".encode()), lambda qs, msg, arg: qs[arg], 5) for i in range(10)
    ]
    assert {r.queue for r in ordered} == {target}
    assert [r.queue_offset for r in ordered] == sorted(r.queue_offset for r in ordered)
    await producer.send_oneway(Message(topic, b"oneway", keys="ow"))
    async with PullConsumer(name("pull"), cluster.namesrv_addr) as pc:
        in_batch_queue = await pull_queue(pc, batch.queue, batch.queue_offset)
        assert [m.body for m in in_batch_queue[:10]] == [f"b{i}".encode() for i in range(10)]
        assert [m.msg_id for m in in_batch_queue[:10]] == batch.msg_id.split(",")
        # Only the ordered sends: the oneway message may land in the same queue.
        in_target = [m for m in await pull_queue(pc, target) if m.body.startswith(b"ord")]
        assert [m.body for m in in_target] == [f"ord{i}".encode() for i in range(10)]

        async def oneway_landed() -> bool:
            for q in await pc.fetch_queues(topic):
                if any(m.body == b"oneway" for m in await pull_queue(pc, q)):
                    return True
            return False

        await wait_until_async(oneway_landed, timeout=10, message="the oneway message stored")


async def test_client_large_body_is_compressed_and_restored(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("Big")
    await create_topic(cluster, topic)
    body = bytes(range(256)) * 64  # 16 KiB
    result = await producer.send(Message(topic, body))
    async with PullConsumer(name("pull"), cluster.namesrv_addr) as pc:
        got = await pull_queue(pc, result.queue, result.queue_offset)
    assert got[0].body == body


async def test_client_tag_filtering_is_exact(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("Tags")
    await create_topic(cluster, topic, queues=1, brokers=[cluster.brokers[0].broker_name])
    # "Aa" and "BB" have the same Java hash: the broker lets "BB" through, the client must drop it.
    consumer, got = await start_consumer(cluster, topic, "TagA || Aa || TagC", consume_threads=1)
    try:
        for tag in ("TagA", "TagB", "BB", "Aa", None, "TagC", "TagAB", "TagA"):
            await producer.send(Message(topic, f"{tag}".encode(), tags=tag))
        await producer.send(Message(topic, b"end", tags="TagC"))
        await wait_until_async(lambda: any(m.body == b"end" for m in got.messages), timeout=20, message="sentinel")
        assert sorted(m.tags or "" for m in got.messages) == ["Aa", "TagA", "TagA", "TagC", "TagC"]
    finally:
        await consumer.shutdown()


async def test_client_consume_from_first_last_timestamp(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("From")
    await create_topic(cluster, topic, queues=2)
    old = {(await producer.send(Message(topic, b"old"))).msg_id for _ in range(6)}
    await asyncio.sleep(0.05)  # store timestamps of "old" and "mid" must differ
    ts = time.time()
    mid = {(await producer.send(Message(topic, b"mid"))).msg_id for _ in range(6)}

    first, got_first = await start_consumer(cluster, topic, consume_from="FIRST")
    stamp, got_stamp = await start_consumer(cluster, topic, consume_from="TIMESTAMP", consume_timestamp=ts)
    last, got_last = await start_consumer(cluster, topic, consume_from="LAST")
    try:
        new = {(await producer.send(Message(topic, b"new"))).msg_id for _ in range(4)}
        await wait_until_async(
            lambda: got_first.ids >= old | mid | new and got_stamp.ids >= mid | new and got_last.ids >= new,
            timeout=30,
            message="each consumer's messages",
        )
        assert got_first.ids == old | mid | new
        assert got_stamp.ids == mid | new
        assert got_last.ids == new
    finally:
        for c in (first, stamp, last):
            await c.shutdown()


async def test_client_stored_offset_wins_over_consume_from(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("Resume")
    await create_topic(cluster, topic, queues=2)
    group = name("cg")
    first = {(await producer.send(Message(topic, b"1"))).msg_id for _ in range(5)}
    consumer, got = await start_consumer(cluster, topic, group=group, consume_from="FIRST")
    await wait_until_async(lambda: got.ids >= first, timeout=20, message="first round")
    await consumer.shutdown()  # persists offsets
    second = {(await producer.send(Message(topic, b"2"))).msg_id for _ in range(5)}
    consumer, got = await start_consumer(cluster, topic, group=group, consume_from="FIRST")
    try:
        await wait_until_async(lambda: got.ids >= second, timeout=20, message="second round")
        assert got.ids == second
    finally:
        await consumer.shutdown()


async def test_client_long_polling_latency(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("Lat")
    await create_topic(cluster, topic)
    arrived: dict[bytes, float] = {}

    def listen(msgs: list[MessageExt]) -> None:
        now = time.perf_counter()
        for m in msgs:
            arrived[m.body] = now

    consumer = PushConsumer(name("cg"), cluster.namesrv_addr, consume_from="LAST")
    consumer.subscribe(topic)
    consumer.register_listener(listen)
    await consumer.start()
    try:
        await producer.send(Message(topic, b"warm-up"))
        await wait_until_async(lambda: b"warm-up" in arrived, timeout=20, message="warm-up message")
        latencies = []
        for i in range(21):
            await asyncio.sleep(0.02)  # let the consumer park its pulls again
            key = f"lat{i}".encode()
            sent = time.perf_counter()
            await producer.send(Message(topic, key))
            await wait_until_async(lambda key=key: key in arrived, timeout=5, interval=0.001, message=f"message {i}")
            latencies.append(arrived[key] - sent)
        p50 = statistics.median(latencies)
        print(f"send->listener latency p50={p50 * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms")
        assert p50 < 0.05, f"median latency {p50 * 1000:.1f} ms; all: {[round(x * 1000, 1) for x in latencies]}"
    finally:
        await consumer.shutdown()


async def test_client_pull_consumer_offsets(cluster: LocalCluster, producer: Producer) -> None:
    topic = name("Pull")
    await create_topic(cluster, topic, queues=2)
    sent = [await producer.send(Message(topic, f"p{i}".encode())) for i in range(12)]
    group = name("pullg")
    async with PullConsumer(group, cluster.namesrv_addr) as pc:
        queues = await pc.fetch_queues(topic)
        assert len(queues) == 4
        seen: set[str] = set()
        for q in queues:
            assert await pc.min_offset(q) == 0
            assert await pc.fetch_offset(q) == -1  # nothing stored for this group
            result = await pc.pull(q, "*", 0, 32)
            top = await pc.max_offset(q)
            if top == 0:
                assert result.status is PullStatus.NO_NEW_MSG
                continue
            assert result.status is PullStatus.FOUND and result.next_begin_offset == top == result.max_offset
            seen |= {m.msg_id for m in result.messages}
            await pc.update_offset(q, result.next_begin_offset)
            assert await pc.fetch_offset(q) == result.next_begin_offset
            assert await pc.search_offset(q, time.time() + 60) == top
            assert await pc.search_offset(q, 0) == 0
            beyond = await pc.pull(q, "*", top + 100, 32)
            assert beyond.status in (PullStatus.OFFSET_ILLEGAL, PullStatus.NO_NEW_MSG)
        assert seen == {r.msg_id for r in sent}
        async with Admin(cluster.namesrv_addr) as admin:
            progress = await admin.consumer_progress(group, topic)
            assert len(progress) == 4
            assert sum(p.broker_offset for p in progress) == 12 and sum(p.lag for p in progress) == 0
            assert all(p.consumer_offset == p.broker_offset for p in progress)
        # Long polling: a pull that waits is answered when a message arrives.
        q = sent[0].queue
        top = await pc.max_offset(q)
        waiting = asyncio.ensure_future(pc.pull(q, "*", top, 32, block_ms=5000))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await producer.send(Message(topic, b"late"), lambda qs, m, a: q)
        result = await asyncio.wait_for(waiting, 5)
        assert result.status is PullStatus.FOUND and result.messages[0].body == b"late"


async def test_client_admin_topics_and_cluster(cluster: LocalCluster) -> None:
    topic = name("Adm")
    async with Admin(cluster.namesrv_addr) as admin:
        info = await admin.cluster_info()
        assert set(info.masters()) == {b.broker_name for b in cluster.brokers}
        applied = await admin.create_topic(topic, read_queues=3, write_queues=3)
        assert applied == sorted(b.broker_name for b in cluster.brokers)
        expected = {(b.broker_name, 3, 3) for b in cluster.brokers}

        async def routed_on_every_group() -> bool:
            # Each master registers its topic on its own (a delta of that topic): the route fills group by group.
            if not await _has_topic(admin, topic):
                return False
            route = await admin.topic_route(topic)
            return {(q.broker_name, q.read_queue_nums, q.write_queue_nums) for q in route.queue_datas} == expected

        await wait_until_async(routed_on_every_group, timeout=40, message="topic routed on every group")
        config = await admin.topic_config(cluster.brokers[0].addr)
        assert topic in config
        await admin.delete_topic(topic)

        async def gone() -> bool:
            return not await _has_topic(admin, topic)

        await wait_until_async(gone, timeout=40, message="topic deleted")


def test_client_sync_wrappers(cluster: LocalCluster) -> None:
    topic = name("Sync")
    with SyncAdmin(cluster.namesrv_addr) as admin:
        admin.create_topic(topic, 2, 2)
        wait_until(lambda: topic in admin.list_topics(), timeout=40, message="topic listed")
    got = Collector()
    consumer = SyncPushConsumer(name("cg"), cluster.namesrv_addr, consume_from="FIRST")
    consumer.subscribe(topic)
    consumer.register_listener(got)
    with SyncProducer(name("pg"), cluster.namesrv_addr) as producer:
        ids = {producer.send(Message(topic, b"s")).msg_id for _ in range(6)}
        ids |= set(producer.send_batch([Message(topic, b"x"), Message(topic, b"y")]).msg_id.split(","))
    with consumer:
        wait_until(lambda: got.ids >= ids, timeout=30, message="sync consumer got everything")
    with SyncPullConsumer(name("pull"), cluster.namesrv_addr) as pc:
        queues = pc.fetch_queues(topic)
        assert sum(pc.max_offset(q) for q in queues) == 8


def test_sync_producer_sends_on_the_callers_thread_once_the_route_is_known(cluster: LocalCluster) -> None:
    topic = name("SyncFast")
    with SyncAdmin(cluster.namesrv_addr) as admin:
        admin.create_topic(topic, 4, 4)
        wait_until(lambda: topic in admin.list_topics(), timeout=40, message="topic listed")
    sent: list[SendResult] = []
    with SyncProducer(name("pg"), cluster.namesrv_addr) as producer:
        sent.append(producer.send(Message(topic, b"first")))  # the route is looked up on the client's loop
        assert producer._blocking._all == set()

        def worker(k: int) -> None:
            for i in range(25):
                sent.append(producer.send(Message(topic, f"t{k}-{i}".encode(), keys=f"k{k}")))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # One blocking connection per thread and broker the sends went to; the queues cover both groups.
        brokers = {r.queue.broker_name for r in sent[1:]}
        assert len(brokers) == 2 and len(producer._blocking._all) == 3 * len(brokers)
        ordered = [producer.send(Message(topic, f"o{i}".encode()), lambda qs, msg, arg: qs[arg], 1) for i in range(5)]
        assert len({r.queue for r in ordered}) == 1
        with pytest.raises(MessageIllegalError):
            producer.send(Message(topic, b""))
    assert len(sent) == 76 and all(r.status is SendStatus.SEND_OK for r in sent)
    with SyncPullConsumer(name("pull"), cluster.namesrv_addr) as pc:
        bodies = []
        for q in pc.fetch_queues(topic):
            bodies += [m.body for m in pc.pull(q, "*", 0, 200).messages]
    expected = (
        {b"first"} | {f"t{k}-{i}".encode() for k in range(3) for i in range(25)} | {f"o{i}".encode() for i in range(5)}
    )
    assert sorted(bodies) == sorted(expected)


async def test_async_send_with_callback_and_sync_wrapper(cluster: LocalCluster) -> None:
    await create_topic(cluster, "AsyncSend", 4)
    got: list[tuple[object, object]] = []
    async with Producer("async-send", cluster.namesrv_addr) as producer:
        tasks = [
            producer.send_async(Message("AsyncSend", f"a{i}".encode()), lambda r, e: got.append((r, e)))
            for i in range(20)
        ]
        results = await asyncio.gather(*tasks)
    assert len({r.msg_id for r in results}) == 20
    assert len(got) == 20 and all(e is None and r is not None for r, e in got)
    sync = SyncProducer("async-send-sync", cluster.namesrv_addr)
    sync.start()
    try:
        futures = [sync.send_async(Message("AsyncSend", b"s")) for _ in range(5)]
        assert all(f.result(10).status is SendStatus.SEND_OK for f in futures)
    finally:
        sync.shutdown()


async def test_send_async_runs_no_task_per_send_and_every_message_arrives(cluster: LocalCluster) -> None:
    topic = name("AsyncWindow")
    await create_topic(cluster, topic, 4)
    async with Producer(name("pg"), cluster.namesrv_addr) as producer:
        await producer.send(Message(topic, b"warm-up"))  # route and connections known from here on
        tasks_before = len(asyncio.all_tasks())
        got: list[tuple[SendResult | None, BaseException | None]] = []
        futures = [
            producer.send_async(
                Message(topic, f"w{i}".encode(), tags="T", keys=[f"k{i}"], properties={"p": 'q"\\é'}),
                lambda r, e: got.append((r, e)),
            )
            for i in range(500)
        ]
        assert len(asyncio.all_tasks()) == tasks_before, "no task per send once the route and connection are known"
        assert not any(isinstance(f, asyncio.Task) for f in futures)
        results = await asyncio.gather(*futures)
    assert len(got) == 500 and all(e is None and r is not None for r, e in got)
    assert all(r.status is SendStatus.SEND_OK for r in results)
    assert len({r.msg_id for r in results}) == 500
    assert {r.queue.broker_name for r in results} == {b.broker_name for b in cluster.brokers if b.broker_id == 0}
    with SyncPullConsumer(name("pull"), cluster.namesrv_addr) as pc:
        pulled = [m for q in pc.fetch_queues(topic) for m in pc.pull(q, "*", 0, 1000).messages]
    by_body = {m.body: m for m in pulled}
    assert set(by_body) == {b"warm-up"} | {f"w{i}".encode() for i in range(500)}
    m7 = by_body[b"w7"]
    assert m7.tags == "T" and m7.keys == ["k7"] and m7.properties["p"] == 'q"\\é'
    assert m7.msg_id in {r.msg_id for r in results}


async def test_send_async_fails_over_to_another_broker_and_reports_refusals(cluster: LocalCluster) -> None:
    topic = name("AsyncFailover")
    await create_topic(cluster, topic, 2)
    async with Producer(name("pg"), cluster.namesrv_addr, send_timeout=10.0) as producer:
        await asyncio.gather(*(producer.send(Message(topic, b"warm")) for _ in range(4)))  # both brokers' connections
        down = cluster.brokers[0]
        down.kill()
        results = await asyncio.gather(*(producer.send_async(Message(topic, f"f{i}".encode())) for i in range(20)))
        assert all(r.status is SendStatus.SEND_OK for r in results)
        assert {r.queue.broker_name for r in results} == {cluster.brokers[1].broker_name}
        errors: list[BaseException | None] = []
        refused = producer.send_async(Message(topic, b""), lambda r, e: errors.append(e))
        with pytest.raises(MessageIllegalError):
            await refused
        assert len(errors) == 1 and isinstance(errors[0], MessageIllegalError)


async def test_sends_in_flight_fail_when_the_producer_shuts_down(cluster: LocalCluster) -> None:
    topic = name("AsyncShutdown")
    await create_topic(cluster, topic, 2, brokers=[cluster.brokers[0].broker_name])
    producer = Producer(name("pg"), cluster.namesrv_addr, send_timeout=30.0)
    await producer.start()
    await producer.send(Message(topic, b"warm"))
    broker_pid = cluster.brokers[0].pid
    assert broker_pid is not None
    os.kill(broker_pid, signal.SIGSTOP)  # the broker answers nothing meanwhile
    try:
        errors: list[BaseException | None] = []
        futures = [producer.send_async(Message(topic, b"x"), lambda r, e: errors.append(e)) for _ in range(10)]
        awaited = asyncio.ensure_future(producer.send(Message(topic, b"y")))
        await asyncio.sleep(0.2)
        await producer.shutdown()
        outcomes = await asyncio.wait_for(asyncio.gather(*futures, awaited, return_exceptions=True), 10.0)
    finally:
        os.kill(broker_pid, signal.SIGCONT)
    assert all(isinstance(o, KrocketError) for o in outcomes), outcomes
    assert len(errors) == 10 and all(isinstance(e, KrocketError) for e in errors)
