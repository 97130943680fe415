"""PushConsumer: rebalanced long-polling pulls feeding a listener; offsets committed after success.

Per assigned queue a pull task long-polls the broker (PULL_MESSAGE with a 15 s suspend) and hands what it
gets to the listener (sync listeners in a thread pool, ``async def`` listeners as tasks), ``consume_threads``
at a time. An offset is committed only up to the smallest message still in the process queue, so a crash
or a rebalance re-delivers what was not consumed yet (at-least-once). RECONSUME_LATER (or an exception)
retries the messages locally after a delay; they are not sent back to the broker's retry topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from krocket.common.errors import KrocketError, TopicNotExistError
from krocket.common.message import MessageExt
from krocket.common.route import TopicRouteData
from krocket.common.topic import is_readable, validate_group

from . import broker_api
from .instance import ClientInstance
from .offset_store import LocalFileOffsetStore, OffsetStore, RemoteBrokerOffsetStore
from .process_queue import ProcessQueue
from .rebalance import allocate_averagely
from .subscription import SubscriptionData, build_subscription
from .types import ConsumeFrom, ConsumeStatus, MessageModel, MessageQueue, PullStatus

log = logging.getLogger(__name__)

Listener = Callable[[list[MessageExt]], "ConsumeStatus | None | Awaitable[ConsumeStatus | None]"]

SUSPEND_MS = 15_000
PULL_DELAY_ON_ERROR_S = 3.0
FLOW_CONTROL_DELAY_S = 0.05
MAX_SPAN = 2000
DEFAULT_TIMESTAMP_AGE_S = 30 * 60


def subscribe_queues(topic: str, route: TopicRouteData) -> list[MessageQueue]:
    """All readable queues of a topic, sorted."""
    return sorted(
        MessageQueue(topic, qd.broker_name, i)
        for qd in route.queue_datas
        if is_readable(qd.perm)
        for i in range(qd.read_queue_nums)
    )


def _model(value: str | MessageModel) -> MessageModel:
    return value if isinstance(value, MessageModel) else MessageModel(str(value).upper())


def _consume_from(value: str | ConsumeFrom) -> ConsumeFrom:
    if isinstance(value, ConsumeFrom):
        return value
    text = str(value).upper()
    for option in ConsumeFrom:
        if text in (option.name, option.value):
            return option
    raise KrocketError(f"consume_from must be LAST, FIRST or TIMESTAMP, not {value!r}")


class _Throttle:
    """Allow one log line per key per period."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last: dict[object, float] = {}

    def __call__(self, key: object) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period:
            self._last[key] = now
            return True
        return False


class PushConsumer:
    def __init__(
        self,
        group: str,
        namesrv: str | None = None,
        message_model: str | MessageModel = "CLUSTERING",
        consume_from: str | ConsumeFrom = "LAST",
        consume_timestamp: float | dt.datetime | None = None,
        consume_threads: int = 20,
        pull_batch_size: int = 32,
        pull_threshold_for_queue: int = 1000,
        pull_threshold_size_mib_for_queue: int = 100,
        rebalance_interval: float = 20.0,
        *,
        consume_batch_size: int = 1,
        reconsume_delay: float = 1.0,
        suspend_ms: int = SUSPEND_MS,
        instance_name: str | None = None,
        offset_dir: str | Path | None = None,
    ) -> None:
        validate_group(group)
        self.group = group
        self.message_model = _model(message_model)
        self.consume_from = _consume_from(consume_from)
        if isinstance(consume_timestamp, dt.datetime):
            consume_timestamp = consume_timestamp.timestamp()
        self.consume_timestamp = (
            time.time() - DEFAULT_TIMESTAMP_AGE_S if consume_timestamp is None else float(consume_timestamp)
        )
        self.consume_threads = consume_threads
        self.pull_batch_size = pull_batch_size
        self.pull_threshold_for_queue = pull_threshold_for_queue
        self.pull_threshold_bytes = pull_threshold_size_mib_for_queue * 1024 * 1024
        self.rebalance_interval = rebalance_interval
        self.consume_batch_size = max(1, consume_batch_size)
        self.reconsume_delay = reconsume_delay
        self.suspend_ms = suspend_ms
        self._namesrv = namesrv
        self._instance_name = instance_name or ("DEFAULT" if self.message_model is MessageModel.BROADCASTING else None)
        self._offset_dir = offset_dir
        self._subs: dict[str, SubscriptionData] = {}
        self._listener: Listener | None = None
        self._instance: ClientInstance | None = None
        self._store: OffsetStore | None = None
        self._pqs: dict[MessageQueue, ProcessQueue] = {}
        self._pull_tasks: dict[MessageQueue, asyncio.Task[None]] = {}
        self._pull_from: dict[MessageQueue, int] = {}
        self._consume_tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._rebalance_lock: asyncio.Lock | None = None
        self._throttle = _Throttle()

    # -- configuration ------------------------------------------------------------------------------------
    def subscribe(self, topic: str, expression: str = "*") -> None:
        """Consume ``topic`` messages whose tag matches ``expression`` (``*`` or ``TagA || TagB``)."""
        self._subs[topic] = build_subscription(topic, expression)
        if self._instance is not None:
            self._instance.topics.add(topic)
            asyncio.get_running_loop().create_task(self._after_subscribe())

    def unsubscribe(self, topic: str) -> None:
        self._subs.pop(topic, None)
        if self._instance is not None:
            self._instance.rebalance_soon()

    def register_listener(self, listener: Listener) -> None:
        """``listener(messages) -> ConsumeStatus``; a plain function runs in the consume thread pool, an
        ``async def`` one on the event loop. Returning None counts as SUCCESS; raising as RECONSUME_LATER."""
        self._listener = listener

    @property
    def subscriptions(self) -> dict[str, SubscriptionData]:
        return dict(self._subs)

    @property
    def client_id(self) -> str:
        if self._instance is None:
            raise KrocketError(f"consumer {self.group} is not started")
        return self._instance.client_id

    def assigned_queues(self) -> list[MessageQueue]:
        return sorted(self._pqs)

    @property
    def offset_store(self) -> OffsetStore:
        if self._store is None:
            raise KrocketError(f"consumer {self.group} is not started")
        return self._store

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._instance is not None:
            return
        if self._listener is None:
            raise KrocketError("register a listener before starting the consumer")
        if not self._subs:
            raise KrocketError("subscribe to at least one topic before starting the consumer")
        instance = ClientInstance(
            self._namesrv, instance_name=self._instance_name, rebalance_interval=self.rebalance_interval
        )
        self._instance = instance
        if self.message_model is MessageModel.BROADCASTING:
            self._store = LocalFileOffsetStore(instance.client_id, self.group, self._offset_dir)
        else:
            self._store = RemoteBrokerOffsetStore(self._query_offset, self._commit_offset)
        if not inspect.iscoroutinefunction(self._listener):
            self._executor = ThreadPoolExecutor(self.consume_threads, thread_name_prefix=f"consume-{self.group}")
        self._slots = asyncio.Semaphore(self.consume_threads)
        self._rebalance_lock = asyncio.Lock()
        instance.topics.update(self._subs)
        instance.add_consumer(self)
        for topic in self._subs:
            try:
                await instance.route(topic)
            except KrocketError as exc:
                log.warning("consumer %s: no route for topic %s yet: %s", self.group, topic, exc)
        await instance.send_heartbeats()
        await instance.start()
        log.info(
            "consumer %s started as %s (%s, from %s, topics %s)",
            self.group,
            instance.client_id,
            self.message_model.value,
            self.consume_from.name,
            ", ".join(sorted(self._subs)),
        )
        await self.rebalance()

    async def shutdown(self, await_consumers: float = 5.0) -> None:
        instance = self._instance
        if instance is None:
            return
        tasks = list(self._pull_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pull_tasks.clear()
        if self._consume_tasks:
            _, pending = await asyncio.wait(list(self._consume_tasks), timeout=await_consumers)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for pq in self._pqs.values():
            pq.dropped = True
        await self.persist_offsets()
        self._pqs.clear()
        await instance.shutdown()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._instance = None
        log.info("consumer %s stopped", self.group)

    async def __aenter__(self) -> PushConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def _after_subscribe(self) -> None:
        assert self._instance is not None
        with contextlib.suppress(KrocketError):
            await self._instance.send_heartbeats()
        self._instance.rebalance_soon()

    # -- ConsumerMember -------------------------------------------------------------------------------
    def heartbeat_data(self) -> dict[str, Any]:
        return {
            "groupName": self.group,
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": self.message_model.value,
            "consumeFromWhere": self.consume_from.value,
            "subscriptionDataSet": [s.to_json() for s in self._subs.values()],
            "unitMode": False,
        }

    async def persist_offsets(self) -> None:
        if self._store is not None:
            await self._store.persist(list(self._pqs))

    async def rebalance(self) -> None:
        if self._instance is None or self._rebalance_lock is None:
            return
        async with self._rebalance_lock:
            for topic in sorted(self._subs):
                try:
                    wanted = await self._allocate(topic)
                except KrocketError as exc:
                    if self._throttle(("rebalance", topic)):
                        log.warning("consumer %s: cannot rebalance topic %s: %s", self.group, topic, exc)
                    continue
                if wanted is not None:
                    await self._apply(topic, wanted)
            for mq in [q for q in self._pqs if q.topic not in self._subs]:
                await self._drop(mq)

    async def _allocate(self, topic: str) -> list[MessageQueue] | None:
        instance = self._instance
        assert instance is not None
        try:
            route = await instance.route(topic)
        except TopicNotExistError:
            if self._throttle(("route", topic)):
                log.warning("consumer %s: topic %s does not exist (yet)", self.group, topic)
            return None
        queues = subscribe_queues(topic, route)
        if self.message_model is MessageModel.BROADCASTING:
            return queues
        ids = await self._consumer_ids(route)
        if instance.client_id not in ids:
            await instance.send_heartbeats()
            ids = await self._consumer_ids(route)
            if instance.client_id not in ids:
                log.warning(
                    "consumer %s: brokers do not list this client (%s) yet; keeping current queues",
                    self.group,
                    instance.client_id,
                )
                return None
        return allocate_averagely(queues, ids, instance.client_id)

    async def _consumer_ids(self, route: TopicRouteData) -> list[str]:
        instance = self._instance
        assert instance is not None
        brokers = [b.broker_name for b in route.broker_datas]
        random.shuffle(brokers)
        error: Exception | None = None
        for name in brokers:
            addr = instance.broker_addr(name)
            if addr is None:
                continue
            try:
                return await broker_api.consumer_ids(instance.pool, addr, self.group)
            except KrocketError as exc:
                error = exc
        raise KrocketError(f"no broker listed the consumers of group {self.group}: {error}")

    async def _apply(self, topic: str, wanted: list[MessageQueue]) -> None:
        current = {mq for mq in self._pqs if mq.topic == topic}
        target = set(wanted)
        if current == target:
            return
        for mq in sorted(current - target):
            await self._drop(mq)
        for mq in sorted(target - current):
            try:
                offset = await self._initial_offset(mq)
            except KrocketError as exc:
                log.warning("consumer %s: cannot find where to start %s: %s", self.group, mq, exc)
                continue
            pq = ProcessQueue()
            self._pqs[mq] = pq
            self._pull_tasks[mq] = asyncio.get_running_loop().create_task(
                self._pull_loop(mq, pq, offset), name=f"pull-{mq}"
            )
        log.info(
            "consumer %s rebalanced topic %s: %d queues %s",
            self.group,
            topic,
            len([q for q in self._pqs if q.topic == topic]),
            ", ".join(f"{q.broker_name}:{q.queue_id}" for q in sorted(self._pqs) if q.topic == topic),
        )

    async def _drop(self, mq: MessageQueue) -> None:
        pq = self._pqs.pop(mq, None)
        task = self._pull_tasks.pop(mq, None)
        if pq is not None:
            pq.dropped = True
        if task is not None:
            task.cancel()
        if self._store is not None:
            await self._store.persist([mq])
            self._store.remove(mq)

    # -- offsets ------------------------------------------------------------------------------------
    def _addr(self, mq: MessageQueue, master_only: bool = False) -> str:
        """The master of the queue's broker group; for reads, any member when the master is gone."""
        assert self._instance is not None
        addr = self._instance.broker_addr(mq.broker_name, only_this=master_only)
        if addr is None:
            raise KrocketError(f"broker {mq.broker_name} has no {'master' if master_only else 'member'} in the route")
        return addr

    async def _query_offset(self, mq: MessageQueue) -> int:
        assert self._instance is not None
        return await broker_api.query_consumer_offset(self._instance.pool, self._addr(mq), self.group, mq)

    async def _commit_offset(self, mq: MessageQueue, offset: int) -> None:
        assert self._instance is not None
        # The master keeps offsets; while it is gone a slave takes them and keeps them when the master returns.
        await broker_api.update_consumer_offset(self._instance.pool, self._addr(mq), self.group, mq, offset)

    async def _initial_offset(self, mq: MessageQueue) -> int:
        """The stored offset, else where ``consume_from`` says (RocketMQ's computePullFromWhere)."""
        assert self._instance is not None and self._store is not None
        self._store.remove(mq)
        stored = await self._store.read_stored(mq)
        if stored >= 0:
            return stored
        pool, addr = self._instance.pool, self._addr(mq)
        if self.consume_from is ConsumeFrom.FIRST:
            return await broker_api.min_offset(pool, addr, mq)
        if self.consume_from is ConsumeFrom.TIMESTAMP:
            return await broker_api.search_offset(pool, addr, mq, int(self.consume_timestamp * 1000))
        return await broker_api.max_offset(pool, addr, mq)

    # -- pulling ------------------------------------------------------------------------------------
    def _flow_controlled(self, mq: MessageQueue, pq: ProcessQueue) -> bool:
        reason = None
        if pq.count > self.pull_threshold_for_queue:
            reason = f"{pq.count} messages held"
        elif pq.bytes > self.pull_threshold_bytes:
            reason = f"{pq.bytes // (1024 * 1024)} MiB held"
        elif pq.max_span > MAX_SPAN:
            reason = f"offset span {pq.max_span}"
        if reason and self._throttle(("flow", mq)):
            log.warning("consumer %s: flow control on %s: %s", self.group, mq, reason)
        return reason is not None

    async def _pull_loop(self, mq: MessageQueue, pq: ProcessQueue, offset: int) -> None:
        instance = self._instance
        store = self._store
        assert instance is not None and store is not None
        clustering = self.message_model is MessageModel.CLUSTERING
        while not pq.dropped:
            if self._flow_controlled(mq, pq):
                await asyncio.sleep(FLOW_CONTROL_DELAY_S)
                continue
            sub = self._subs.get(mq.topic)
            broker_id = self._pull_from.get(mq, 0)
            addr = instance.broker_addr(mq.broker_name, broker_id)
            if sub is None or addr is None:
                await asyncio.sleep(PULL_DELAY_ON_ERROR_S)
                continue
            try:
                result = await broker_api.pull_message(
                    instance.pool,
                    addr,
                    self.group,
                    mq,
                    offset,
                    sub,
                    self.pull_batch_size,
                    commit_offset=store.read(mq) if clustering else -1,
                    suspend_ms=self.suspend_ms,
                    timeout=self.suspend_ms / 1000 + 15,
                )
            except Exception as exc:  # connection, timeout, broker error or an undecodable body
                if self._throttle(("pull", mq)):
                    log.warning("consumer %s: pull from %s (%s) failed: %s", self.group, mq, addr, exc)
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
                    self.group,
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
                self._dispatch(mq, pq, result.messages)
            elif pq.count == 0:
                store.update(mq, offset, increase_only=True)  # nothing held: skip filtered-out offsets

    def _other_member(self, broker_name: str, broker_id: int) -> int:
        """After a failed pull, try another member of the broker group (a slave while the master is down)."""
        assert self._instance is not None
        ids = sorted((self._instance.brokers.get(broker_name) or {}).keys())
        others = [i for i in ids if i != broker_id]
        return others[0] if others else broker_id

    # -- consuming -------------------------------------------------------------------------------------
    def _dispatch(self, mq: MessageQueue, pq: ProcessQueue, messages: list[MessageExt]) -> None:
        loop = asyncio.get_running_loop()
        size = self.consume_batch_size
        for i in range(0, len(messages), size):
            task = loop.create_task(self._consume(mq, pq, messages[i : i + size]))
            self._consume_tasks.add(task)
            task.add_done_callback(self._consume_tasks.discard)

    async def _consume(self, mq: MessageQueue, pq: ProcessQueue, messages: list[MessageExt]) -> None:
        assert self._slots is not None and self._store is not None
        attempt = 0
        while not pq.dropped:
            async with self._slots:
                if pq.dropped:
                    return
                ok = await self._call_listener(messages)
            if ok:
                offset = pq.remove(messages)
                if offset >= 0 and not pq.dropped:
                    self._store.update(mq, offset, increase_only=True)
                return
            attempt += 1
            for msg in messages:
                msg.reconsume_times += 1
            await asyncio.sleep(min(self.reconsume_delay * 2 ** min(attempt - 1, 6), 60.0))

    async def _call_listener(self, messages: list[MessageExt]) -> bool:
        listener = self._listener
        assert listener is not None
        try:
            if self._executor is None:
                status = await listener(messages)  # type: ignore[misc]
            else:
                status = await asyncio.get_running_loop().run_in_executor(self._executor, listener, messages)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._throttle(("listener", type(exc))):
                log.warning("consumer %s: listener raised %s: %s; will retry", self.group, type(exc).__name__, exc)
            return False
        return status is not ConsumeStatus.RECONSUME_LATER
