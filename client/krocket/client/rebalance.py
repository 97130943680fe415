"""Rebalance: which queues of its topics this consumer owns, and the process queues of those it owns.

``allocate_averagely`` is RocketMQ's AllocateMessageQueueAveragely; ``PushRebalance`` is its
RebalancePushImpl: per subscribed topic it lists the group's consumers on a broker, takes its share of the
readable queues, starts pulling the queues it gained (from their stored offset, else where ``consume_from``
says) and drops the ones it lost, committing their offsets first.

So that a consumer of many topics stays cheap: a round asks a broker for the group's consumers once for all its
topics (``ConsumerIdsRound``; RocketMQ asks once per topic), runs ``REBALANCE_CONCURRENCY`` topics at a time, and
skips a topic whose inputs (readable queues, consumer ids) are those of its last allocation while it still owns what
that allocation gave it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from krocket.common.errors import KrocketError, TopicNotExistError
from krocket.common.route import TopicRouteData
from krocket.common.topic import RETRY_GROUP_PREFIX, is_readable

from . import broker_api
from .bounded import map_bounded
from .instance import ClientInstance
from .offset_store import OffsetStore
from .process_queue import ProcessQueue
from .subscription import SubscriptionData
from .throttle import LogThrottle
from .types import MessageModel, MessageQueue

log = logging.getLogger(__name__)

Q = TypeVar("Q")

StartOffset = Callable[[MessageQueue], Awaitable[int]]

REBALANCE_CONCURRENCY = 16  # topics rebalanced at a time


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


AskConsumerIds = Callable[[str], Awaitable[list[str]]]  # broker address -> the group's consumer ids there


class ConsumerIdsRound:
    """The group's consumer ids during one rebalance round, shared by its topics: each broker is asked at most once,
    and once more after this client, not listed, sent its heartbeats (at most once a round)."""

    def __init__(self, ask: AskConsumerIds, heartbeat: Callable[[], Awaitable[None]], me: str) -> None:
        self._ask = ask
        self._heartbeat = heartbeat
        self._me = me
        self._answers: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._after_heartbeat: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._heartbeat_sent: asyncio.Future[None] | None = None
        self.requests = 0  # consumer lists asked for this round

    async def ids(self, addrs: Sequence[str]) -> tuple[str, ...] | None:
        """The sorted consumer ids from one of ``addrs`` (a broker already asked this round first, then the others
        in random order); None when the broker does not list this client even after a heartbeat. Raises
        ``KrocketError`` when none answers."""
        ids = await self._first_answer(addrs, self._answers)
        if self._me in ids:
            return ids
        if self._heartbeat_sent is None:
            self._heartbeat_sent = asyncio.ensure_future(self._heartbeat())
        await asyncio.shield(self._heartbeat_sent)
        ids = await self._first_answer(addrs, self._after_heartbeat)
        return ids if self._me in ids else None

    async def _first_answer(
        self, addrs: Sequence[str], answers: dict[str, asyncio.Future[tuple[str, ...]]]
    ) -> tuple[str, ...]:
        unasked = [a for a in addrs if a not in answers]
        random.shuffle(unasked)
        error: BaseException | None = None
        for addr in [a for a in addrs if a in answers] + unasked:
            answer = answers.get(addr)
            if answer is None:
                answer = answers[addr] = asyncio.ensure_future(self._fetch(addr))
            try:
                return await asyncio.shield(answer)
            except KrocketError as exc:
                error = exc
        raise KrocketError(f"no broker listed the consumers: {error}")

    async def _fetch(self, addr: str) -> tuple[str, ...]:
        self.requests += 1
        return tuple(sorted(await self._ask(addr)))


@dataclass(slots=True)
class RebalanceStats:
    """What the rebalance rounds did so far (for tests and diagnostics)."""

    rounds: int = 0
    allocated: int = 0  # topics whose allocation was computed and applied
    skipped: int = 0  # topics whose inputs and queues had not changed since their last allocation
    consumer_id_requests: int = 0


@dataclass(frozen=True, slots=True)
class _Allocation:
    """A topic's last allocation: its inputs and the queues it gave this consumer."""

    route: TopicRouteData
    queues: tuple[MessageQueue, ...]
    ids: tuple[str, ...]
    wanted: frozenset[MessageQueue]


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
        self._last: dict[str, _Allocation] = {}  # each topic's last allocation
        self.stats = RebalanceStats()

    async def rebalance(self, topics: Collection[str] | None = None) -> None:
        """Reallocate ``topics`` (the subscribed ones among them) or every subscribed topic, one rebalance at a
        time; drop queues of unsubscribed topics."""
        async with self._lock:
            subs = self.subscriptions
            names = sorted(subs) if topics is None else sorted(t for t in topics if t in subs)
            owned: dict[str, set[MessageQueue]] = {}
            for mq in self.process_queues:
                owned.setdefault(mq.topic, set()).add(mq)
            instance = self.instance
            ids = ConsumerIdsRound(self._ask_consumer_ids, instance.send_heartbeats, instance.client_id)
            empty: set[MessageQueue] = set()

            async def one(topic: str) -> None:
                await self._rebalance_topic(topic, ids, owned.get(topic, empty))

            results = await map_bounded(one, names, REBALANCE_CONCURRENCY)
            self._log_failures({t: r for t, r in zip(names, results, strict=True) if isinstance(r, Exception)})
            self.stats.rounds += 1
            self.stats.consumer_id_requests += ids.requests
            for mq in [q for q in self.process_queues if q.topic not in subs]:
                await self.drop(mq)
            for topic in [t for t in self._last if t not in subs]:
                del self._last[topic]

    def _log_failures(self, failed: dict[str, Exception]) -> None:
        """One line for the topics a round could not rebalance (a broker down fails them all alike)."""
        if not failed:
            return
        group = self.settings.group
        first, exc = min(failed.items())
        if not isinstance(exc, KrocketError):
            log.warning("consumer %s: rebalance of topic %s failed: %r", group, first, exc)
        elif len(failed) == 1 and self._throttle(("rebalance", first)):
            log.warning("consumer %s: cannot rebalance topic %s: %s", group, first, exc)
        elif len(failed) > 1 and self._throttle(("rebalance",)):
            log.warning("consumer %s: cannot rebalance %d topics (%s, ...): %s", group, len(failed), first, exc)

    async def _rebalance_topic(self, topic: str, ids: ConsumerIdsRound, owned: set[MessageQueue]) -> None:
        """Raises ``KrocketError`` when the topic cannot be rebalanced now (it keeps its queues)."""
        allocation = await self._allocate(topic, ids)
        if allocation is None:
            return
        last = self._last.get(topic)
        if (
            last is not None
            and last.queues == allocation.queues
            and last.ids == allocation.ids
            and owned == last.wanted
        ):
            self._last[topic] = allocation
            self.stats.skipped += 1
            return
        self.stats.allocated += 1
        self._last[topic] = allocation
        await self._apply(topic, sorted(allocation.wanted), owned)

    async def _allocate(self, topic: str, ids_round: ConsumerIdsRound) -> _Allocation | None:
        """This consumer's share of the topic's queues, with what it was computed from; None to keep the current
        ones."""
        instance, group = self.instance, self.settings.group
        try:
            route = await instance.route(topic)
        except TopicNotExistError:
            if not topic.startswith(RETRY_GROUP_PREFIX) and self._throttle(("route", topic)):  # made on first use
                log.warning("consumer %s: topic %s does not exist (yet)", group, topic)
            return None
        last = self._last.get(topic)
        queues = last.queues if last is not None and last.route is route else tuple(subscribe_queues(topic, route))
        if self.settings.message_model is MessageModel.BROADCASTING:
            return _Allocation(route, queues, (), frozenset(queues))
        addrs = [a for a in (instance.broker_addr(b.broker_name) for b in route.broker_datas) if a is not None]
        ids = await ids_round.ids(addrs)
        if ids is None:
            if self._throttle(("unlisted",)):
                log.warning(
                    "consumer %s: brokers do not list this client (%s) yet; keeping current queues",
                    group,
                    instance.client_id,
                )
            return None
        if last is not None and last.queues == queues and last.ids == ids:
            return _Allocation(route, last.queues, last.ids, last.wanted)
        return _Allocation(route, queues, ids, frozenset(allocate_averagely(queues, ids, instance.client_id)))

    async def _ask_consumer_ids(self, addr: str) -> list[str]:
        return await broker_api.consumer_ids(self.instance.pool, addr, self.settings.group)

    async def _apply(self, topic: str, wanted: list[MessageQueue], owned: set[MessageQueue]) -> None:
        """Own ``wanted`` of ``topic``: drop the others of ``owned`` (its queues when the round began), start the
        new ones."""
        group = self.settings.group
        pqs = self.process_queues
        current = {mq for mq in owned if mq in pqs}  # one may have been dropped since (an offset reset)
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
        mine = sorted(mq for mq in target | current if mq in pqs)
        log.info(
            "consumer %s rebalanced topic %s: %d queues %s",
            group,
            topic,
            len(mine),
            ", ".join(f"{q.broker_name}:{q.queue_id}" for q in mine),
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
