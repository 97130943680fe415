"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320)."""

from __future__ import annotations

from collections.abc import Awaitable

from krocket.broker.headers import Header
from krocket.broker.service import BrokerService, SendOutcome
from krocket.common.batch import decode_batch
from krocket.common.errors import MessageIllegalError
from krocket.common.message import decode_properties
from krocket.common.message_id import pack_host
from krocket.common.record import RecordError
from krocket.common.remoting import Connection, RemotingCommand


def _born_host(conn: Connection) -> bytes:
    """The producer's address in record form, computed once per connection."""
    host = conn.attributes.get("born_host")
    if host is None:
        try:
            host = pack_host(conn.peer)
        except (ValueError, OSError):
            host = b"\x7f\x00\x00\x01\x00\x00\x00\x00"
        conn.attributes["born_host"] = host
    return host


def _reply(cmd: RemotingCommand, outcome: SendOutcome) -> RemotingCommand:
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
    return _reply(cmd, await pending)


def process_send(
    service: BrokerService, conn: Connection, cmd: RemotingCommand
) -> RemotingCommand | Awaitable[RemotingCommand]:
    h = Header.for_send(cmd.ext_fields)
    topic = h.str("topic")
    queue_id = h.int("queueId", -1)
    sys_flag = h.int("sysFlag", 0)
    born_timestamp = h.int("bornTimestamp", 0)
    born_host = _born_host(conn)
    default_topic = h.opt("defaultTopic")
    default_queue_nums = h.int("defaultTopicQueueNums", 4)
    outcome: SendOutcome | Awaitable[SendOutcome]
    if cmd.code == 320 or h.bool("batch"):
        try:
            items = decode_batch(cmd.body)
        except RecordError as exc:
            raise MessageIllegalError(f"batch body is malformed: {exc}") from None
        outcome = service.send_batch(
            topic, queue_id, items, sys_flag, born_timestamp, born_host, default_topic, default_queue_nums
        )
    else:
        outcome = service.send(
            topic,
            queue_id,
            cmd.body,
            decode_properties(h.str("properties", "")),
            h.int("flag", 0),
            sys_flag,
            born_timestamp,
            born_host,
            h.int("reconsumeTimes", 0),
            default_topic,
            default_queue_nums,
        )
    if isinstance(outcome, SendOutcome):
        return _reply(cmd, outcome)
    return _reply_later(cmd, outcome)
