"""The push consumer's consume service: pulled messages to the listener, offsets committed after success.

Like RocketMQ's ConsumeMessageConcurrentlyService: messages are handed to the listener in batches of
``consume_batch_size`` (sync listeners in a thread pool, ``async def`` listeners as tasks), ``consume_threads``
at a time. After success the queue's offset moves up to the smallest message still in the process queue.
RECONSUME_LATER (or an exception) sends each message of the batch back to its broker (CONSUMER_SEND_MSG_BACK,
36), which redelivers it later through the group's retry topic or moves it to the dead-letter queue; a message sent
back is done here, so the offset moves on and a failing message never blocks the ones behind it. Only a message
whose send-back fails (or every failed message, when the consumer gives no ``send_back``: broadcasting) is retried
locally after a growing delay. A message redelivered from the retry topic gets its first topic back
(``RETRY_TOPIC``) before the listener sees it, as RocketMQ's clients do.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from krocket.common.errors import KrocketError
from krocket.common.message import PROPERTY_RETRY_TOPIC, MessageExt
from krocket.common.topic import retry_topic

from .offset_store import OffsetStore
from .process_queue import ProcessQueue
from .throttle import LogThrottle
from .types import ConsumeStatus, MessageQueue

log = logging.getLogger(__name__)

Listener = Callable[[list[MessageExt]], "ConsumeStatus | None | Awaitable[ConsumeStatus | None]"]
# Hands one failed message of a queue back to its broker; raises KrocketError (or OSError) when that fails.
SendBack = Callable[[MessageQueue, MessageExt], Awaitable[None]]

MAX_RECONSUME_DELAY_S = 60.0


class ConsumeSettings(Protocol):
    """The consumer settings the service reads (each time it needs them)."""

    group: str
    consume_threads: int
    consume_batch_size: int
    reconsume_delay: float


class ConsumeConcurrentlyService:
    """Runs the listener on pulled messages, retries failures locally, commits offsets after success."""

    def __init__(
        self,
        settings: ConsumeSettings,
        listener: Listener,
        store: OffsetStore,
        throttle: LogThrottle,
        send_back: SendBack | None = None,
    ) -> None:
        self.settings = settings
        self.send_back = send_back
        self.listener = listener
        self.store = store
        self._throttle = throttle
        self._executor: ThreadPoolExecutor | None = None
        if not inspect.iscoroutinefunction(listener):
            self._executor = ThreadPoolExecutor(
                settings.consume_threads, thread_name_prefix=f"consume-{settings.group}"
            )
        self._slots = asyncio.Semaphore(settings.consume_threads)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, mq: MessageQueue, pq: ProcessQueue, messages: list[MessageExt]) -> None:
        """Consume ``messages`` (already put into ``pq``) in tasks of ``consume_batch_size`` messages."""
        loop = asyncio.get_running_loop()
        size = self.settings.consume_batch_size
        for i in range(0, len(messages), size):
            task = loop.create_task(self._consume(mq, pq, messages[i : i + size]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the listeners running now; cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Stop the thread pool of a plain-function listener (without waiting for its threads)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _consume(self, mq: MessageQueue, pq: ProcessQueue, messages: list[MessageExt]) -> None:
        restore_retry_topics(messages, self.settings.group)
        attempt = 0
        pending = messages
        while not pq.dropped:
            async with self._slots:
                if pq.dropped:
                    return
                ok = await self._call_listener(pending)
            if ok:
                self._done(mq, pq, pending)
                return
            if self.send_back is not None:
                sent = await self._send_back_each(mq, pending)
                if sent:
                    self._done(mq, pq, sent)
                    pending = [m for m in pending if not any(m is s for s in sent)]
                if not pending:
                    return
            attempt += 1
            for msg in pending:
                msg.reconsume_times += 1
            await asyncio.sleep(min(self.settings.reconsume_delay * 2 ** min(attempt - 1, 6), MAX_RECONSUME_DELAY_S))

    def _done(self, mq: MessageQueue, pq: ProcessQueue, messages: list[MessageExt]) -> None:
        offset = pq.remove(messages)
        if offset >= 0 and not pq.dropped:
            self.store.update(mq, offset, increase_only=True)

    async def _send_back_each(self, mq: MessageQueue, messages: list[MessageExt]) -> list[MessageExt]:
        """The messages the broker took back; the others stay for a local retry."""
        assert self.send_back is not None
        sent: list[MessageExt] = []
        for msg in messages:
            try:
                await self.send_back(mq, msg)
            except (KrocketError, OSError, TimeoutError) as exc:
                if self._throttle(("send_back", mq.broker_name)):
                    log.warning(
                        "consumer %s: could not send message %s back to broker %s (%s); retrying it here",
                        self.settings.group,
                        msg.msg_id,
                        mq.broker_name,
                        exc,
                    )
                continue
            sent.append(msg)
        return sent

    async def _call_listener(self, messages: list[MessageExt]) -> bool:
        status = await call_listener(self.listener, messages, self._executor)
        if isinstance(status, Exception):
            if self._throttle(("listener", type(status))):
                log.warning(
                    "consumer %s: listener raised %s: %s; will retry",
                    self.settings.group,
                    type(status).__name__,
                    status,
                )
            return False
        return status is not ConsumeStatus.RECONSUME_LATER


async def call_listener(
    listener: Callable[[list[MessageExt]], object], messages: list[MessageExt], executor: ThreadPoolExecutor | None
) -> object:
    """What the listener returned, or the exception it raised: an async listener runs on the loop, a plain one
    on ``executor`` (both consume services)."""
    try:
        if executor is None:
            return await listener(messages)  # type: ignore[misc]
        return await asyncio.get_running_loop().run_in_executor(executor, listener, messages)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return exc


def restore_retry_topics(messages: list[MessageExt], group: str) -> None:
    """A message redelivered from ``%RETRY%<group>`` shows the listener the topic it was first sent to."""
    retry = retry_topic(group)
    for msg in messages:
        if msg.topic == retry:
            first = msg.properties.get(PROPERTY_RETRY_TOPIC)
            if first:
                msg.topic = first
