"""The push consumer's pull loops: one long-polling task per assigned queue, with flow control.

Like the pulling half of RocketMQ's DefaultMQPushConsumerImpl (PullMessageService): each task sends
PULL_MESSAGE with a 15 s suspend to the broker the last answer suggested, puts what it gets into the queue's
process queue and hands it to the consume service. It holds off while the process queue holds too much, and
after a failed pull it tries another member of the broker group (a slave while the master is down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from krocket.common.message import MessageExt
from krocket.common.record import UndecodableRecord

from . import broker_api
from .instance import ClientInstance
from .offset_store import OffsetStore
from .process_queue import ProcessQueue
from .subscription import SubscriptionData
from .throttle import LogThrottle
from .types import MessageModel, MessageQueue, PullStatus

log = logging.getLogger(__name__)

SUSPEND_MS = 15_000
PULL_DELAY_ON_ERROR_S = 3.0
FLOW_CONTROL_DELAY_S = 0.05
MAX_SPAN = 2000

Dispatch = Callable[[MessageQueue, ProcessQueue, list[MessageExt]], None]


class PullSettings(Protocol):
    """The consumer settings the pull loops read (each time they need them)."""

    group: str
    message_model: MessageModel
    pull_batch_size: int
    pull_threshold_for_queue: int
    pull_threshold_bytes: int
    suspend_ms: int


def flow_control_reason(pq: ProcessQueue, max_count: int, max_bytes: int) -> str | None:
    """Why the queue must not be pulled now (too many messages, bytes or too wide an offset span), or None."""
    if pq.count > max_count:
        return f"{pq.count} messages held"
    if pq.bytes > max_bytes:
        return f"{pq.bytes // (1024 * 1024)} MiB held"
    if pq.max_span > MAX_SPAN:
        return f"offset span {pq.max_span}"
    return None


class PullService:
    """The pull tasks of a push consumer's assigned queues."""

    def __init__(
        self,
        settings: PullSettings,
        instance: ClientInstance,
        store: OffsetStore,
        subscriptions: Mapping[str, SubscriptionData],
        dispatch: Dispatch,
        throttle: LogThrottle,
    ) -> None:
        self.settings = settings
        self.instance = instance
        self.store = store
        self.subscriptions = subscriptions
        self.dispatch = dispatch
        self._throttle = throttle
        self._tasks: dict[MessageQueue, asyncio.Task[None]] = {}
        self._pull_from: dict[MessageQueue, int] = {}
        self.undecodable_records = 0  # records skipped because they could not be decoded

    def skip_undecodable(self, mq: MessageQueue, bad: UndecodableRecord) -> None:
        """A record that cannot be decoded: one WARNING, counted, and the queue moves past it."""
        self.undecodable_records += 1
        log.warning(
            "consumer %s: skipping the record at offset %d of %s (commit log offset %d), it cannot be decoded: %s",
            self.settings.group,
            bad.queue_offset,
            mq,
            bad.commit_log_offset,
            bad.reason,
        )

    def start(self, mq: MessageQueue, pq: ProcessQueue, offset: int) -> None:
        """Pull ``mq`` from ``offset`` into ``pq`` until ``pq`` is dropped or the task is stopped."""
        self._tasks[mq] = asyncio.get_running_loop().create_task(self._pull_loop(mq, pq, offset), name=f"pull-{mq}")

    def stop(self, mq: MessageQueue) -> None:
        task = self._tasks.pop(mq, None)
        if task is not None:
            task.cancel()

    async def stop_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def flow_controlled(self, mq: MessageQueue, pq: ProcessQueue) -> bool:
        s = self.settings
        reason = flow_control_reason(pq, s.pull_threshold_for_queue, s.pull_threshold_bytes)
        if reason and self._throttle(("flow", mq)):
            log.warning("consumer %s: flow control on %s: %s", s.group, mq, reason)
        return reason is not None

    async def _pull_loop(self, mq: MessageQueue, pq: ProcessQueue, offset: int) -> None:
        instance, store, s = self.instance, self.store, self.settings
        clustering = s.message_model is MessageModel.CLUSTERING
        while not pq.dropped:
            if self.flow_controlled(mq, pq):
                await asyncio.sleep(FLOW_CONTROL_DELAY_S)
                continue
            sub = self.subscriptions.get(mq.topic)
            broker_id = self._pull_from.get(mq, 0)
            addr = instance.broker_addr(mq.broker_name, broker_id)
            if sub is None or addr is None:
                await asyncio.sleep(PULL_DELAY_ON_ERROR_S)
                continue
            try:
                result = await broker_api.pull_message(
                    instance.pool,
                    addr,
                    s.group,
                    mq,
                    offset,
                    sub,
                    s.pull_batch_size,
                    commit_offset=store.read(mq) if clustering else -1,
                    suspend_ms=s.suspend_ms,
                    timeout=s.suspend_ms / 1000 + 15,
                    on_undecodable=self.skip_undecodable,
                )
            except Exception as exc:  # connection, timeout or broker error
                if self._throttle(("pull", mq)):
                    log.warning("consumer %s: pull from %s (%s) failed: %s", s.group, mq, addr, exc)
                self._pull_from[mq] = self._other_member(mq.broker_name, broker_id)
                await asyncio.sleep(PULL_DELAY_ON_ERROR_S)
                continue
            pq.last_pull = time.monotonic()
            self._pull_from[mq] = result.suggest_broker_id
            if pq.dropped:
                break
            if result.status is PullStatus.OFFSET_ILLEGAL:
                log.warning(
                    "consumer %s: offset %d of %s is illegal; moving to %d",
                    s.group,
                    offset,
                    mq,
                    result.next_begin_offset,
                )
                offset = result.next_begin_offset
                store.update(mq, offset)
                await store.persist([mq])
                continue
            offset = result.next_begin_offset
            if result.messages:
                pq.put(result.messages)
                self.dispatch(mq, pq, result.messages)
            elif pq.count == 0:
                store.update(mq, offset, increase_only=True)  # nothing held: skip filtered-out offsets

    def _other_member(self, broker_name: str, broker_id: int) -> int:
        """After a failed pull, try another member of the broker group (a slave while the master is down)."""
        ids = sorted((self.instance.brokers.get(broker_name) or {}).keys())
        others = [i for i in ids if i != broker_id]
        return others[0] if others else broker_id
