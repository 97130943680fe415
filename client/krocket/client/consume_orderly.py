"""Orderly consumption for the push consumer: queue locks (LOCK_BATCH_MQ 41 / UNLOCK_BATCH_MQ 42) and the
orderly consume service, like RocketMQ's ConsumeMessageOrderlyService and RebalanceImpl's lock/unlock.

- A queue is pulled only once the broker granted this client its lock (the rebalance asks before pulling) and
  consumed only while the lock is younger than ``LOCK_VALID_S``; ``QueueLocks.renew_loop`` renews every
  ``LOCK_RENEW_S``.
- One batch at a time per queue, in queue offset order; the offset moves only after the batch succeeded.
- A failing batch (SUSPEND_CURRENT_QUEUE_A_MOMENT, RECONSUME_LATER or an exception) suspends that queue for
  ``suspend_s`` and is retried locally, with ``reconsume_times`` counted up. A message that failed again after
  ``max_reconsume_times`` retries goes to the group's DLQ (send-back, CONSUMER_SEND_MSG_BACK with delay level -1)
  when the consumer gives a ``dead_letter`` (clustering), and its queue moves on; while that fails it is retried.
- A queue leaving this consumer (rebalance, shutdown) stops consuming, its offset is committed, then it is
  unlocked, so the next owner starts right after the last consumed message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from krocket.common.codes import RequestCode
from krocket.common.errors import KrocketError
from krocket.common.lock_body import LockBatchRequest, LockedQueue, parse_lock_ok_body
from krocket.common.message import MessageExt
from krocket.common.remoting import ConnectionPool

from . import broker_api
from .consume_service import call_listener
from .instance import ClientInstance
from .offset_store import OffsetStore
from .process_queue import ProcessQueue
from .throttle import LogThrottle
from .types import ConsumeStatus, MessageQueue

log = logging.getLogger(__name__)

LOCK_RENEW_S = 20.0  # RocketMQ's rebalance lock interval
LOCK_VALID_S = 30.0  # a lock older than this (not renewed) is not trusted: its queue is not consumed
SUSPEND_S = 1.0  # suspendCurrentQueueTimeMillis
LOCK_WAIT_S = 0.1  # how often a queue whose lock is not valid looks again


class OrderlyStatus(enum.Enum):
    """What an orderly listener returns (RocketMQ's ConsumeOrderlyStatus)."""

    SUCCESS = "SUCCESS"
    SUSPEND_CURRENT_QUEUE_A_MOMENT = "SUSPEND_CURRENT_QUEUE_A_MOMENT"


OrderlyResult = OrderlyStatus | ConsumeStatus | None
OrderlyListener = Callable[[list[MessageExt]], "OrderlyResult | Awaitable[OrderlyResult]"]


def succeeded(status: object) -> bool:
    """SUCCESS (either enum) or None is success; anything else suspends the queue."""
    return status is None or status is OrderlyStatus.SUCCESS or status is ConsumeStatus.SUCCESS


def _locked_queue(mq: MessageQueue) -> LockedQueue:
    return LockedQueue(mq.topic, mq.broker_name, mq.queue_id)


async def lock_batch(
    pool: ConnectionPool, addr: str, group: str, client_id: str, queues: Sequence[MessageQueue], timeout: float = 3.0
) -> set[MessageQueue]:
    """LOCK_BATCH_MQ: the queues the broker granted (or renewed) to ``client_id``."""
    body = LockBatchRequest(group, client_id, [_locked_queue(mq) for mq in queues]).to_body()
    response = await broker_api.invoke(pool, addr, RequestCode.LOCK_BATCH_MQ, body=body, timeout=timeout)
    return {MessageQueue(q.topic, q.broker_name, q.queue_id) for q in parse_lock_ok_body(response.body)}


async def unlock_batch(
    pool: ConnectionPool, addr: str, group: str, client_id: str, queues: Sequence[MessageQueue], timeout: float = 3.0
) -> None:
    body = LockBatchRequest(group, client_id, [_locked_queue(mq) for mq in queues]).to_body()
    await broker_api.invoke(pool, addr, RequestCode.UNLOCK_BATCH_MQ, body=body, timeout=timeout)


def _by_broker(queues: Iterable[MessageQueue]) -> dict[str, list[MessageQueue]]:
    out: dict[str, list[MessageQueue]] = {}
    for mq in sorted(queues):
        out.setdefault(mq.broker_name, []).append(mq)
    return out


class QueueLocks:
    """The broker locks this client holds for its group, with the time each was last granted."""

    def __init__(self, group: str, instance: ClientInstance, throttle: LogThrottle) -> None:
        self.group = group
        self.instance = instance
        self._throttle = throttle
        self._granted_at: dict[MessageQueue, float] = {}

    def is_locked(self, mq: MessageQueue) -> bool:
        granted = self._granted_at.get(mq)
        return granted is not None and time.monotonic() - granted < LOCK_VALID_S

    @property
    def held(self) -> list[MessageQueue]:
        return sorted(self._granted_at)

    async def lock(self, queues: Iterable[MessageQueue]) -> set[MessageQueue]:
        """Ask each queue's master for its lock; the queues granted. A refused one is no longer held."""
        granted: set[MessageQueue] = set()
        for broker_name, mqs in _by_broker(queues).items():
            addr = self.instance.broker_addr(broker_name, only_this=True)
            try:
                if addr is None:
                    raise KrocketError(f"broker {broker_name} has no master in the route")
                ok = await lock_batch(self.instance.pool, addr, self.group, self.instance.client_id, mqs)
            except KrocketError as exc:
                if self._throttle(("lock", broker_name)):
                    log.warning("consumer %s: cannot lock queues on %s: %s", self.group, broker_name, exc)
                continue  # keep what we had: it stays valid until it is too old
            now = time.monotonic()
            for mq in mqs:
                if mq in ok:
                    self._granted_at[mq] = now
                    granted.add(mq)
                else:
                    self._granted_at.pop(mq, None)
        return granted

    async def unlock(self, queues: Iterable[MessageQueue]) -> None:
        for broker_name, mqs in _by_broker(queues).items():
            for mq in mqs:
                self._granted_at.pop(mq, None)
            addr = self.instance.broker_addr(broker_name, only_this=True)
            if addr is None:
                continue
            try:
                await unlock_batch(self.instance.pool, addr, self.group, self.instance.client_id, mqs)
            except KrocketError as exc:
                log.warning("consumer %s: cannot unlock queues on %s (they expire): %s", self.group, broker_name, exc)

    async def renew_loop(self, owned: Callable[[], Iterable[MessageQueue]], period: float = LOCK_RENEW_S) -> None:
        """Renew the locks of the queues this consumer owns every ``period`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(KrocketError):
                await self.lock(owned())


class LockView(Protocol):
    """Whether this client's lock on a queue is valid now (``QueueLocks``)."""

    def is_locked(self, mq: MessageQueue) -> bool: ...


class OrderlySettings(Protocol):
    group: str
    consume_threads: int
    consume_batch_size: int

    @property
    def max_reconsume_times(self) -> int: ...


DeadLetter = Callable[[MessageQueue, MessageExt], Awaitable[None]]


class ConsumeOrderlyService:
    """One consume task per queue with messages, batch after batch in offset order, while its lock is valid."""

    def __init__(
        self,
        settings: OrderlySettings,
        listener: OrderlyListener,
        store: OffsetStore,
        locks: LockView,
        throttle: LogThrottle,
        suspend_s: float = SUSPEND_S,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letter = dead_letter
        self.listener = listener
        self.store = store
        self.locks = locks
        self.suspend_s = suspend_s
        self._throttle = throttle
        self._executor: ThreadPoolExecutor | None = None
        if not inspect.iscoroutinefunction(listener):
            self._executor = ThreadPoolExecutor(
                settings.consume_threads, thread_name_prefix=f"orderly-{settings.group}"
            )
        self._slots = asyncio.Semaphore(settings.consume_threads)
        self._workers: dict[MessageQueue, asyncio.Task[None]] = {}

    def submit(self, mq: MessageQueue, pq: ProcessQueue, messages: list[MessageExt]) -> None:
        """Messages were put into ``pq``: make sure the queue's consume task runs (one per queue)."""
        task = self._workers.get(mq)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._run(mq, pq), name=f"orderly-{mq}")
            self._workers[mq] = task

    async def quiesce(self, mq: MessageQueue, timeout: float = 10.0) -> None:
        """Wait for the batch of ``mq`` in flight (its process queue is dropped already); cancel after ``timeout``."""
        task = self._workers.pop(mq, None)
        if task is None or task.done():
            return
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def drain(self, timeout: float) -> None:
        tasks = list(self._workers.values())
        self._workers.clear()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _run(self, mq: MessageQueue, pq: ProcessQueue) -> None:
        size = max(1, self.settings.consume_batch_size)
        while not pq.dropped:
            if not self.locks.is_locked(mq):
                await asyncio.sleep(LOCK_WAIT_S)
                continue
            batch = pq.held()[:size]
            if not batch:
                return
            async with self._slots:
                if pq.dropped or not self.locks.is_locked(mq):
                    continue
                ok = await self._call_listener(batch)
            if ok:
                # Committed even when the queue was dropped meanwhile: the drop persists it before unlocking.
                offset = pq.remove(batch)
                if offset >= 0:
                    self.store.update(mq, offset, increase_only=True)
                continue
            gone = await self._dead_letter_exhausted(mq, batch)
            if gone:
                offset = pq.remove(gone)
                if offset >= 0:
                    self.store.update(mq, offset, increase_only=True)
            for msg in batch:
                if msg not in gone:
                    msg.reconsume_times += 1
            if len(gone) < len(batch):
                await asyncio.sleep(self.suspend_s)

    async def _dead_letter_exhausted(self, mq: MessageQueue, batch: list[MessageExt]) -> list[MessageExt]:
        """Sends the messages out of retries to the DLQ; the ones the broker took."""
        if self.dead_letter is None:
            return []
        gone: list[MessageExt] = []
        for msg in batch:
            if msg.reconsume_times < self.settings.max_reconsume_times:
                continue
            try:
                await self.dead_letter(mq, msg)
            except KrocketError as exc:
                if self._throttle(("orderly-dlq", mq)):
                    log.warning(
                        "consumer %s: cannot dead-letter %s of %s, retrying it: %s",
                        self.settings.group,
                        msg.msg_id,
                        mq,
                        exc,
                    )
                continue
            gone.append(msg)
        return gone

    async def _call_listener(self, messages: list[MessageExt]) -> bool:
        status = await call_listener(self.listener, messages, self._executor)
        if isinstance(status, Exception):
            if self._throttle(("orderly-listener", type(status))):
                log.warning(
                    "consumer %s: orderly listener raised %s: %s; suspending the queue",
                    self.settings.group,
                    type(status).__name__,
                    status,
                )
            return False
        return succeeded(status)


class OrderlyQueueLocking:
    """What the rebalance needs of orderly consumption: lock queues before pulling them; on a drop, wait for
    the batch in flight (before the offset is committed) and unlock (after)."""

    def __init__(self, locks: QueueLocks, service: ConsumeOrderlyService) -> None:
        self.locks = locks
        self.service = service

    async def lock(self, queues: Sequence[MessageQueue]) -> set[MessageQueue]:
        return await self.locks.lock(queues)

    async def quiesce(self, mq: MessageQueue) -> None:
        await self.service.quiesce(mq)

    async def unlock(self, queues: Sequence[MessageQueue]) -> None:
        await self.locks.unlock(queues)
