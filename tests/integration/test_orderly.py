"""Orderly consumption against real processes: keys sent to queues with a selector, krocket orderly consumers
of one group that rebalance (one joins mid-way, one leaves); per key every message consumed once, in send order."""

from __future__ import annotations

import asyncio
import collections
import uuid

from krocket.client import Message, MessageExt, Producer, PushConsumer, select_by_hash
from krocket.client.consume_orderly import OrderlyStatus
from krocket.common.codes import RequestCode
from krocket.common.lock_body import LockBatchRequest, LockedQueue, parse_lock_ok_body
from krocket.common.remoting import ConnectionPool, RemotingCommand

from tests.support.cluster import LocalCluster, create_topic, wait_until_async

KEYS = 8
PER_KEY = 45


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class OrderLog:
    """Every consumption, in the order the listeners ran (async listeners: one event loop, one order)."""

    def __init__(self) -> None:
        self.consumed: list[tuple[str, str, int]] = []  # (consumer, key, seq)
        self.in_flight: set[str] = set()  # queues with a batch being consumed, to catch two at once
        self.overlaps = 0

    def listener(self, who: str):  # type: ignore[no-untyped-def]
        async def listen(msgs: list[MessageExt]) -> OrderlyStatus:
            queue = f"{msgs[0].topic}:{msgs[0].store_host}:{msgs[0].queue_id}"
            if queue in self.in_flight:
                self.overlaps += 1
            self.in_flight.add(queue)
            try:
                await asyncio.sleep(0.001)
                for m in msgs:
                    key, seq = m.body.decode().split(":")
                    self.consumed.append((who, key, int(seq)))
            finally:
                self.in_flight.discard(queue)
            return OrderlyStatus.SUCCESS

        return listen

    def by_key(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = collections.defaultdict(list)
        for _, key, seq in self.consumed:
            out[key].append(seq)
        return out


def orderly_consumer(group: str, cluster: LocalCluster, topic: str, log: OrderLog, who: str) -> PushConsumer:
    consumer = PushConsumer(group, cluster.namesrv_addr, consume_from="FIRST", rebalance_interval=1.0, orderly=True)
    consumer.subscribe(topic)
    consumer.register_orderly_listener(log.listener(who))
    return consumer


async def send_keys(producer: Producer, topic: str, seqs: range) -> None:
    for seq in seqs:
        for key in range(KEYS):
            await producer.send(Message(topic, f"k{key}:{seq}".encode(), keys=[f"k{key}"]), select_by_hash, key)


async def test_orderly_consumers_keep_send_order_per_key_across_a_join_and_a_leave(cluster: LocalCluster) -> None:
    topic, group = name("Ord"), name("ocg")
    await create_topic(cluster, topic)  # 4 queues on each of 2 brokers
    log = OrderLog()
    producer = Producer(name("opg"), cluster.namesrv_addr)
    await producer.start()
    first = orderly_consumer(group, cluster, topic, log, "first")
    second = orderly_consumer(group, cluster, topic, log, "second")
    try:
        await first.start()
        await wait_until_async(lambda: len(first.assigned_queues()) == 8, timeout=20, message="first owns 8 queues")
        await send_keys(producer, topic, range(0, 15))

        await second.start()  # joins while the first has messages in flight
        sending = asyncio.create_task(send_keys(producer, topic, range(15, 30)))
        await wait_until_async(
            lambda: len(second.assigned_queues()) == 4 and len(first.assigned_queues()) == 4,
            timeout=30,
            message="the queues split 4/4 (locks handed over)",
        )
        await sending
        await wait_until_async(lambda: len(log.consumed) >= KEYS * 30, timeout=30, message="the first 30 per key")
        assert {who for who, _, _ in log.consumed} == {"first", "second"}

        await first.shutdown()  # leaves: unlocks its queues after committing their offsets
        await send_keys(producer, topic, range(30, PER_KEY))
        await wait_until_async(
            lambda: len(log.consumed) >= KEYS * PER_KEY, timeout=40, message="every message consumed"
        )
        await asyncio.sleep(1.0)  # anything consumed twice would show now
    finally:
        await second.shutdown()
        await first.shutdown()
        await producer.shutdown()
    assert log.by_key() == {f"k{key}": list(range(PER_KEY)) for key in range(KEYS)}  # once each, in send order
    assert log.overlaps == 0


async def test_a_suspended_batch_is_retried_before_anything_behind_it(cluster: LocalCluster) -> None:
    topic, group = name("OrdSus"), name("ocg")
    await create_topic(cluster, topic, queues=1)  # one queue per broker; every message to the first
    seen: list[tuple[int, int]] = []  # (seq, reconsume_times)

    def listen(msgs: list[MessageExt]) -> OrderlyStatus:
        msg = msgs[0]
        seq = int(msg.body.decode())
        seen.append((seq, msg.reconsume_times))
        if seq == 2 and msg.reconsume_times < 2:
            return OrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
        return OrderlyStatus.SUCCESS

    consumer = PushConsumer(group, cluster.namesrv_addr, consume_from="FIRST", rebalance_interval=1.0)
    consumer.subscribe(topic)
    consumer.register_orderly_listener(listen)
    producer = Producer(name("opg"), cluster.namesrv_addr)
    await producer.start()
    try:
        for seq in range(5):
            await producer.send(Message(topic, str(seq).encode()), select_by_hash, 0)
        await consumer.start()
        await wait_until_async(lambda: len(seen) >= 7, timeout=30, message="5 messages, 2 retries")
    finally:
        await consumer.shutdown()
        await producer.shutdown()
    assert [s for s, _ in seen] == [0, 1, 2, 2, 2, 3, 4]
    assert [r for s, r in seen if s == 2] == [0, 1, 2]


async def test_a_queue_locked_by_a_consumer_is_refused_to_another_client_until_unlocked(
    cluster: LocalCluster,
) -> None:
    topic, group = name("OrdLock"), name("ocg")
    await create_topic(cluster, topic)
    log = OrderLog()
    consumer = orderly_consumer(group, cluster, topic, log, "only")
    pool = ConnectionPool()
    await consumer.start()
    try:
        await wait_until_async(lambda: len(consumer.assigned_queues()) == 8, timeout=20, message="8 queues locked")
        mq = consumer.assigned_queues()[0]
        addr = consumer._addr(mq, master_only=True)
        ask = LockBatchRequest(group, "intruder@1", [LockedQueue(mq.topic, mq.broker_name, mq.queue_id)])
        reply = await pool.request(addr, RemotingCommand(RequestCode.LOCK_BATCH_MQ, body=ask.to_body()), 3.0)
        assert parse_lock_ok_body(reply.body) == []
    finally:
        await consumer.shutdown()  # unlocks
    reply = await pool.request(addr, RemotingCommand(RequestCode.LOCK_BATCH_MQ, body=ask.to_body()), 3.0)
    assert parse_lock_ok_body(reply.body) == [LockedQueue(mq.topic, mq.broker_name, mq.queue_id)]
    await pool.close()


async def test_an_orderly_message_out_of_retries_goes_to_the_dlq_and_its_queue_moves_on(cluster: LocalCluster) -> None:
    from krocket.cli.dlq_commands import read_dead_letters

    topic, group = name("OrdDlq"), name("ocg")
    await create_topic(cluster, topic, queues=1)
    seen: list[tuple[int, int]] = []  # (seq, reconsume_times)

    def listen(msgs: list[MessageExt]) -> OrderlyStatus:
        seq = int(msgs[0].body.decode())
        seen.append((seq, msgs[0].reconsume_times))
        return OrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT if seq == 1 else OrderlyStatus.SUCCESS

    consumer = PushConsumer(group, cluster.namesrv_addr, consume_from="FIRST", max_reconsume_times=2, orderly=True)
    consumer.subscribe(topic)
    consumer.register_orderly_listener(listen)
    producer = Producer(name("opg"), cluster.namesrv_addr)
    await producer.start()
    try:
        poison = None
        for seq in range(4):
            result = await producer.send(Message(topic, str(seq).encode()), select_by_hash, 0)
            poison = result if seq == 1 else poison
        await consumer.start()
        await wait_until_async(lambda: len(seen) >= 6, timeout=30, message="4 messages, 2 local retries")
        letters: list[MessageExt] = []

        async def dead() -> bool:
            letters[:] = await read_dead_letters(group, cluster.namesrv_addr)
            return bool(letters)

        await wait_until_async(dead, timeout=20, message="the poison message in the DLQ")
    finally:
        await consumer.shutdown()
        await producer.shutdown()
    assert seen == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (3, 0)]  # retried in place, then the queue moved on
    assert poison is not None and [m.msg_id for m in letters] == [poison.msg_id]
