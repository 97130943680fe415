"""Rebalance: which queues of its topics this consumer owns, and the process queues of those it owns.

``allocate_averagely`` is RocketMQ's AllocateMessageQueueAveragely; ``PushRebalance`` is its
RebalancePushImpl: per subscribed topic it lists the group's consumers on a broker, takes its share of the
readable queues, starts pulling the queues it gained (from their stored offset, else where ``consume_from``
says) and drops the ones it lost, committing their offsets first.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from krocket.common.errors import KrocketError, TopicNotExistError
from krocket.common.route import TopicRouteData
from krocket.common.topic import RETRY_GROUP_PREFIX, is_readable

from . import broker_api
from .instance import ClientInstance
from .offset_store import OffsetStore
from .process_queue import ProcessQueue
from .subscription import SubscriptionData
from .throttle import LogThrottle
from .types import MessageModel, MessageQueue

log = logging.getLogger(__name__)

Q = TypeVar("Q")

StartOffset = Callable[[MessageQueue], Awaitable[int]]


def allocate_averagely(queues: Sequence[Q], consumers: Sequence[str], me: str) -> list[Q]:
    """The queues ``me`` should consume: contiguous, as even as possible, first consumers get the extra.

    Both lists are sorted here, so every member computes the same split. With more consumers than queues,
    the last consumers get nothing. A consumer not in the list gets nothing.
    """
    all_queues = sorted(queues)  # type: ignore[type-var]
    ids = sorted(consumers)
    if not all_queues or me not in ids:
        return []
    index = ids.index(me)
    n, m = len(all_queues), len(ids)
    mod = n % m
    if n <= m:
        size = 1
    elif mod > 0 and index < mod:
        size = n // m + 1
    else:
        size = n // m
    start = index * size if mod > 0 and index < mod else index * size + mod
    count = min(size, n - start)
    return [all_queues[(start + i) % n] for i in range(max(count, 0))]


def subscribe_queues(topic: str, route: TopicRouteData) -> list[MessageQueue]:
    """All readable queues of a topic, sorted."""
    return sorted(
        MessageQueue(topic, qd.broker_name, i)
        for qd in route.queue_datas
        if is_readable(qd.perm)
        for i in range(qd.read_queue_nums)
    )


class RebalanceSettings(Protocol):
    """The consumer settings the rebalance reads."""

    group: str
    message_model: MessageModel


class QueuePulls(Protocol):
    """Starts and stops the pulling of one queue (the PullService)."""

    def start(self, mq: MessageQueue, pq: ProcessQueue, offset: int) -> None: ...

    def stop(self, mq: MessageQueue) -> None: ...


class QueueLocking(Protocol):
    """Orderly consumption's broker locks (``consume_orderly.OrderlyQueueLocking``): a queue is pulled only
    once locked; a dropped one stops consuming before its offset is committed and is unlocked after."""

    async def lock(self, queues: Sequence[MessageQueue]) -> set[MessageQueue]: ...

    async def quiesce(self, mq: MessageQueue) -> None: ...

    async def unlock(self, queues: Sequence[MessageQueue]) -> None: ...


class PushRebalance:
    """The queues a push consumer owns now, each with its process queue; ``rebalance`` brings them up to date."""

    def __init__(
        self,
        settings: RebalanceSettings,
        instance: ClientInstance,
        store: OffsetStore,
        subscriptions: Mapping[str, SubscriptionData],
        start_offset: StartOffset,
        pulls: QueuePulls,
        throttle: LogThrottle,
        locks: QueueLocking | None = None,
    ) -> None:
        self.settings = settings
        self.instance = instance
        self.store = store
        self.subscriptions = subscriptions
        self.start_offset = start_offset
        self.pulls = pulls
        self._throttle = throttle
        self.locks = locks
        self.process_queues: dict[MessageQueue, ProcessQueue] = {}
        self._lock = asyncio.Lock()

    async def rebalance(self) -> None:
        """Reallocate every subscribed topic (one rebalance at a time); drop queues of unsubscribed topics."""
        async with self._lock:
            for topic in sorted(self.subscriptions):
                try:
                    wanted = await self._allocate(topic)
                except KrocketError as exc:
                    if self._throttle(("rebalance", topic)):
                        log.warning("consumer %s: cannot rebalance topic %s: %s", self.settings.group, topic, exc)
                    continue
                if wanted is not None:
                    await self._apply(topic, wanted)
            for mq in [q for q in self.process_queues if q.topic not in self.subscriptions]:
                await self.drop(mq)

    async def _allocate(self, topic: str) -> list[MessageQueue] | None:
        """This consumer's share of the topic's queues; None to keep the current ones."""
        instance, group = self.instance, self.settings.group
        try:
            route = await instance.route(topic)
        except TopicNotExistError:
            if not topic.startswith(RETRY_GROUP_PREFIX) and self._throttle(("route", topic)):  # made on first use
                log.warning("consumer %s: topic %s does not exist (yet)", group, topic)
            return None
        queues = subscribe_queues(topic, route)
        if self.settings.message_model is MessageModel.BROADCASTING:
            return queues
        ids = await self._consumer_ids(route)
        if instance.client_id not in ids:
            await instance.send_heartbeats()
            ids = await self._consumer_ids(route)
            if instance.client_id not in ids:
                log.warning(
                    "consumer %s: brokers do not list this client (%s) yet; keeping current queues",
                    group,
                    instance.client_id,
                )
                return None
        return allocate_averagely(queues, ids, instance.client_id)

    async def _consumer_ids(self, route: TopicRouteData) -> list[str]:
        """The group's consumer ids, from the first broker of the route (in random order) that answers."""
        instance, group = self.instance, self.settings.group
        brokers = [b.broker_name for b in route.broker_datas]
        random.shuffle(brokers)
        error: Exception | None = None
        for name in brokers:
            addr = instance.broker_addr(name)
            if addr is None:
                continue
            try:
                return await broker_api.consumer_ids(instance.pool, addr, group)
            except KrocketError as exc:
                error = exc
        raise KrocketError(f"no broker listed the consumers of group {group}: {error}")

    async def _apply(self, topic: str, wanted: list[MessageQueue]) -> None:
        group = self.settings.group
        pqs = self.process_queues
        current = {mq for mq in pqs if mq.topic == topic}
        target = set(wanted)
        if current == target:
            return
        for mq in sorted(current - target):
            await self.drop(mq)
        gained = sorted(target - current)
        if self.locks is not None and gained:  # orderly: pull only the queues this client holds the lock of
            granted = await self.locks.lock(gained)
            gained = [mq for mq in gained if mq in granted]
        for mq in gained:
            try:
                offset = await self.start_offset(mq)
            except KrocketError as exc:
                log.warning("consumer %s: cannot find where to start %s: %s", group, mq, exc)
                continue
            pq = ProcessQueue()
            pqs[mq] = pq
            self.pulls.start(mq, pq, offset)
        log.info(
            "consumer %s rebalanced topic %s: %d queues %s",
            group,
            topic,
            len([q for q in pqs if q.topic == topic]),
            ", ".join(f"{q.broker_name}:{q.queue_id}" for q in sorted(pqs) if q.topic == topic),
        )

    async def drop(self, mq: MessageQueue) -> None:
        """Stop consuming ``mq``: drop its process queue, stop its pulls, commit and forget its offset."""
        pq = self.process_queues.pop(mq, None)
        if pq is not None:
            pq.dropped = True
        self.pulls.stop(mq)
        if self.locks is not None and pq is not None:
            await self.locks.quiesce(mq)
        await self.store.persist([mq])
        self.store.remove(mq)
        if self.locks is not None and pq is not None:
            await self.locks.unlock([mq])
