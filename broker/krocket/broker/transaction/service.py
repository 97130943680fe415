"""The broker's transaction service: it stores outcomes (END_TRANSACTION) and finds the half messages that
need a check-back (CHECK_TRANSACTION_STATE), RocketMQ's way.

Durable state lives in the store and the offsets table only: the half topic holds half messages, the op
topic one record per decided half message (its body the half's queue offset), and the internal group
``CID_RMQ_SYS_TRANS`` the check offset in the half queue and the op offset from which op records still matter.
A half message checked again is put back (a copy with TRANSACTION_CHECK_TIMES + 1) and the check offset moves
past the original, so the count survives restarts; after ``transactionCheckMax`` checks it moves to
TRANS_CHECK_MAX_TIME_TOPIC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from krocket.broker.config import BrokerConfig
from krocket.broker.consumer_manager import ConsumerManager
from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.store import MessageStore
from krocket.broker.topic_manager import TopicManager
from krocket.broker.transaction.half import Placement, check_times, checked_copy_properties, committed_message
from krocket.common.codes import PERM_READ_WRITE, RequestCode
from krocket.common.errors import MessageIllegalError
from krocket.common.headers.transaction import CheckTransactionStateHeader, EndTransactionHeader
from krocket.common.message import (
    PROPERTY_KEYS,
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TAGS,
    PROPERTY_TRANSACTION_ID,
    PROPERTY_UNIQ_KEY,
    MessageExt,
    encode_properties,
)
from krocket.common.message_id import offset_msg_id, pack_host
from krocket.common.record import (
    SYSFLAG_TRANSACTION_COMMIT,
    SYSFLAG_TRANSACTION_ROLLBACK,
    RecordError,
    decode_record,
    decode_records,
    encode_record,
)
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.topic import TopicConfig
from krocket.common.transaction import (
    CHECK_MAX_TIME_TOPIC,
    HALF_TOPIC,
    OP_HALF_TOPIC,
    OP_REMOVE_TAG,
    SYSTEM_GROUP,
    TRANSACTION_TOPICS,
)

log = logging.getLogger(__name__)

READ_BATCH = 32
REMEMBERED_OUTCOMES = 100_000  # decided half offsets kept in memory behind the check offset


def check_body(half: MessageExt, props: dict[str, str], queue_offset: int, phy: int, store_host: bytes) -> bytes:
    """The message a check request carries (one record, as RocketMQ's broker sends it): the put-back copy under
    its real topic and queue, so the producer's checker sees what it sent."""
    topic = props.get(PROPERTY_REAL_TOPIC, half.topic)
    try:
        queue_id = int(props.get(PROPERTY_REAL_QUEUE_ID, "0"))
    except ValueError:
        queue_id = 0
    return encode_record(
        topic=topic.encode(),
        body=half.body,
        properties=encode_properties(props),
        queue_id=queue_id,
        flag=half.flag,
        queue_offset=queue_offset,
        physical_offset=phy,
        sys_flag=half.sys_flag,
        born_timestamp=half.born_timestamp,
        born_host=pack_host(half.born_host),
        store_timestamp=half.store_timestamp,
        store_host=store_host,
        reconsume_times=half.reconsume_times,
    )


@dataclass(slots=True)
class CheckRequest:
    """A CHECK_TRANSACTION_STATE to send (oneway) over a producer's connection."""

    conn: Connection
    command: RemotingCommand


class TransactionService:
    def __init__(
        self,
        config: BrokerConfig,
        store: MessageStore,
        topics: TopicManager,
        offsets: ConsumerOffsetManager,
        consumers: ConsumerManager,
    ) -> None:
        self.config = config
        self.store = store
        self.topics = topics
        self.offsets = offsets
        self.consumers = consumers
        self._decided: dict[int, int] = {}  # half queue offset -> queue offset of its op record
        # UNIQ_KEYs of decided half messages (their op records carry it in KEYS): an outcome for one copy of a
        # checked half message decides its other copies too, so a late END_TRANSACTION and a check-back's
        # answer do not both commit. Oldest first, at most REMEMBERED_OUTCOMES.
        self._decided_keys: dict[str, None] = {}
        self._op_read: int | None = None  # next op queue offset to read (in memory)
        self.checks_sent = 0
        # Producers on other protocols (5.x gRPC: krocket.broker.grpc), asked when no remoting producer of the
        # group is connected: given the put-back copy of the half message and its properties, True once asked.
        self.check_elsewhere: Callable[[MessageExt, dict[str, str]], bool] | None = None

    def ensure_topics(self) -> None:
        """The system topics exist (one queue each, readable and writable)."""
        for topic in TRANSACTION_TOPICS:
            if self.topics.get(topic) is None:
                self.topics.upsert(TopicConfig(topic, 1, 1, PERM_READ_WRITE))

    # -- outcomes ----------------------------------------------------------------------------------------
    def half_at(self, commit_log_offset: int) -> MessageExt:
        raw = self.store.read_record(commit_log_offset)
        if raw is None:
            raise MessageIllegalError(f"no message at commit log offset {commit_log_offset}")
        try:
            msg = decode_record(raw, decompress=False)
        except RecordError as exc:
            raise MessageIllegalError(f"the record at commit log offset {commit_log_offset}: {exc}") from None
        if msg.topic != HALF_TOPIC:
            raise MessageIllegalError(f"the message at commit log offset {commit_log_offset} is not a half message")
        return msg

    def end(self, header: EndTransactionHeader) -> str:
        """Store a producer's outcome; returns what was done ("commit", "rollback", "unknown", "duplicate")."""
        kind = header.commit_or_rollback
        if kind not in (0, SYSFLAG_TRANSACTION_COMMIT, SYSFLAG_TRANSACTION_ROLLBACK):
            raise MessageIllegalError(f"commitOrRollback {kind} is neither 0, 8 (commit) nor 12 (rollback)")
        if kind == 0:
            return "unknown"
        half = self.half_at(header.commit_log_offset)
        group = half.properties.get(PROPERTY_PRODUCER_GROUP, "")
        if group != header.producer_group:
            raise MessageIllegalError(
                f"the half message belongs to producer group {group!r}, not {header.producer_group!r}"
            )
        real_topic = half.properties.get(PROPERTY_REAL_TOPIC, "")
        if header.topic and header.topic != real_topic:
            raise MessageIllegalError(f"the half message's topic is {real_topic!r}, not {header.topic!r}")
        self._read_ops()
        if half.queue_offset in self._decided or self._key_of(half) in self._decided_keys:
            return "duplicate"
        if kind == SYSFLAG_TRANSACTION_COMMIT:
            self._put(half, committed_message(half))
        self._write_op(half)
        return "commit" if kind == SYSFLAG_TRANSACTION_COMMIT else "rollback"

    def _put(self, half: MessageExt, placement: Placement) -> tuple[int, int]:
        """(commit log offset, queue offset) of ``half`` stored as ``placement`` says."""
        result = self.store.put_message(
            placement.topic,
            placement.queue_id,
            half.body,
            placement.properties,
            flag=half.flag,
            sys_flag=placement.sys_flag,
            born_timestamp=half.born_timestamp,
            born_host=pack_host(half.born_host),
            reconsume_times=half.reconsume_times,
        )
        return result.commit_log_offset, result.queue_offset

    @staticmethod
    def _key_of(half: MessageExt) -> str | None:
        return half.properties.get(PROPERTY_UNIQ_KEY) or None

    def _write_op(self, half: MessageExt) -> None:
        props = {PROPERTY_TAGS: OP_REMOVE_TAG}
        key = self._key_of(half)
        if key is not None:
            props[PROPERTY_KEYS] = key
        result = self.store.put_message(OP_HALF_TOPIC, 0, str(half.queue_offset).encode(), props)
        self._decided[half.queue_offset] = result.queue_offset
        self._remember_key(key)

    def _remember_key(self, key: str | None) -> None:
        if key is None:
            return
        self._decided_keys[key] = None
        while len(self._decided_keys) > REMEMBERED_OUTCOMES:
            del self._decided_keys[next(iter(self._decided_keys))]

    # -- op records --------------------------------------------------------------------------------------
    def _read_ops(self) -> None:
        """Learn the op records written since the last read (after a restart: from the durable op offset)."""
        if self._op_read is None:
            saved = self.offsets.query(SYSTEM_GROUP, OP_HALF_TOPIC, 0)
            self._op_read = max(saved or 0, self.store.min_offset(OP_HALF_TOPIC, 0))
        end = self.store.max_offset(OP_HALF_TOPIC, 0)
        while self._op_read < end:
            result = self.store.get_messages(OP_HALF_TOPIC, 0, self._op_read, READ_BATCH)
            if result.count == 0:
                self._op_read = max(self._op_read + 1, result.next_begin_offset)
                continue
            for op in decode_records(result.body):
                try:
                    self._decided.setdefault(int(op.body.decode()), op.queue_offset)
                    self._remember_key(op.properties.get(PROPERTY_KEYS))
                except ValueError:
                    log.warning("op record %d of %s has an unreadable body", op.queue_offset, OP_HALF_TOPIC)
            self._op_read = result.next_begin_offset

    # -- check-back -------------------------------------------------------------------------------------
    def _check_offset(self) -> int:
        saved = self.offsets.query(SYSTEM_GROUP, HALF_TOPIC, 0)
        return max(saved or 0, self.store.min_offset(HALF_TOPIC, 0))

    def check_round(self, now_ms: int | None = None) -> list[CheckRequest]:
        """One pass over the half queue (what was there when it began): half messages older than
        ``transactionTimeOut`` with no op record are put back with one more check, and a check request is made
        for a live producer of their group; those checked ``transactionCheckMax`` times move to
        TRANS_CHECK_MAX_TIME_TOPIC. Progress (check offset, op offset) is committed to the offsets table."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self._read_ops()
        offset = self._check_offset()
        end = self.store.max_offset(HALF_TOPIC, 0)
        requests: list[CheckRequest] = []
        waiting = False
        while offset < end and not waiting:
            result = self.store.get_messages(HALF_TOPIC, 0, offset, READ_BATCH)
            if result.count == 0:
                offset = max(offset + 1, result.next_begin_offset)
                continue
            for half in decode_records(result.body):
                if half.queue_offset < offset:
                    continue
                if half.queue_offset >= end:
                    break
                if half.queue_offset not in self._decided and self._key_of(half) in self._decided_keys:
                    self._write_op(half)  # another copy of it was decided
                elif half.queue_offset not in self._decided:
                    if now - half.born_timestamp < self.config.transaction_time_out:
                        waiting = True
                        break
                    request = self._check(half)
                    if request is not None:
                        requests.append(request)
                offset = half.queue_offset + 1
        self._commit_progress(offset)
        return requests

    def _check(self, half: MessageExt) -> CheckRequest | None:
        raw = self.store.read_record(half.commit_log_offset)
        half = decode_record(raw, decompress=False) if raw is not None else half
        if check_times(half) >= self.config.transaction_check_max:
            log.warning(
                "half message %s of group %s was checked %d times; moving it to %s",
                half.msg_id,
                half.properties.get(PROPERTY_PRODUCER_GROUP),
                check_times(half),
                CHECK_MAX_TIME_TOPIC,
            )
            self._put(half, Placement(CHECK_MAX_TIME_TOPIC, 0, dict(half.properties), half.sys_flag))
            return None
        props = checked_copy_properties(half)
        phy, qoff = self._put(half, Placement(HALF_TOPIC, 0, props, half.sys_flag))
        group = props.get(PROPERTY_PRODUCER_GROUP, "")
        channels = [c for c in self.consumers.producers.get(group, {}).values() if c.connection.is_open]
        if not channels:
            if self.check_elsewhere is not None and self.check_elsewhere(half, props):
                self.checks_sent += 1
                return None
            log.info("no producer of group %s is connected to check half message %s", group, half.msg_id)
            return None
        channel = max(channels, key=lambda c: c.last_update)
        store_host = pack_host(half.store_host)
        header = CheckTransactionStateHeader(
            tran_state_table_offset=qoff,
            commit_log_offset=phy,
            msg_id=half.msg_id,
            transaction_id=props.get(PROPERTY_TRANSACTION_ID) or half.msg_id,
            offset_msg_id=offset_msg_id(store_host, phy),
        )
        body = check_body(half, props, qoff, phy, store_host)
        cmd = RemotingCommand(RequestCode.CHECK_TRANSACTION_STATE, ext_fields=header.to_fields(), body=body)
        self.checks_sent += 1
        return CheckRequest(channel.connection, cmd)

    def _commit_progress(self, check_offset: int) -> None:
        """Commit the check offset, and the op offset from which op records still name a half message at or
        past it (what a restart must read again). Outcomes behind the check offset stay known in memory, up to
        ``REMEMBERED_OUTCOMES``, so a repeated END_TRANSACTION is a no-op; past that (or after a restart) a
        repeated commit delivers again, as RocketMQ's broker does."""
        self.offsets.commit(SYSTEM_GROUP, HALF_TOPIC, 0, check_offset)
        pending = [op for half, op in self._decided.items() if half >= check_offset]
        self.offsets.commit(SYSTEM_GROUP, OP_HALF_TOPIC, 0, min(pending, default=self._op_read or 0))
        if len(self._decided) > REMEMBERED_OUTCOMES:
            behind = sorted(o for o in self._decided if o < check_offset)
            for half_offset in behind[: len(self._decided) - REMEMBERED_OUTCOMES]:
                del self._decided[half_offset]


async def run_checks(
    service: TransactionService, send_oneway: Callable[[Connection, RemotingCommand], Awaitable[None]]
) -> None:
    """The master's check loop: a round every ``transactionCheckInterval`` ms, each check sent oneway."""
    while True:
        await asyncio.sleep(service.config.transaction_check_interval / 1000.0)
        try:
            requests = service.check_round()
        except Exception:
            log.exception("transaction check round failed")
            continue
        for request in requests:
            await send_oneway(request.conn, request.command)
