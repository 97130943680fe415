"""The broker's service layer: what the remoting processors and the HTTP API both call.

Sends: ``store_send`` / ``store_batch`` store and wait for nothing; ``must_wait`` says whether the ack must wait
for the disk or a slave, and ``parking`` (``krocket.broker.reply_parking``) holds such acks, encoded, until it
may write them (the remoting processors and the fast path park there). ``send`` / ``send_batch`` are the same
with the wait as an awaitable (``finish``), for callers that await (send-back, tests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from krocket.broker.config import BrokerConfig
from krocket.broker.consumer_manager import ConsumerManager
from krocket.broker.ha.master import HAMaster
from krocket.broker.long_polling import LongPolling
from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.producer_manager import ProducerManager
from krocket.broker.rebalance_lock import RebalanceLockManager
from krocket.broker.reply_parking import ReplyParking
from krocket.broker.schedule import schedule_if_delayed
from krocket.broker.store import GetStatus, MessageStore
from krocket.broker.subscription_group_manager import SubscriptionGroupManager
from krocket.broker.tag_filter import parse_tag_expression
from krocket.broker.topic_manager import TopicManager
from krocket.broker.traffic_stats import TrafficStats
from krocket.broker.transaction.service import TransactionService
from krocket.common.batch import BatchItem
from krocket.common.codes import BROKER_PERMISSION_CHOICES, BROKER_PERMISSIONS, PERM_READ, PERM_WRITE, ResponseCode
from krocket.common.errors import (
    KrocketError,
    MessageIllegalError,
    NoPermissionError,
    ServiceNotAvailableError,
    TopicNotExistError,
)
from krocket.common.topic import MAX_TOPICS_PER_BATCH, TopicConfig, validate_topic

if TYPE_CHECKING:
    from krocket.broker.pop.service import PopService

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SUSPEND_S = 20.0


@dataclass(slots=True)
class SendOutcome:
    msg_id: str
    queue_id: int
    queue_offset: int
    code: int = ResponseCode.SUCCESS
    remark: str | None = None
    end_offset: int = 0  # the commit log offset just past what was stored: what a flush or a slave must cover
    created: bool = False  # the send created its topic: its ack waits until the route is at the name servers


@dataclass(slots=True)
class PullOutcome:
    code: int
    body: bytes
    next_begin_offset: int
    min_offset: int
    max_offset: int
    suggest_broker_id: int = 0
    remark: str | None = None


_PULL_CODES: dict[GetStatus, int] = {
    GetStatus.NO_MATCHED_MESSAGE: ResponseCode.PULL_RETRY_IMMEDIATELY,
    GetStatus.OFFSET_FOUND_NULL: ResponseCode.PULL_NOT_FOUND,
    GetStatus.OFFSET_OVERFLOW_ONE: ResponseCode.PULL_NOT_FOUND,
    GetStatus.OFFSET_OVERFLOW_BADLY: ResponseCode.PULL_OFFSET_MOVED,
    GetStatus.OFFSET_TOO_SMALL: ResponseCode.PULL_OFFSET_MOVED,
}


class BrokerService:
    def __init__(
        self,
        config: BrokerConfig,
        store: MessageStore,
        topics: TopicManager,
        offsets: ConsumerOffsetManager,
        consumers: ConsumerManager,
        polling: LongPolling,
    ) -> None:
        self.config = config
        self.store = store
        self.topics = topics
        self.offsets = offsets
        self.consumers = consumers
        self.producers = ProducerManager(config.channel_expired_timeout)  # producer groups' clients (204)
        self.polling = polling
        # Subscription groups (config/subscriptionGroup.json); ``groups.retry_max_times(group)`` for send-back.
        self.groups = SubscriptionGroupManager(config.store_dir / "config", config.auto_create_subscription_group)
        self.groups.load()
        self.locks = RebalanceLockManager()  # orderly consumers' queue locks (41, 42)
        self.delay_levels = config.delay_levels()  # messageDelayLevel
        self._rr = 0
        self.sent_messages = 0
        self.pulled_messages = 0
        self.traffic = TrafficStats()  # per topic and group, for /metrics, stats verbs and the console
        self._ha_master: HAMaster | None = None  # on a master with replication
        self._sync_flush = config.flush_disk_type == "SYNC_FLUSH"
        # Acks that wait for the disk (SYNC_FLUSH) or a slave (SYNC_MASTER), parked encoded until they may leave.
        self.parking = ReplyParking(
            self._sync_flush,
            config.sync_flush_timeout / 1000.0,
            config.slave_timeout_mills / 1000.0,
            store.request_flush,
        )
        store.on_flushed(self.parking.flushed)
        self.must_wait = self._sync_flush  # sends' acks park (SYNC_FLUSH; SYNC_MASTER once replication is set)
        self._last_refusal_log = float("-inf")
        # Awaited after a send auto-created its topic, so the route is at the name servers before the ack.
        self.publish_routes: Callable[[], Awaitable[None]] | None = None
        self.transactions: TransactionService | None = None  # on a master: half messages and their outcomes
        self.pop: PopService | None = None  # on a master: 5.x consumers' pops, acks and redeliveries
        self.slave_read_distance = _memory_bytes() * config.access_message_in_memory_max_ratio // 100

    # -- send ---------------------------------------------------------------------------------------------
    @property
    def ha_master(self) -> HAMaster | None:
        return self._ha_master

    @ha_master.setter
    def ha_master(self, master: HAMaster | None) -> None:
        """The master's replication; under SYNC_MASTER parked acks wait for a slave's ack too."""
        self._ha_master = master
        sync_master = master is not None and self.config.broker_role == "SYNC_MASTER"
        if master is not None and sync_master:
            master.add_ack_listener(self.parking.acked)
        self.parking.replicate_to(master if sync_master else None)
        self.must_wait = self._sync_flush or sync_master

    def _check_writable(self) -> None:
        if self.config.is_slave:
            raise ServiceNotAvailableError(
                f"broker {self.config.broker_name} id {self.config.broker_id} is a slave; send to its master"
            )
        self.store.check_writable(0)  # a full disk refuses (SERVICE_NOT_AVAILABLE, "disk full") before anything

    def _resolve_queue(self, config: TopicConfig, queue_id: int) -> int:
        if queue_id < 0:
            self._rr += 1
            return self._rr % max(config.write_queue_nums, 1)
        return queue_id

    def _check_body(self, size: int) -> None:
        if size > self.config.max_message_size:
            raise MessageIllegalError(
                f"message body is {size} bytes; the broker limit (maxMessageSize) is {self.config.max_message_size}"
            )
        if size == 0:
            raise MessageIllegalError("message body is empty")

    def send(
        self,
        topic: str,
        queue_id: int,
        body: bytes,
        properties: dict[str, str],
        flag: int,
        sys_flag: int,
        born_timestamp: int,
        born_host: bytes,
        reconsume_times: int = 0,
        default_topic: str | None = None,
        default_queue_nums: int | None = None,
    ) -> SendOutcome | Awaitable[SendOutcome]:
        """Store one message. Returns the outcome at once when nothing needs waiting for (ASYNC_FLUSH,
        ASYNC_MASTER: the transport writes the appends into the files before it sends the reply), else an
        awaitable that waits for the disk, a slave or the new topic's route."""
        return self._outcome(
            self.store_send(
                topic,
                queue_id,
                body,
                properties,
                flag,
                sys_flag,
                born_timestamp,
                born_host,
                reconsume_times,
                default_topic,
                default_queue_nums,
            )
        )

    def store_send(
        self,
        topic: str,
        queue_id: int,
        body: bytes,
        properties: dict[str, str],
        flag: int,
        sys_flag: int,
        born_timestamp: int,
        born_host: bytes,
        reconsume_times: int = 0,
        default_topic: str | None = None,
        default_queue_nums: int | None = None,
    ) -> SendOutcome:
        """Store one message and wait for nothing: the outcome says what its ack needs (``end_offset``, and
        ``created`` when the send created its topic); see ``must_wait``."""
        self._check_writable()
        self._check_body(len(body))
        created, queue_id = self._target(topic, queue_id, default_topic, default_queue_nums)
        stored_topic, stored_queue, properties = self.schedule(properties, topic, queue_id)
        result = self._put(
            lambda: self.store.put_message(
                stored_topic,
                stored_queue,
                body,
                properties,
                flag=flag,
                sys_flag=sys_flag,
                born_timestamp=born_timestamp,
                born_host=born_host,
                reconsume_times=reconsume_times,
            )
        )
        self.sent_messages += 1
        return SendOutcome(result.msg_id, queue_id, result.queue_offset, end_offset=result.end_offset, created=created)

    def schedule(self, properties: dict[str, str], topic: str, queue_id: int) -> tuple[str, int, dict[str, str]]:
        """Where a put to ``topic``/``queue_id`` is stored: a delayed or timed message (DELAY > 0, TIMER_*) waits
        in the schedule; every put of a message (sends, retries) goes through here."""
        return schedule_if_delayed(properties, topic, queue_id, self.delay_levels, int(time.time() * 1000))

    def send_batch(
        self,
        topic: str,
        queue_id: int,
        items: list[BatchItem],
        sys_flag: int,
        born_timestamp: int,
        born_host: bytes,
        default_topic: str | None = None,
        default_queue_nums: int | None = None,
    ) -> SendOutcome | Awaitable[SendOutcome]:
        """``store_batch``, then what ``send`` waits for."""
        return self._outcome(
            self.store_batch(
                topic, queue_id, items, sys_flag, born_timestamp, born_host, default_topic, default_queue_nums
            )
        )

    def store_batch(
        self,
        topic: str,
        queue_id: int,
        items: list[BatchItem],
        sys_flag: int,
        born_timestamp: int,
        born_host: bytes,
        default_topic: str | None = None,
        default_queue_nums: int | None = None,
    ) -> SendOutcome:
        """Store a batch (one topic and queue) and wait for nothing, as ``store_send``."""
        self._check_writable()
        if not items:
            raise MessageIllegalError("batch holds no message")
        total = 0
        for item in items:
            if item.properties and self.schedule(item.properties, topic, 0)[0] != topic:
                raise MessageIllegalError("a batch must not hold delayed or timed messages (RocketMQ's rule)")
            self._check_body(len(item.body))
            total += len(item.body)
        if total > self.config.max_message_size:
            raise MessageIllegalError(
                f"batch bodies add up to {total} bytes; the limit (maxMessageSize) is {self.config.max_message_size}"
            )
        created, queue_id = self._target(topic, queue_id, default_topic, default_queue_nums)
        results = self._put(
            lambda: self.store.put_messages(
                topic,
                queue_id,
                [(i.body, i.properties, i.flag) for i in items],
                sys_flag=sys_flag,
                born_timestamp=born_timestamp,
                born_host=born_host,
                raw_properties=[i.raw_properties for i in items],
            )
        )
        self.sent_messages += len(results)
        msg_ids = ",".join(r.msg_id for r in results)
        return SendOutcome(
            msg_ids, queue_id, results[0].queue_offset, end_offset=results[-1].end_offset, created=created
        )

    def _target(
        self, topic: str, queue_id: int, default_topic: str | None, default_queue_nums: int | None
    ) -> tuple[bool, int]:
        """(whether this send creates the topic, the queue it goes to)."""
        created = topic not in self.topics.topics
        config = self.topics.for_send(topic, default_topic, default_queue_nums, max(queue_id, 0))
        return created, self._resolve_queue(config, queue_id)

    def _put(self, put: Callable[[], T]) -> T:
        try:
            return put()
        except ServiceNotAvailableError as exc:
            self._refused(exc)
            raise

    def _outcome(self, outcome: SendOutcome) -> SendOutcome | Awaitable[SendOutcome]:
        if outcome.created or self.must_wait:
            return self.finish(outcome)
        return outcome

    def _refused(self, exc: KrocketError) -> None:
        """Log a refused write (a full disk, say) at most every 30 s, not once per message."""
        now = time.monotonic()
        if now - self._last_refusal_log >= 30.0:
            self._last_refusal_log = now
            log.warning("refusing writes: %s", exc.message)

    async def finish(self, outcome: SendOutcome) -> SendOutcome:
        """What a stored send's ack waits for, as an awaitable (a task's worth; the remoting processors park
        instead, except after a topic was created): the new topic's route at the name servers, then SYNC_FLUSH
        the disk and SYNC_MASTER a slave (a failure becomes the send's status)."""
        end_offset = outcome.end_offset
        if outcome.created and self.publish_routes is not None:
            await self.publish_routes()
        try:
            if self.config.flush_disk_type == "SYNC_FLUSH":
                await self.store.wait_flushed(end_offset)
            if self.config.broker_role == "SYNC_MASTER" and self.ha_master is not None:
                await self.ha_master.wait_replicated(end_offset)
        except KrocketError as exc:
            outcome.code = exc.code
            outcome.remark = exc.message
        return outcome

    # -- pull -----------------------------------------------------------------------------------------------
    def _readable_topic(self, topic: str) -> TopicConfig:
        validate_topic(topic)
        config = self.topics.get(topic)
        if config is None and self.config.is_slave:
            # Replicated data can arrive before the next metadata sync brings the topic's config.
            queue_ids = self.store.queue_ids(topic)
            if queue_ids:
                config = TopicConfig(topic, max(queue_ids) + 1, max(queue_ids) + 1)
        if config is None:
            raise TopicNotExistError(f"topic {topic} does not exist on broker {self.config.broker_name}")
        if not config.perm & PERM_READ:
            raise NoPermissionError(f"topic {topic} is not readable on broker {self.config.broker_name}")
        return config

    def _get(self, topic: str, queue_id: int, offset: int, max_msgs: int, codes: set[int] | None) -> PullOutcome:
        got = self.store.get_messages(topic, queue_id, offset, max_msgs=max_msgs, tag_codes=codes)
        status = got.status
        if status is GetStatus.FOUND:
            self.pulled_messages += got.count
            return PullOutcome(
                ResponseCode.SUCCESS,
                got.body,
                got.next_begin_offset,
                got.min_offset,
                got.max_offset,
                self._suggest_broker(got.body),
            )
        code: int
        if status is GetStatus.NO_MESSAGE_IN_QUEUE:
            code = ResponseCode.PULL_OFFSET_MOVED if offset != 0 else ResponseCode.PULL_NOT_FOUND
        else:
            code = _PULL_CODES.get(status, ResponseCode.PULL_NOT_FOUND)
        return PullOutcome(code, b"", got.next_begin_offset, got.min_offset, got.max_offset)

    def _offset_moved(self, topic: str, queue_id: int, reset_to: int) -> PullOutcome:
        """PULL_OFFSET_MOVED to where an admin reset the queue: the consumer drops its place and continues there."""
        return PullOutcome(
            ResponseCode.PULL_OFFSET_MOVED,
            b"",
            reset_to,
            self.store.min_offset(topic, queue_id),
            self.store.max_offset(topic, queue_id),
        )

    def pull(
        self,
        group: str,
        topic: str,
        queue_id: int,
        offset: int,
        max_msgs: int,
        expression: str | None,
        suspend_ms: int,
        commit_offset: int | None,
    ) -> PullOutcome | Awaitable[PullOutcome]:
        """Messages found (or a definite answer) come back at once; a pull that finds nothing and may be
        suspended returns an awaitable that long-polls until a matching message arrives."""
        self.groups.check_consumable(group, self.consumers.is_broadcasting(group))
        config = self._readable_topic(topic)
        if not 0 <= queue_id < max(config.read_queue_nums, 1):
            raise MessageIllegalError(
                f"queueId {queue_id} is out of range for topic {topic} ({config.read_queue_nums} read queues)"
            )
        if expression is None:
            sub = self.consumers.subscription(group, topic)
            codes = (sub.code_set or None) if sub else None
        else:
            codes = parse_tag_expression(expression)
        reset_to = self.offsets.take_reset(group, topic, queue_id)
        if reset_to is not None and reset_to != offset:  # an admin reset it: the consumer continues from there
            return self._offset_moved(topic, queue_id, reset_to)
        if reset_to is None and commit_offset is not None and commit_offset >= 0:
            self.offsets.commit(group, topic, queue_id, commit_offset)
        max_msgs = max(1, min(max_msgs, 1024))
        outcome = self._get(topic, queue_id, offset, max_msgs, codes)
        if outcome.code == ResponseCode.PULL_NOT_FOUND and suspend_ms > 0:
            return self._suspended_pull(topic, queue_id, offset, max_msgs, codes, suspend_ms)
        return outcome

    async def _suspended_pull(
        self, topic: str, queue_id: int, offset: int, max_msgs: int, codes: set[int] | None, suspend_ms: int
    ) -> PullOutcome:
        if self.config.long_polling_enable:
            await self.polling.wait(
                topic,
                queue_id,
                offset,
                codes,
                min(suspend_ms / 1000.0, MAX_SUSPEND_S),
                lambda: self.store.max_offset(topic, queue_id) > offset,
            )
        else:
            await asyncio.sleep(min(suspend_ms, self.config.short_polling_time_mills) / 1000.0)
        return self._get(topic, queue_id, offset, max_msgs, codes)

    def _suggest_broker(self, body: bytes) -> int:
        """Which broker the consumer should pull from next: a slave when it reads far behind the head
        (that data is likely off the page cache), as RocketMQ's accessMessageInMemoryMaxRatio does."""
        if self.config.is_slave or self.ha_master is None or len(body) < 36:
            return 0
        phy = int.from_bytes(body[28:36], "big", signed=True)
        if self.store.max_phy_offset - phy <= self.slave_read_distance:
            return 0
        slaves = self.ha_master.in_sync_slaves()
        return 1 if slaves and max(s.acked for s in slaves) > phy else 0

    def on_dispatched(self, topic: str, queue_id: int, max_offset: int, code: int | None) -> None:
        self.polling.notify(topic, queue_id, max_offset, code)

    # -- offsets ----------------------------------------------------------------------------------------------
    def query_offset(self, group: str, topic: str, queue_id: int, zero_if_not_found: bool = True) -> int | None:
        offset = self.offsets.query(group, topic, queue_id)
        if offset is not None:
            return offset
        if zero_if_not_found and self.store.min_offset(topic, queue_id) <= 0:
            return 0  # RocketMQ: a group's first start on a young queue begins at 0
        return None

    async def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """An explicit commit: acknowledged only once it is on disk, so it survives ``kill -9``. Slaves take
        commits too (consumers commit there while the master is down); their metadata sync keeps the larger."""
        if offset < 0:
            raise MessageIllegalError(f"offset must not be negative, got {offset}")
        if self.offsets.commit_from_client(group, topic, queue_id, offset):
            await self.offsets.persist_durably()

    def consumer_progress(self, group: str) -> list[dict[str, Any]]:
        rows = []
        for topic, queues in sorted(self.offsets.offsets_of(group).items()):
            for queue_id, offset in sorted(queues.items()):
                broker_offset = self.store.max_offset(topic, queue_id)
                rows.append(
                    {
                        "topic": topic,
                        "queueId": queue_id,
                        "brokerOffset": broker_offset,
                        "consumerOffset": offset,
                        "lag": max(broker_offset - offset, 0),
                    }
                )
        return rows

    def set_broker_permission(self, perm: int) -> None:
        """RocketMQ's brokerPermission at run time (wipe/add write permission): sends are refused without the write
        bit and the name servers are told at once; in memory only (a restarted broker takes its config's value)."""
        if perm not in BROKER_PERMISSIONS:
            raise MessageIllegalError(f"brokerPermission must be {BROKER_PERMISSION_CHOICES}, got {perm}")
        self.config.broker_permission = perm
        if self.topics.set_broker_permission(perm):
            log.info("broker permission is now %d (%s)", perm, "writable" if perm & PERM_WRITE else "no writes")

    def lag_by_topic(self) -> list[dict[str, Any]]:
        """Each topic holding messages or consumer offsets: the messages its queues hold and each group's lag."""
        groups_of: dict[str, dict[str, int]] = {}
        for group in self.offsets.all_groups():
            for topic, queues in self.offsets.offsets_of(group).items():
                lag = sum(max(self.store.max_offset(topic, q) - offset, 0) for q, offset in queues.items())
                groups_of.setdefault(topic, {})[group] = lag
        rows = []
        for topic, config in sorted(self.topics.topics.items()):
            queue_ids = range(max(config.read_queue_nums, config.write_queue_nums))
            held = sum(max(self.store.max_offset(topic, q) - self.store.min_offset(topic, q), 0) for q in queue_ids)
            groups = groups_of.get(topic, {})
            if held or groups:
                rows.append({"topic": topic, "messages": held, "groups": dict(sorted(groups.items()))})
        return rows

    # -- topics -----------------------------------------------------------------------------------------------
    def create_topic(self, config: TopicConfig) -> TopicConfig:
        self._check_new_topic(config)
        return self.topics.upsert(config)

    def create_topics(self, configs: list[TopicConfig]) -> list[TopicConfig]:
        """Many topics created or updated at once (all checked first); those that changed."""
        if len(configs) > MAX_TOPICS_PER_BATCH:
            raise MessageIllegalError(f"at most {MAX_TOPICS_PER_BATCH} topics per request, got {len(configs)}")
        for config in configs:
            self._check_new_topic(config)
        return self.topics.upsert_many(configs)

    def _check_new_topic(self, config: TopicConfig) -> None:
        if self.config.is_slave:
            raise ServiceNotAvailableError("topics are created on the master")
        if config.write_queue_nums > config.read_queue_nums:
            raise MessageIllegalError(
                f"topic {config.topic_name}: writeQueueNums ({config.write_queue_nums}) must not exceed readQueueNums"
                f" ({config.read_queue_nums})"
            )

    def delete_topic(self, topic: str) -> bool:
        return bool(self.delete_topics([topic]))

    def delete_topics(self, topics: list[str]) -> list[str]:
        """Many topics deleted at once, their offsets and consume queues with them; the names that existed."""
        if len(topics) > MAX_TOPICS_PER_BATCH:
            raise MessageIllegalError(f"at most {MAX_TOPICS_PER_BATCH} topics per request, got {len(topics)}")
        gone = self.topics.delete_many(topics)
        if gone:
            self.offsets.delete_topics(gone)
            self.store.delete_topics(gone)
            for topic in gone:
                self.traffic.forget_topic(topic)
        return gone

    def topic_stats(self, topic: str) -> list[dict[str, Any]]:
        config = self._readable_topic(topic)
        return [
            {"queueId": q, "minOffset": self.store.min_offset(topic, q), "maxOffset": self.store.max_offset(topic, q)}
            for q in range(config.read_queue_nums)
        ]


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 * 1024**3
