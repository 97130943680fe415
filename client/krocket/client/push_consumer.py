"""PushConsumer: rebalanced long-polling pulls feeding a listener; offsets committed after success.

The consumer holds the configuration and the lifecycle; the work is done by three parts it starts: the
rebalance (``rebalance.PushRebalance``: which queues this consumer owns), the pull loops
(``pull_service.PullService``: one long-polling task per owned queue) and the consume service
(``consume_service.ConsumeConcurrentlyService``: the listener, failed messages sent back to the broker,
offsets after success). An offset is committed only up to the smallest message still in the process queue, so
a crash or a rebalance re-delivers what was not consumed yet (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from krocket.common.acl import Credentials, resolve_credentials
from krocket.common.errors import KrocketError
from krocket.common.message import MessageExt
from krocket.common.remoting.tls import client_tls
from krocket.common.subscription_group import DEFAULT_RETRY_MAX_TIMES, ORDERLY_MAX_RECONSUME_TIMES
from krocket.common.topic import RETRY_GROUP_PREFIX, retry_topic, validate_group

from . import broker_api
from .consume_orderly import ConsumeOrderlyService, OrderlyListener, OrderlyQueueLocking, QueueLocks
from .consume_service import ConsumeConcurrentlyService, Listener
from .instance import ClientInstance
from .offset_store import LocalFileOffsetStore, OffsetStore, RemoteBrokerOffsetStore
from .pull_service import SUSPEND_MS, PullService
from .rebalance import PushRebalance
from .subscription import SubscriptionData, build_subscription
from .throttle import LogThrottle
from .types import ConsumeFrom, MessageModel, MessageQueue

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMESTAMP_AGE_S", "SUSPEND_MS", "Listener", "PushConsumer"]

DEFAULT_TIMESTAMP_AGE_S = 30 * 60


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


class PushConsumer:
    """RocketMQ's DefaultMQPushConsumer on asyncio: subscribe, register a listener, start."""

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
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        credentials: Credentials | None = None,
        max_reconsume_times: int | None = None,
        orderly: bool = False,
    ) -> None:
        validate_group(group)
        # Orderly: queues locked at the broker (41) before they are pulled, one batch at a time per queue.
        self.orderly = orderly
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
        # Sent with each send-back: after this many reconsumes the broker moves a message to %DLQ%<group>.
        # Unset, RocketMQ's defaults: 16 for a concurrent consumer, no limit for an orderly one.
        self._max_reconsume_times = max_reconsume_times
        self.suspend_ms = suspend_ms
        self._namesrv = namesrv
        self.ssl_context = client_tls(tls, tls_ca)  # TLS when told, or by KROCKET_TLS_ENABLE / KROCKET_TLS_CA
        # ACL (RocketMQ 4.x): every request signed; default from KROCKET_ACCESS_KEY / KROCKET_SECRET_KEY.
        self.credentials = resolve_credentials(credentials)
        self._instance_name = instance_name or ("DEFAULT" if self.message_model is MessageModel.BROADCASTING else None)
        self._offset_dir = offset_dir
        self._subs: dict[str, SubscriptionData] = {}
        self._listener: Listener | None = None
        self._instance: ClientInstance | None = None
        self._store: OffsetStore | None = None
        self._consume_service: ConsumeConcurrentlyService | ConsumeOrderlyService | None = None
        self._locks: QueueLocks | None = None
        self._lock_renewal: asyncio.Task[None] | None = None
        self._pulls: PullService | None = None
        self._rebalancer: PushRebalance | None = None
        self._throttle = LogThrottle()
        self._subscribed: set[str] = set()  # topics subscribed since the last heartbeat (while running)
        self._after_subscribe_task: asyncio.Task[None] | None = None

    # -- configuration ------------------------------------------------------------------------------------
    def subscribe(self, topic: str, expression: str = "*") -> None:
        """Consume ``topic`` messages whose tag matches ``expression`` (``*`` or ``TagA || TagB``)."""
        self._subs[topic] = build_subscription(topic, expression)
        if self._instance is not None:
            self._instance.topics.add(topic)
            self._subscribed.add(topic)
            if self._after_subscribe_task is None or self._after_subscribe_task.done():
                # One task for the subscriptions made meanwhile: one heartbeat, not one per topic subscribed.
                self._after_subscribe_task = asyncio.get_running_loop().create_task(self._after_subscribe())

    def unsubscribe(self, topic: str) -> None:
        self._subs.pop(topic, None)
        if self._instance is not None:
            self._instance.topics.discard(topic)  # its route is no longer refreshed
            self._instance.rebalance_soon()

    def register_listener(self, listener: Listener) -> None:
        """``listener(messages) -> ConsumeStatus``; a plain function runs in the consume thread pool, an
        ``async def`` one on the event loop. Returning None counts as SUCCESS; raising as RECONSUME_LATER."""
        self._listener = listener

    @property
    def max_reconsume_times(self) -> int:
        if self._max_reconsume_times is not None:
            return self._max_reconsume_times
        return ORDERLY_MAX_RECONSUME_TIMES if self.orderly else DEFAULT_RETRY_MAX_TIMES

    def register_orderly_listener(self, listener: OrderlyListener) -> None:
        """An orderly listener (RocketMQ's MessageListenerOrderly): ``listener(messages)`` returns
        ``OrderlyStatus.SUCCESS`` (or None) or ``SUSPEND_CURRENT_QUEUE_A_MOMENT`` (raising counts as that);
        it sees each queue's messages one batch at a time in offset order. Makes this consumer orderly."""
        self._listener = listener  # type: ignore[assignment]  # both kinds take the messages; statuses differ
        self.orderly = True

    @property
    def subscriptions(self) -> dict[str, SubscriptionData]:
        return dict(self._subs)

    @property
    def client_id(self) -> str:
        if self._instance is None:
            raise KrocketError(f"consumer {self.group} is not started")
        return self._instance.client_id

    def assigned_queues(self) -> list[MessageQueue]:
        return sorted(self._rebalancer.process_queues) if self._rebalancer is not None else []

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
            self._namesrv,
            instance_name=self._instance_name,
            rebalance_interval=self.rebalance_interval,
            ssl_context=self.ssl_context,
            credentials=self.credentials,
        )
        self._instance = instance
        store: OffsetStore
        if self.message_model is MessageModel.BROADCASTING:
            store = LocalFileOffsetStore(instance.client_id, self.group, self._offset_dir)
        else:
            store = RemoteBrokerOffsetStore(self._query_offset, self._commit_offset)
        self._store = store
        locking: OrderlyQueueLocking | None = None
        consume: ConsumeConcurrentlyService | ConsumeOrderlyService
        if self.orderly:
            self._locks = QueueLocks(self.group, instance, self._throttle)
            dead_letter = self._dead_letter if self.message_model is MessageModel.CLUSTERING else None
            consume = ConsumeOrderlyService(
                self, self._listener, store, self._locks, self._throttle, dead_letter=dead_letter
            )
            locking = OrderlyQueueLocking(self._locks, consume)
        else:
            send_back = self._send_back if self.message_model is MessageModel.CLUSTERING else None
            consume = ConsumeConcurrentlyService(self, self._listener, store, self._throttle, send_back)
        self._consume_service = consume
        self._pulls = PullService(self, instance, store, self._subs, consume.submit, self._throttle)
        self._rebalancer = PushRebalance(
            self, instance, store, self._subs, self._initial_offset, self._pulls, self._throttle, locking
        )
        if self.message_model is MessageModel.CLUSTERING:
            retry = retry_topic(self.group)  # redeliveries of sent-back messages, as RocketMQ's clients do
            self._subs.setdefault(retry, build_subscription(retry, "*"))
        instance.add_consumer(self)
        found = await instance.fetch_routes(self._subs)
        for topic, exc in sorted(found.failed.items()):
            level = logging.DEBUG if topic.startswith(RETRY_GROUP_PREFIX) else logging.WARNING  # made on use
            log.log(level, "consumer %s: no route for topic %s yet: %s", self.group, topic, exc)
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
        if self._locks is not None:
            rebalancer = self._rebalancer
            self._lock_renewal = asyncio.get_running_loop().create_task(
                self._locks.renew_loop(lambda: list(rebalancer.process_queues)), name=f"locks-{self.group}"
            )

    async def shutdown(self, await_consumers: float = 5.0) -> None:
        instance = self._instance
        if instance is None:
            return
        if self._after_subscribe_task is not None:
            self._after_subscribe_task.cancel()
            await asyncio.gather(self._after_subscribe_task, return_exceptions=True)
            self._after_subscribe_task = None
        if self._pulls is not None:
            await self._pulls.stop_all()
        if self._consume_service is not None:
            await self._consume_service.drain(await_consumers)
        queues = self._rebalancer.process_queues if self._rebalancer is not None else {}
        for pq in queues.values():
            pq.dropped = True
        await self.persist_offsets()
        if self._lock_renewal is not None:
            self._lock_renewal.cancel()
            await asyncio.gather(self._lock_renewal, return_exceptions=True)
            self._lock_renewal = None
        if self._locks is not None:
            await self._locks.unlock(self._locks.held)  # after the offsets: the next owner starts after them
            self._locks = None
        queues.clear()
        await instance.shutdown()
        if self._consume_service is not None:
            self._consume_service.close()
        self._instance = None
        log.info("consumer %s stopped", self.group)

    async def __aenter__(self) -> PushConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def _after_subscribe(self) -> None:
        """Tell the brokers of the topics subscribed since the last call and rebalance them."""
        while self._subscribed and self._instance is not None:
            topics, self._subscribed = self._subscribed, set()
            with contextlib.suppress(KrocketError):
                await self._instance.send_heartbeats()
            self._instance.rebalance_soon(topics)

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
            queues = self._rebalancer.process_queues if self._rebalancer is not None else {}
            await self._store.persist(list(queues))

    async def rebalance(self, topics: Collection[str] | None = None) -> None:
        """Rebalance ``topics`` (those subscribed among them), or every subscribed topic."""
        if self._instance is None or self._rebalancer is None:
            return
        await self._rebalancer.rebalance(topics)

    async def reset_offsets(self, topic: str, offsets: dict[MessageQueue, int]) -> None:
        """RESET_CONSUMER_CLIENT_OFFSET (220): drop this client's queues among ``offsets`` (one broker's queues of
        ``topic``) with their in-flight messages, commit the new offsets and let the next rebalance pull again
        from them."""
        if self._rebalancer is None or self._pulls is None or self._store is None or self._instance is None:
            return
        for mq in [q for q in offsets if q.topic == topic and q in self._rebalancer.process_queues]:
            pq = self._rebalancer.process_queues.pop(mq)
            pq.dropped = True
            self._pulls.stop(mq)
        for mq, offset in offsets.items():
            self._store.update(mq, offset)
        await self._store.persist(list(offsets))
        for mq in offsets:
            self._store.remove(mq)
        log.info("consumer %s: offsets of %s reset to %s", self.group, topic, {str(q): o for q, o in offsets.items()})
        self._instance.rebalance_soon()

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

    async def _send_back(self, mq: MessageQueue, msg: MessageExt, delay_level: int = 0) -> None:
        """CONSUMER_SEND_MSG_BACK (36) to the master of the queue's broker (else the message's store host);
        delay level 0 lets the broker pick the next retry level."""
        assert self._instance is not None
        addr = self._instance.broker_addr(mq.broker_name, only_this=True) or msg.store_host
        await broker_api.send_message_back(
            self._instance.pool,
            addr,
            self.group,
            msg.commit_log_offset,
            delay_level=delay_level,
            origin_msg_id=msg.msg_id,
            origin_topic=msg.topic,
            max_reconsume_times=self.max_reconsume_times,
        )

    async def _dead_letter(self, mq: MessageQueue, msg: MessageExt) -> None:
        """An orderly consumer's message out of retries: send-back with delay level -1, straight to the DLQ."""
        await self._send_back(mq, msg, delay_level=-1)

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
