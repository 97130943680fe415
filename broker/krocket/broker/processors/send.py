"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320)."""

from __future__ import annotations

from collections.abc import Awaitable

from krocket.broker.service import BrokerService, SendOutcome
from krocket.common.batch import decode_batch
from krocket.common.codes import RequestCode
from krocket.common.errors import MessageIllegalError
from krocket.common.headers import SendMessageHeader
from krocket.common.message import decode_properties
from krocket.common.message_id import pack_host
from krocket.common.record import RecordError
from krocket.common.remoting import Connection, RemotingCommand

_SEND_BATCH = int(RequestCode.SEND_BATCH_MESSAGE)


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
    h = SendMessageHeader.from_fields(cmd.ext_fields)
    born_host = _born_host(conn)
    outcome: SendOutcome | Awaitable[SendOutcome]
    if cmd.code == _SEND_BATCH or h.batch:
        try:
            items = decode_batch(cmd.body)
        except RecordError as exc:
            raise MessageIllegalError(f"batch body is malformed: {exc}") from None
        outcome = service.send_batch(
            h.topic,
            h.queue_id,
            items,
            h.sys_flag,
            h.born_timestamp,
            born_host,
            h.default_topic,
            h.default_topic_queue_nums,
        )
    else:
        outcome = service.send(
            h.topic,
            h.queue_id,
            cmd.body,
            decode_properties(h.properties),
            h.flag,
            h.sys_flag,
            h.born_timestamp,
            born_host,
            h.reconsume_times,
            h.default_topic,
            h.default_topic_queue_nums,
        )
    if isinstance(outcome, SendOutcome):
        return _reply(cmd, outcome)
    return _reply_later(cmd, outcome)
