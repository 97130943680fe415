"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320).

The door: every send is checked (``krocket.common.message_checks``) before anything is stored, so what is acked
is what a consumer reads back: allowed sysFlag bits only (a half message goes to the half topic; the IPv6 host bits
are cleared, hosts are recorded in the IPv4 layout), properties that decode to the pairs that were sent, and a
compressed body that inflates within maxMessageSize.

The ack: at once after the commit (ASYNC_FLUSH, ASYNC_MASTER); parked, encoded, until the disk or a slave has the
message (SYNC_FLUSH, SYNC_MASTER: ``BrokerService.parking``; the processor returns None, no reply now); after a
task that waits for the route first when the send created its topic (rare).
"""

from __future__ import annotations

from collections.abc import Awaitable

from krocket.broker.service import BrokerService, SendOutcome
from krocket.broker.transaction import half_message
from krocket.common.batch import BatchItem, decode_batch
from krocket.common.codes import RequestCode
from krocket.common.errors import MessageIllegalError
from krocket.common.headers import SendMessageHeader
from krocket.common.message_checks import (
    check_compressed_body,
    check_int32,
    check_int64,
    check_raw_properties,
    check_sys_flag,
    check_transaction,
)
from krocket.common.record import SYSFLAG_COMPRESSED, RecordError, record_host
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import encode

_SEND_BATCH = int(RequestCode.SEND_BATCH_MESSAGE)


def born_host(conn: Connection) -> bytes:
    """The producer's address in record form, computed once per connection."""
    host = conn.attributes.get("born_host")
    if host is None:
        host = conn.attributes["born_host"] = record_host(conn.peer)
    return host


def checked_batch(body: bytes, sys_flag: int, limit: int) -> list[BatchItem]:
    """The items of a batch body, each checked like a single message (a flag read as an i32 always fits)."""
    try:
        items = decode_batch(body, check_raw_properties)
    except RecordError as exc:
        raise MessageIllegalError(f"batch body is malformed: {exc}") from None
    if sys_flag & SYSFLAG_COMPRESSED:
        for item in items:
            check_compressed_body(item.body, limit)
    return items


def send_reply(cmd: RemotingCommand, outcome: SendOutcome) -> RemotingCommand:
    """The reply to a send (the fast path formats the same header from a template made of this)."""
    return cmd.response(
        outcome.code,
        outcome.remark,
        {
            "msgId": outcome.msg_id,
            "queueId": outcome.queue_id,
            "queueOffset": outcome.queue_offset,
            "MSG_REGION": "DefaultRegion",
            "TRACE_ON": "true",
        },
    )


async def _reply_later(cmd: RemotingCommand, pending: Awaitable[SendOutcome]) -> RemotingCommand:
    return send_reply(cmd, await pending)


def _answer(
    service: BrokerService, conn: Connection, cmd: RemotingCommand, outcome: SendOutcome
) -> RemotingCommand | Awaitable[RemotingCommand] | None:
    if outcome.created:  # the route first: a task (rare)
        return _reply_later(cmd, service.finish(outcome))
    if not service.must_wait:
        return send_reply(cmd, outcome)
    if not cmd.is_oneway:
        reply = send_reply(cmd, outcome)
        reply.opaque = cmd.opaque
        service.parking.park(conn, encode(reply), outcome.end_offset)
    return None  # parked: written once the disk (and a slave) has the message


def process_send(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand | Awaitable[RemotingCommand] | None:
    h = SendMessageHeader.from_fields(cmd.ext_fields)
    producer_host = born_host(conn)
    sys_flag = check_sys_flag(h.sys_flag)
    check_int64("bornTimestamp", h.born_timestamp)
    limit = service.config.max_message_size
    commitlog = service.store.commitlog
    if cmd.code == _SEND_BATCH or h.batch:
        check_transaction(sys_flag, {}, batch=True)  # a batch holds no half message
        items = checked_batch(cmd.body, sys_flag, limit)
        wrote = commitlog.wrote
        outcome = service.store_batch(
            h.topic,
            h.queue_id,
            items,
            sys_flag,
            h.born_timestamp,
            producer_host,
            h.default_topic,
            h.default_topic_queue_nums,
        )
        service.traffic.record_put(h.topic, len(items), commitlog.wrote - wrote)
    else:
        properties = check_raw_properties(h.properties)
        check_int32("flag", h.flag)
        check_int32("reconsumeTimes", h.reconsume_times)
        if sys_flag & SYSFLAG_COMPRESSED:
            check_compressed_body(cmd.body, limit)
        topic, queue_id = h.topic, h.queue_id
        if check_transaction(sys_flag, properties):  # a half message waits in RMQ_SYS_TRANS_HALF_TOPIC
            service.topics.for_send(topic, h.default_topic, h.default_topic_queue_nums, max(queue_id, 0))
            half = half_message(topic, queue_id, properties, sys_flag)
            topic, queue_id, properties, sys_flag = half.topic, half.queue_id, half.properties, half.sys_flag
        wrote = commitlog.wrote
        outcome = service.store_send(
            topic,
            queue_id,
            cmd.body,
            properties,
            h.flag,
            sys_flag,
            h.born_timestamp,
            producer_host,
            h.reconsume_times,
            h.default_topic,
            h.default_topic_queue_nums,
        )
        service.traffic.record_put(h.topic, 1, commitlog.wrote - wrote)  # the topic named, a half message too
    return _answer(service, conn, cmd, outcome)
