"""ConsumeOrderlyService in-process: one batch at a time per queue in offset order, only while locked, a failing
batch suspends its queue and comes again, offsets only after success, a drop waits for the batch in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from krocket.client.consume_orderly import (
    ConsumeOrderlyService,
    DeadLetter,
    OrderlyListener,
    OrderlyStatus,
    succeeded,
)
from krocket.client.offset_store import RemoteBrokerOffsetStore
from krocket.client.process_queue import ProcessQueue
from krocket.client.throttle import LogThrottle
from krocket.client.types import ConsumeStatus, MessageQueue
from krocket.common.errors import KrocketError
from krocket.common.message import MessageExt

MQ = MessageQueue("T", "broker-a", 0)
MQ2 = MessageQueue("T", "broker-a", 1)


@dataclass
class Settings:
    group: str = "cg"
    consume_threads: int = 4
    consume_batch_size: int = 2
    max_reconsume_times: int = 2


@dataclass
class FakeLocks:
    locked: set[MessageQueue] = field(default_factory=lambda: {MQ, MQ2})

    def is_locked(self, mq: MessageQueue) -> bool:
        return mq in self.locked


def msg(offset: int, queue_id: int = 0) -> MessageExt:
    return MessageExt("T", b"x", {}, queue_id, offset, 0, 0, 0, 0, 0, "", 0, "", 0, "")


def store() -> RemoteBrokerOffsetStore:
    async def query(mq: MessageQueue) -> int:
        return -1

    async def commit(mq: MessageQueue, offset: int) -> None:
        pass

    return RemoteBrokerOffsetStore(query, commit)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def service(
    listener: OrderlyListener,
    locks: FakeLocks | None = None,
    dead_letter: DeadLetter | None = None,
    settings: Settings | None = None,
) -> ConsumeOrderlyService:
    return ConsumeOrderlyService(
        settings or Settings(), listener, store(), locks or FakeLocks(), LogThrottle(), 0.05, dead_letter
    )


def feed(svc: ConsumeOrderlyService, mq: MessageQueue, pq: ProcessQueue, offsets: range) -> None:
    messages = [msg(o, mq.queue_id) for o in offsets]
    pq.put(messages)
    svc.submit(mq, pq, messages)


async def test_batches_come_one_at_a_time_per_queue_in_offset_order() -> None:
    seen: dict[int, list[list[int]]] = {0: [], 1: []}
    running: set[int] = set()
    overlaps = 0

    async def listener(messages: list[MessageExt]) -> OrderlyStatus:
        nonlocal overlaps
        qid = messages[0].queue_id
        overlaps += qid in running
        running.add(qid)
        await asyncio.sleep(0.002)
        running.discard(qid)
        seen[qid].append([m.queue_offset for m in messages])
        return OrderlyStatus.SUCCESS

    svc = service(listener)
    pq, pq2 = ProcessQueue(), ProcessQueue()
    feed(svc, MQ, pq, range(0, 5))
    feed(svc, MQ2, pq2, range(0, 3))
    feed(svc, MQ, pq, range(5, 9))  # a second pull while the first is being consumed
    await wait_for(lambda: pq.count == 0 and pq2.count == 0)
    assert seen[0] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    assert seen[1] == [[0, 1], [2]]
    assert overlaps == 0
    assert svc.store.read(MQ) == 9 and svc.store.read(MQ2) == 3


async def test_a_suspended_batch_comes_again_before_the_rest_and_the_offset_waits() -> None:
    attempts: list[tuple[list[int], int]] = []
    offsets_seen: list[int] = []
    svc: ConsumeOrderlyService

    def listener(messages: list[MessageExt]) -> OrderlyStatus:
        offsets_seen.append(svc.store.read(MQ))
        attempts.append(([m.queue_offset for m in messages], messages[0].reconsume_times))
        if messages[0].queue_offset == 2 and messages[0].reconsume_times < 2:
            return OrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
        return OrderlyStatus.SUCCESS

    svc = service(listener)
    pq = ProcessQueue()
    feed(svc, MQ, pq, range(0, 6))
    await wait_for(lambda: pq.count == 0)
    assert attempts == [([0, 1], 0), ([2, 3], 0), ([2, 3], 1), ([2, 3], 2), ([4, 5], 0)]
    assert offsets_seen[1:4] == [2, 2, 2]  # the offset did not move past the failing batch
    assert svc.store.read(MQ) == 6
    svc.close()


async def test_a_raising_listener_suspends_like_suspend() -> None:
    calls = 0

    async def listener(messages: list[MessageExt]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")

    svc = service(listener)
    pq = ProcessQueue()
    feed(svc, MQ, pq, range(0, 2))
    await wait_for(lambda: pq.count == 0)
    assert calls == 2 and svc.store.read(MQ) == 2


async def test_nothing_is_consumed_until_the_queue_is_locked() -> None:
    seen: list[int] = []

    async def listener(messages: list[MessageExt]) -> OrderlyStatus:
        seen.extend(m.queue_offset for m in messages)
        return OrderlyStatus.SUCCESS

    locks = FakeLocks(locked=set())
    svc = service(listener, locks)
    pq = ProcessQueue()
    feed(svc, MQ, pq, range(0, 2))
    await asyncio.sleep(0.3)
    assert seen == [] and svc.store.read(MQ) == -1
    locks.locked.add(MQ)
    await wait_for(lambda: seen == [0, 1])


async def test_quiesce_lets_the_batch_in_flight_finish_and_commit() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[int] = []

    async def listener(messages: list[MessageExt]) -> OrderlyStatus:
        started.set()
        await release.wait()
        seen.extend(m.queue_offset for m in messages)
        return OrderlyStatus.SUCCESS

    svc = service(listener)
    pq = ProcessQueue()
    feed(svc, MQ, pq, range(0, 4))
    await started.wait()
    pq.dropped = True  # the rebalance drops the queue while [0, 1] is being consumed
    quiesced = asyncio.create_task(svc.quiesce(MQ))
    await asyncio.sleep(0.05)
    assert not quiesced.done()
    release.set()
    await quiesced
    assert seen == [0, 1] and svc.store.read(MQ) == 2  # committed; [2, 3] left for the next owner


def test_success_statuses() -> None:
    assert succeeded(None) and succeeded(OrderlyStatus.SUCCESS) and succeeded(ConsumeStatus.SUCCESS)
    assert not succeeded(OrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT) and not succeeded(ConsumeStatus.RECONSUME_LATER)


async def test_a_message_out_of_retries_is_dead_lettered_and_its_queue_moves_on() -> None:
    attempts: list[tuple[int, int]] = []
    dead: list[int] = []
    refusals = 1  # the first dead-letter attempt fails: the message is retried once more

    async def listener(messages: list[MessageExt]) -> OrderlyStatus:
        attempts.extend((m.queue_offset, m.reconsume_times) for m in messages)
        if messages[0].queue_offset == 1:
            return OrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
        return OrderlyStatus.SUCCESS

    async def dead_letter(mq: MessageQueue, m: MessageExt) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise KrocketError("broker gone")
        dead.append(m.queue_offset)

    svc = service(listener, dead_letter=dead_letter, settings=Settings(consume_batch_size=1))
    pq = ProcessQueue()
    feed(svc, MQ, pq, range(1, 4))
    await wait_for(lambda: pq.count == 0)
    # 1 fails with reconsume times 0, 1, 2 (= max: to the DLQ, refused), 3 (to the DLQ); then 2 and 3, in order
    assert dead == [1]
    assert attempts == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (3, 0)]
    assert svc.store.read(MQ) == 4
