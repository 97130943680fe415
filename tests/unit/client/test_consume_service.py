"""ConsumeConcurrentlyService in-process: fake listeners returning SUCCESS / RECONSUME_LATER or raising."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from krocket.client.consume_service import ConsumeConcurrentlyService, Listener
from krocket.client.offset_store import RemoteBrokerOffsetStore
from krocket.client.process_queue import ProcessQueue
from krocket.client.throttle import LogThrottle
from krocket.client.types import ConsumeStatus, MessageQueue
from krocket.common.message import MessageExt

MQ = MessageQueue("T", "broker-a", 0)


@dataclass
class Settings:
    group: str = "cg"
    consume_threads: int = 4
    consume_batch_size: int = 1
    reconsume_delay: float = 0.01


def msg(offset: int) -> MessageExt:
    return MessageExt("T", b"x", {}, 0, offset, 0, 0, 0, 0, 0, "", 0, "", 0, "")


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


def service(listener: Listener, settings: Settings | None = None) -> tuple[ConsumeConcurrentlyService, ProcessQueue]:
    return ConsumeConcurrentlyService(settings or Settings(), listener, store(), LogThrottle()), ProcessQueue()


async def test_success_moves_the_offset_past_the_consumed_messages() -> None:
    seen: list[int] = []

    def listener(messages: list[MessageExt]) -> ConsumeStatus:
        seen.extend(m.queue_offset for m in messages)
        return ConsumeStatus.SUCCESS

    svc, pq = service(listener)
    batch = [msg(i) for i in range(5)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 0)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert svc.store.read(MQ) == 5
    svc.close()


async def test_the_offset_stops_at_a_message_still_being_retried() -> None:
    def listener(messages: list[MessageExt]) -> ConsumeStatus | None:
        return ConsumeStatus.RECONSUME_LATER if messages[0].queue_offset == 1 else None  # None counts as SUCCESS

    svc, pq = service(listener)
    batch = [msg(i) for i in range(4)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 1 and batch[1].reconsume_times >= 2)
    assert svc.store.read(MQ) == 1  # offsets 2 and 3 are done, 1 is not: commit no further than 1
    assert [m.reconsume_times for m in (batch[0], batch[2], batch[3])] == [0, 0, 0]
    pq.dropped = True  # a rebalance took the queue away: the retries stop
    await svc.drain(1.0)
    assert not svc._tasks
    svc.close()


async def test_a_raising_listener_is_retried_until_it_succeeds() -> None:
    calls: list[int] = []

    async def listener(messages: list[MessageExt]) -> ConsumeStatus:
        calls.append(messages[0].reconsume_times)
        if len(calls) < 3:
            raise RuntimeError("not yet")
        return ConsumeStatus.SUCCESS

    svc, pq = service(listener)
    batch = [msg(7)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 0)
    assert calls == [0, 1, 2]
    assert svc.store.read(MQ) == 8


async def test_batches_of_consume_batch_size_and_where_listeners_run() -> None:
    batches: list[list[int]] = []
    threads: set[str] = set()

    def listener(messages: list[MessageExt]) -> None:
        batches.append([m.queue_offset for m in messages])
        threads.add(threading.current_thread().name)

    svc, pq = service(listener, Settings(consume_batch_size=2))
    batch = [msg(i) for i in range(5)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 0)
    assert sorted(batches) == [[0, 1], [2, 3], [4]]
    assert all(name.startswith("consume-cg") for name in threads)  # a plain function runs in the thread pool
    svc.close()


async def test_drain_cancels_listeners_that_run_too_long() -> None:
    release = asyncio.Event()

    async def listener(messages: list[MessageExt]) -> ConsumeStatus:
        await release.wait()
        return ConsumeStatus.SUCCESS

    svc, pq = service(listener)
    batch = [msg(0)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await asyncio.sleep(0.01)
    await svc.drain(0.05)
    assert not svc._tasks and pq.count == 1 and svc.store.read(MQ) == -1


async def test_at_most_consume_threads_listeners_at_once() -> None:
    running = 0
    peak = 0

    async def listener(messages: list[MessageExt]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    svc, pq = service(listener, Settings(consume_threads=3))
    batch = [msg(i) for i in range(12)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 0)
    assert peak == 3
