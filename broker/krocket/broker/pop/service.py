"""Pops, acks and redelivery on a master, over the broker's store (RocketMQ 5's POP, as the proxy drives it).

A pop reads the group's pop offset of each readable queue of the topic (from a random one on; the group's pop
retry topic ``%RETRY%{group}_{topic}`` first one time in five, and whenever the topic had fewer messages than
asked), appends a checkpoint to the pop log, moves the pop offsets (the consumer-offset table, shared with 4.x
pulls), and answers only once the checkpoint is as durable as a send would be (SYNC_FLUSH, SYNC_MASTER). An ack,
a changed invisible time and a DLQ forward append their records the same way before they answer.

A lease whose invisible time passes is redelivered: its message is put to the pop retry topic with one more
reconsume time (the delivery attempt), or to ``%DLQ%{group}`` once it was delivered the group's max attempts
(retryMaxTimes + 1); then an ack record settles the lease. FIFO groups (consumeMessageOrderly) get a queue's
messages only while none of that queue is in flight, and a timed-out batch is delivered again in place.

After ``kill -9`` the pop log is replayed from the oldest checkpoint a lease still needed when the replay offset
was last written (``config/popLog.json``, written after the offsets it depends on): nothing acked comes back,
nothing unacked is dropped (it is delivered again when its time is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from krocket.broker.config_file import ConfigFile
from krocket.broker.processors.send_back import SendBackTarget, dlq_topic, ensure_topic, retry_properties
from krocket.broker.service import BrokerService, SendOutcome
from krocket.broker.store import GetStatus
from krocket.common.codes import PERM_READ_WRITE
from krocket.common.errors import KrocketError
from krocket.common.jsonfile import read_json
from krocket.common.message import MessageExt
from krocket.common.message_id import pack_host
from krocket.common.record import decode_pulled_records, record_host
from krocket.common.topic import RETRY_GROUP_PREFIX, TopicConfig

from .handle import InvalidReceiptHandle, ReceiptHandle
from .leases import Lease, OffsetChange, PopLeases
from .records import ACK, CHECKPOINT, POP_LOG_TOPIC, REWIND, PopRecord

log = logging.getLogger(__name__)

MAX_BATCH = 32  # messages per pop (the proxy's cap)
RETRY_FIRST_PROBABILITY = 0.2  # RocketMQ's popFromRetryProbability
MIN_INVISIBLE_MS, MAX_INVISIBLE_MS = 10_000, 12 * 3_600_000  # what a receive may ask (the proxy's limits)
AUTO_RENEW_INVISIBLE_MS = 60_000  # a push consumer's lease, renewed while its client lives
RENEW_AHEAD_MS = 10_000  # renew leases this close to their time
MAX_RENEW_MS = 3 * 3_600_000  # a message held longer than this by a push consumer is redelivered
CLIENT_GONE_MS = 1_000  # a gone client's leases come back this soon
TICK_S = 0.1
MAX_REDELIVERIES_PER_TICK = 256
FILE_NAME = "popLog.json"
_HOST = pack_host(("127.0.0.1", 0))


def pop_retry_topic(group: str, topic: str) -> str:
    """RocketMQ 5's pop retry topic (V1 naming)."""
    return f"{RETRY_GROUP_PREFIX}{group}_{topic}"


@dataclass(slots=True)
class Delivery:
    message: MessageExt
    handle: ReceiptHandle
    attempt: int
    topic: str  # the topic the client subscribed to (the original one for a retry copy)


def _now_ms() -> int:
    return int(time.time() * 1000)


class PopService:
    def __init__(self, service: BrokerService, config_dir: Path) -> None:
        self._service = service
        self._store = service.store
        self._file = ConfigFile(config_dir / FILE_NAME, "pop log offset")
        self.leases = PopLeases()
        # Whether a client still holds its leases (set by the gRPC service; a renewal stops once it is gone).
        self.client_alive: Callable[[str], bool] = lambda client_id: True
        self._task: asyncio.Task[None] | None = None
        self.redelivered = 0
        self.dead_lettered = 0

    # -- start, replay, persist -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._service.topics.get(POP_LOG_TOPIC) is None:
            self._service.topics.upsert(TopicConfig(POP_LOG_TOPIC, 1, 1, PERM_READ_WRITE))
        self.replay()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.persist()

    def replay(self) -> None:
        start = int(read_json(self._file.path, {}).get("replayFrom", 0))
        offset, records = max(start, self._store.min_offset(POP_LOG_TOPIC, 0)), 0
        while True:
            got = self._store.get_messages(POP_LOG_TOPIC, 0, offset, max_msgs=256)
            if got.status is not GetStatus.FOUND:
                break
            for msg in _records(got.body, offset):
                try:
                    record = PopRecord.decode(msg.body)
                except KrocketError as exc:
                    log.warning("pop log record at %d skipped: %s", msg.queue_offset, exc)
                    continue
                self._apply_offset(self.leases.apply(record, msg.queue_offset), replay=True)
                records += 1
            offset = got.next_begin_offset
        if records:
            log.info("pop log replayed from %d: %d records, %d deliveries in flight", start, records, len(self.leases))

    def persist(self) -> None:
        """Write the replay offset, after the pop offsets it relies on are on disk."""
        replay_from = self.leases.replay_from(self._store.max_offset(POP_LOG_TOPIC, 0))
        if self._service.offsets.persist():
            self._file.write({"replayFrom": replay_from})

    def _apply_offset(self, change: OffsetChange | None, replay: bool) -> None:
        if change is None:
            return
        offsets = self._service.offsets
        if change.at_least:
            if not replay:
                return  # a live pop committed the offset it read to (past filtered messages) itself
            current = offsets.query(change.group, change.topic, change.queue_id)
            if current is not None and current >= change.offset:
                return
        offsets.commit(change.group, change.topic, change.queue_id, change.offset)

    async def _log(self, record: PopRecord) -> int:
        """Append ``record`` to the pop log and apply it; returns once it is as durable as a send's ack needs
        (raises, applied, when that wait fails)."""
        outcome = self._service.store_send(POP_LOG_TOPIC, 0, record.encode(), {}, 0, 0, _now_ms(), _HOST)
        self._apply_offset(self.leases.apply(record, outcome.queue_offset), replay=False)
        if self._service.must_wait:
            done = await self._service.finish(outcome)
            if done.code:
                raise KrocketError(done.remark or "the pop log write was not stored durably", done.code)
        return outcome.queue_offset

    # -- pop ------------------------------------------------------------------------------------------------
    def _start_offset(self, group: str, topic: str, queue_id: int) -> int:
        offset = self._service.query_offset(group, topic, queue_id)
        if offset is None:  # a new group on an old queue starts at its end (RocketMQ's CONSUME_FROM_LAST_OFFSET)
            offset = self._store.max_offset(topic, queue_id)
        return max(offset, self._store.min_offset(topic, queue_id))

    def watch_list(self, group: str, topic: str) -> list[tuple[str, int, int]]:
        """(topic, queue, offset) a long-polling pop waits on: the topic's readable queues and its retry topic."""
        config = self._service.topics.get(topic)
        queues = config.read_queue_nums if config is not None else 0
        retry = pop_retry_topic(group, topic)
        out = [(topic, q, self._start_offset(group, topic, q)) for q in range(queues)]
        return [*out, (retry, 0, self._start_offset(group, retry, 0))]

    async def pop(
        self,
        group: str,
        topic: str,
        codes: set[int] | None,
        batch: int,
        invisible_ms: int,
        client_id: str = "",
        auto_renew: bool = False,
    ) -> list[Delivery]:
        """Up to ``batch`` messages of ``topic`` for ``group``, leased for ``invisible_ms``."""
        service = self._service
        group_config = service.groups.check_consumable(group)
        config = service._readable_topic(topic)
        orderly = group_config.consume_message_orderly
        batch = max(1, min(batch, MAX_BATCH))
        queues = list(range(max(config.read_queue_nums, 0)))
        start = random.randrange(len(queues)) if queues else 0
        order = [(topic, q) for q in queues[start:] + queues[:start]]
        retry = pop_retry_topic(group, topic)
        has_retry = not orderly and service.topics.get(retry) is not None
        if has_retry:
            if random.random() < RETRY_FIRST_PROBABILITY:
                order.insert(0, (retry, 0))
            else:
                order.append((retry, 0))
        out: list[Delivery] = []
        for stored_topic, queue_id in order:
            if len(out) >= batch:
                break
            if orderly and self.leases.busy(group, stored_topic, queue_id):
                continue  # FIFO: the queue's previous batch is still in flight
            out.extend(
                await self._pop_queue(
                    group, topic, stored_topic, queue_id, codes, batch - len(out), invisible_ms, client_id, auto_renew
                )
            )
        return out

    async def _pop_queue(
        self,
        group: str,
        topic: str,
        stored_topic: str,
        queue_id: int,
        codes: set[int] | None,
        batch: int,
        invisible_ms: int,
        client_id: str,
        auto_renew: bool,
    ) -> list[Delivery]:
        offset = self._start_offset(group, stored_topic, queue_id)
        got = self._store.get_messages(stored_topic, queue_id, offset, max_msgs=batch, tag_codes=codes)
        if got.status is GetStatus.NO_MATCHED_MESSAGE:
            self._service.offsets.commit(group, stored_topic, queue_id, got.next_begin_offset)
            return []
        if got.status is not GetStatus.FOUND:
            return []
        messages = _records(got.body, offset)
        if not messages:
            return []
        pop_ms = _now_ms()
        attempts = [self.leases.redelivery_attempt((group, stored_topic, queue_id, m.queue_offset),
                                                   m.reconsume_times + 1) for m in messages]  # fmt: skip
        record = PopRecord(
            CHECKPOINT,
            group,
            stored_topic,
            queue_id,
            [m.queue_offset for m in messages],
            pop_ms,
            invisible_ms,
            attempts,
            client_id,
            auto_renew,
        )
        # The offset moves before the checkpoint's durability wait, so concurrent pops take the next messages;
        # if that wait fails, the leases stand and are redelivered when their time is up.
        self._service.offsets.commit(group, stored_topic, queue_id, got.next_begin_offset)
        await self._log(record)
        self._service.pulled_messages += len(messages)
        broker = self._service.config.broker_name
        real_topic = topic
        return [
            Delivery(
                m, ReceiptHandle(stored_topic, queue_id, m.queue_offset, pop_ms, invisible_ms, broker), a, real_topic
            )
            for m, a in zip(messages, attempts, strict=True)
        ]

    # -- settle ---------------------------------------------------------------------------------------------
    def _lease(self, group: str, handle: ReceiptHandle) -> Lease:
        if handle.broker_name != self._service.config.broker_name:
            raise InvalidReceiptHandle(
                f"the receipt handle belongs to broker {handle.broker_name}, not {self._service.config.broker_name}"
            )
        lease = self.leases.find((group, handle.topic, handle.queue_id, handle.offset), handle.pop_ms)
        if lease is None:
            raise InvalidReceiptHandle("the message of this receipt handle was already acked or delivered again")
        if lease.due_ms <= _now_ms():
            raise InvalidReceiptHandle("receipt handle is expired: the invisible time passed")
        return lease

    async def ack(self, group: str, handle: ReceiptHandle) -> None:
        lease = self._lease(group, handle)
        await self._log(PopRecord(ACK, group, lease.topic, lease.queue_id, [lease.offset], lease.pop_ms))

    async def change_invisible(self, group: str, handle: ReceiptHandle, invisible_ms: int) -> ReceiptHandle:
        """Move the delivery's invisible time to ``invisible_ms`` from now; the new handle replaces the old."""
        lease = self._lease(group, handle)
        pop_ms = max(_now_ms(), lease.pop_ms + 1)
        record = PopRecord(
            CHECKPOINT, group, lease.topic, lease.queue_id, [lease.offset], pop_ms, invisible_ms, [lease.attempt],
            lease.client_id,
        )  # fmt: skip
        await self._log(record)
        return ReceiptHandle(lease.topic, lease.queue_id, lease.offset, pop_ms, invisible_ms, handle.broker_name)

    async def forward_to_dlq(self, group: str, handle: ReceiptHandle) -> None:
        """The client gives up on the message (a FIFO consumer after its max attempts): to ``%DLQ%{group}``."""
        lease = self._lease(group, handle)
        msg = self._read(lease)
        if msg is not None:
            await self._put_copy(group, msg, dead=True)
        await self._log(PopRecord(ACK, group, lease.topic, lease.queue_id, [lease.offset], lease.pop_ms))

    def client_gone(self, client_id: str) -> int:
        """A client terminated or vanished: its leases come back in a second, not at their invisible time."""
        soon = _now_ms() + CLIENT_GONE_MS
        leases = self.leases.of_client(client_id)
        for lease in leases:
            self.leases.release_soon(lease, soon)
        return len(leases)

    # -- redelivery -----------------------------------------------------------------------------------------
    def _read(self, lease: Lease) -> MessageExt | None:
        got = self._store.get_messages(lease.topic, lease.queue_id, lease.offset, max_msgs=1)
        if got.status is not GetStatus.FOUND:
            return None
        messages = _records(got.body, lease.offset)
        return messages[0] if messages and messages[0].queue_offset == lease.offset else None

    async def _put_copy(self, group: str, msg: MessageExt, dead: bool) -> None:
        """``msg`` into the pop retry topic (one more reconsume time) or the group's DLQ."""
        service = self._service
        real = msg.properties.get("RETRY_TOPIC") or msg.topic
        target = SendBackTarget(dlq_topic(group) if dead else pop_retry_topic(group, real), 0, dead)
        created = ensure_topic(service, target.topic, 1)
        props = retry_properties(msg, target)
        outcome = service.send(
            target.topic, 0, msg.body, props, msg.flag, msg.sys_flag, msg.born_timestamp,
            record_host(msg.born_host), msg.reconsume_times + (0 if dead else 1),
        )  # fmt: skip
        if inspect.isawaitable(outcome):
            outcome = await outcome
        assert isinstance(outcome, SendOutcome)
        if outcome.code:
            raise KrocketError(outcome.remark or "the redelivery was not stored durably", outcome.code)
        if created and service.publish_routes is not None:
            await service.publish_routes()
        if dead:
            self.dead_lettered += 1
            log.info("group %s: message %s reached %s after %d deliveries", group, msg.msg_id, target.topic,
                     msg.reconsume_times + 1)  # fmt: skip

    def _max_attempts(self, group: str) -> int:
        return self._service.groups.retry_max_times(group) + 1

    async def _redeliver(self, lease: Lease) -> None:
        config = self._service.groups.get(lease.group)
        if config is not None and config.consume_message_orderly and not lease.topic.startswith(RETRY_GROUP_PREFIX):
            await self._redeliver_in_place(lease)
            return
        msg = self._read(lease)
        if msg is not None:
            await self._put_copy(lease.group, msg, dead=lease.attempt >= self._max_attempts(lease.group))
            self.redelivered += 1
        await self._log(PopRecord(ACK, lease.group, lease.topic, lease.queue_id, [lease.offset], lease.pop_ms))

    async def _redeliver_in_place(self, lease: Lease) -> None:
        """A FIFO queue's batch timed out: the queue is popped again from its first unsettled message, with one
        more attempt (to the DLQ once out of attempts, so the queue moves on)."""
        in_queue = self.leases.in_queue(lease.group, lease.topic, lease.queue_id)
        first = in_queue[0] if in_queue else lease
        if first.attempt >= self._max_attempts(lease.group):
            msg = self._read(first)
            if msg is not None:
                await self._put_copy(first.group, msg, dead=True)
            await self._log(PopRecord(ACK, first.group, first.topic, first.queue_id, [first.offset], first.pop_ms))
            in_queue = in_queue[1:]
            if not in_queue:
                return
        record = PopRecord(
            REWIND, lease.group, lease.topic, lease.queue_id, [x.offset for x in in_queue],
            attempts=[x.attempt + 1 for x in in_queue],
        )  # fmt: skip
        await self._log(record)

    async def _renew(self) -> None:
        now = _now_ms()
        for lease in self.leases.renewable(now + RENEW_AHEAD_MS):
            if now - lease.first_pop_ms >= MAX_RENEW_MS or not self.client_alive(lease.client_id):
                lease.auto_renew = False  # it comes back when its time is up
                continue
            record = PopRecord(
                CHECKPOINT, lease.group, lease.topic, lease.queue_id, [lease.offset], max(now, lease.pop_ms + 1),
                AUTO_RENEW_INVISIBLE_MS, [lease.attempt], lease.client_id, True, lease.first_pop_ms,
            )  # fmt: skip
            await self._log(record)

    async def tick(self) -> None:
        """One round: renew what push consumers still hold, redeliver what is due."""
        if self._service.config.is_slave:
            return
        await self._renew()
        for lease in self.leases.due(_now_ms(), MAX_REDELIVERIES_PER_TICK):
            if self.leases.get(lease.key) is not lease:
                continue  # settled by an earlier redelivery of this round (a FIFO rewind)
            try:
                await self._redeliver(lease)
            except KrocketError as exc:
                log.warning("redelivery of %s queue %d offset %d failed (%s); trying again in 5 s", lease.topic,
                            lease.queue_id, lease.offset, exc.message)  # fmt: skip
                self.leases.retry_later(lease, _now_ms() + 5_000)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                log.exception("pop redelivery round failed")


def _records(body: bytes, from_offset: int) -> list[MessageExt]:
    """The records of a read, bodies as stored (a compressed body stays compressed: 5.x clients inflate it);
    a record that does not decode is logged and left out."""
    pulled = decode_pulled_records(body, from_offset, decompress=False)
    for bad in pulled.undecodable:
        log.warning("record at queue offset %d not delivered: %s", bad.queue_offset, bad.reason)
    return pulled.messages
