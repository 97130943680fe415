"""The push consumer's consume service: pulled messages to the listener, offsets committed after success.

Like RocketMQ's ConsumeMessageConcurrentlyService: messages are handed to the listener in batches of
``consume_batch_size`` (sync listeners in a thread pool, ``async def`` listeners as tasks), ``consume_threads``
at a time. After success the queue's offset moves up to the smallest message still in the process queue.
RECONSUME_LATER (or an exception) retries the messages locally after a growing delay; they are not sent back
to the broker's retry topic. There is no orderly service: listeners of one queue may run concurrently.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from krocket.common.message import MessageExt

from .offset_store import OffsetStore
from .process_queue import ProcessQueue
from .throttle import LogThrottle
from .types import ConsumeStatus, MessageQueue

log = logging.getLogger(__name__)

Listener = Callable[[list[MessageExt]], "ConsumeStatus | None | Awaitable[ConsumeStatus | None]"]

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
        self, settings: ConsumeSettings, listener: Listener, store: OffsetStore, throttle: LogThrottle
    ) -> None:
        self.settings = settings
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
        attempt = 0
        while not pq.dropped:
            async with self._slots:
                if pq.dropped:
                    return
                ok = await self._call_listener(messages)
            if ok:
                offset = pq.remove(messages)
                if offset >= 0 and not pq.dropped:
                    self.store.update(mq, offset, increase_only=True)
                return
            attempt += 1
            for msg in messages:
                msg.reconsume_times += 1
            await asyncio.sleep(min(self.settings.reconsume_delay * 2 ** min(attempt - 1, 6), MAX_RECONSUME_DELAY_S))

    async def _call_listener(self, messages: list[MessageExt]) -> bool:
        listener = self.listener
        try:
            if self._executor is None:
                status = await listener(messages)  # type: ignore[misc]
            else:
                status = await asyncio.get_running_loop().run_in_executor(self._executor, listener, messages)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._throttle(("listener", type(exc))):
                log.warning(
                    "consumer %s: listener raised %s: %s; will retry", self.settings.group, type(exc).__name__, exc
                )
            return False
        return status is not ConsumeStatus.RECONSUME_LATER
