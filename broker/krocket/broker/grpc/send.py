"""SendMessage: a 5.x message checked as RocketMQ's proxy checks it, then mapped onto a 4.x message, so remoting
and gRPC clients share one store: ``UNIQ_KEY`` is the client's message id, ``TAGS``, ``KEYS`` (space-joined),
``__SHARDINGKEY`` the message group, ``TIMER_DELIVER_MS`` the delivery time, ``TRAN_MSG``/``PGROUP`` a transaction's
half message; the producer group of a 5.x producer is the topic (as the proxy makes it)."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.status import GrpcError
from krocket.broker.schedule import TIMER_MAX_DELAY_MS
from krocket.common.errors import MessageIllegalError
from krocket.common.message import (
    PROPERTY_CHECK_IMMUNITY_TIME,
    PROPERTY_KEYS,
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_SHARDING_KEY,
    PROPERTY_TAGS,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TRACE_CONTEXT,
    PROPERTY_TRANSACTION_PREPARED,
    PROPERTY_UNIQ_KEY,
    RESERVED_PROPERTY_KEYS,
)
from krocket.common.record import SYSFLAG_COMPRESSED, SYSFLAG_TRANSACTION_PREPARED
from krocket.common.topic import is_system_topic, validate_topic

MAX_USER_PROPERTIES = 128
MAX_PROPERTIES_BYTES = 16 * 1024
"""User properties, tag and keys together (RocketMQ's proxy: ``maxUserPropertySize`` 16 KiB)."""
MAX_MESSAGE_GROUP_BYTES = 64
MAX_TRANSACTION_RECOVERY_S = 3600

TYPE_NAMES = {
    pb.NORMAL: "NORMAL",
    pb.FIFO: "FIFO",
    pb.DELAY: "DELAY",
    pb.TRANSACTION: "TRANSACTION",
    pb.LITE: "LITE",
    pb.PRIORITY: "PRIORITY",
}


@dataclass(slots=True)
class StoreMessage:
    """What the broker stores for one 5.x message."""

    topic: str
    body: bytes
    properties: dict[str, str]
    sys_flag: int
    born_timestamp: int
    message_id: str
    message_type: str  # NORMAL, FIFO, DELAY or TRANSACTION
    message_group: str = ""

    @property
    def is_transaction(self) -> bool:
        return self.message_type == "TRANSACTION"


def message_type_of(msg: pb.Message) -> str:
    """The message's type: as the client says, else derived from its properties (group, delivery time)."""
    sp = msg.system_properties
    if sp.message_type in TYPE_NAMES:
        return TYPE_NAMES[sp.message_type]
    if sp.HasField("message_group"):
        return "FIFO"
    if sp.HasField("delivery_timestamp"):
        return "DELAY"
    return "NORMAL"


def _has_control_chars(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _check_text(value: str, code: int, what: str) -> None:
    if not value.strip():
        raise GrpcError(code, f"{what} must not be blank")
    if _has_control_chars(value):
        raise GrpcError(code, f"{what} {value!r} must not hold control characters")


def check_body_digest(body: bytes, digest: pb.Digest) -> None:
    """A digest the client sent must match the body (MESSAGE_CORRUPTED); the SDKs send none today."""
    if not digest.checksum:
        return
    if digest.type == pb.CRC32:
        ok = digest.checksum.upper() in (f"{zlib.crc32(body):08X}", str(zlib.crc32(body)))
    elif digest.type == pb.MD5:
        ok = digest.checksum.upper() == hashlib.md5(body).hexdigest().upper()
    elif digest.type == pb.SHA1:
        ok = digest.checksum.upper() == hashlib.sha1(body).hexdigest().upper()
    else:
        ok = True
    if not ok:
        raise GrpcError(pb.MESSAGE_CORRUPTED, "the message body does not match its body_digest")


def check_topic(topic: str) -> None:
    try:
        validate_topic(topic)
    except MessageIllegalError as exc:
        raise GrpcError(pb.ILLEGAL_TOPIC, exc.message) from None
    if is_system_topic(topic):
        raise GrpcError(pb.ILLEGAL_TOPIC, f"topic {topic} is a system topic: 5.x clients may not send to it")


def to_store_message(msg: pb.Message, max_body_size: int, accepted_types: frozenset[str], now_ms: int) -> StoreMessage:
    """The checked 4.x form of ``msg``; ``GrpcError`` with the proxy's code names what is wrong.

    ``accepted_types`` are the message types the topic takes (its ``message.type``; every type for MIXED)."""
    topic = msg.topic.name
    check_topic(topic)
    sp = msg.system_properties
    body = msg.body
    if not body:
        raise GrpcError(pb.MESSAGE_BODY_EMPTY, "the message body is empty")
    if len(body) > max_body_size:
        raise GrpcError(
            pb.MESSAGE_BODY_TOO_LARGE, f"the message body is {len(body)} bytes; the limit is {max_body_size}"
        )
    check_body_digest(body, sp.body_digest)
    message_id = sp.message_id
    if not message_id.strip():
        raise GrpcError(pb.ILLEGAL_MESSAGE_ID, "the message id is blank")
    if len(msg.user_properties) > MAX_USER_PROPERTIES:
        raise GrpcError(
            pb.MESSAGE_PROPERTIES_TOO_LARGE,
            f"{len(msg.user_properties)} user properties; at most {MAX_USER_PROPERTIES}",
        )
    size = 0
    properties: dict[str, str] = {}
    for key, value in msg.user_properties.items():
        if key in RESERVED_PROPERTY_KEYS:
            raise GrpcError(pb.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property key {key} is reserved by RocketMQ")
        _check_text(key, pb.ILLEGAL_MESSAGE_PROPERTY_KEY, "a property key")
        if _has_control_chars(value):
            raise GrpcError(pb.ILLEGAL_MESSAGE_PROPERTY_KEY, f"the value of property {key} holds control characters")
        size += len(key.encode()) + len(value.encode())
        properties[key] = value
    if sp.HasField("tag"):
        _check_text(sp.tag, pb.ILLEGAL_MESSAGE_TAG, "the tag")
        if "|" in sp.tag:
            raise GrpcError(pb.ILLEGAL_MESSAGE_TAG, f"the tag {sp.tag!r} must not contain '|'")
        properties[PROPERTY_TAGS] = sp.tag
        size += len(sp.tag.encode())
    if sp.keys:
        for key in sp.keys:
            _check_text(key, pb.ILLEGAL_MESSAGE_KEY, "a message key")
        properties[PROPERTY_KEYS] = " ".join(sp.keys)
        size += sum(len(k.encode()) for k in sp.keys)
    if size > MAX_PROPERTIES_BYTES:
        raise GrpcError(
            pb.MESSAGE_PROPERTIES_TOO_LARGE, f"properties hold {size} bytes; at most {MAX_PROPERTIES_BYTES}"
        )
    message_type = message_type_of(msg)
    if message_type not in accepted_types:
        raise GrpcError(
            pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
            f"topic {topic} takes {', '.join(sorted(accepted_types))} messages, not {message_type}: set the topic's "
            "message type (krocket topic update --message-type) or send another kind",
        )
    group = ""
    if sp.HasField("message_group"):
        group = sp.message_group
        _check_text(group, pb.ILLEGAL_MESSAGE_GROUP, "the message group")
        if len(group.encode()) >= MAX_MESSAGE_GROUP_BYTES:
            raise GrpcError(pb.ILLEGAL_MESSAGE_GROUP, f"the message group is longer than {MAX_MESSAGE_GROUP_BYTES - 1}")
        properties[PROPERTY_SHARDING_KEY] = group
    if sp.HasField("delivery_timestamp"):
        due_ms = sp.delivery_timestamp.ToMilliseconds()
        if due_ms - now_ms > TIMER_MAX_DELAY_MS:
            raise GrpcError(
                pb.ILLEGAL_DELIVERY_TIME,
                f"the delivery time is {(due_ms - now_ms) // 1000} s ahead; at most {TIMER_MAX_DELAY_MS // 1000} s",
            )
        if due_ms > now_ms:
            properties[PROPERTY_TIMER_DELIVER_MS] = str(due_ms)
    sys_flag = SYSFLAG_COMPRESSED if sp.body_encoding == pb.GZIP else 0
    if message_type == "TRANSACTION":
        properties[PROPERTY_TRANSACTION_PREPARED] = "true"
        if sp.HasField("orphaned_transaction_recovery_duration"):
            recovery_s = sp.orphaned_transaction_recovery_duration.ToSeconds()
            if not 0 <= recovery_s <= MAX_TRANSACTION_RECOVERY_S:
                raise GrpcError(
                    pb.BAD_REQUEST, f"orphaned transaction recovery must be 0 to {MAX_TRANSACTION_RECOVERY_S} s"
                )
            properties[PROPERTY_CHECK_IMMUNITY_TIME] = str(recovery_s)
        sys_flag |= SYSFLAG_TRANSACTION_PREPARED
    if sp.HasField("trace_context"):
        properties[PROPERTY_TRACE_CONTEXT] = sp.trace_context
    properties[PROPERTY_PRODUCER_GROUP] = topic
    properties[PROPERTY_UNIQ_KEY] = message_id
    born = sp.born_timestamp.ToMilliseconds() if sp.HasField("born_timestamp") else now_ms
    return StoreMessage(topic, body, properties, sys_flag, born, message_id, message_type, group)


def fifo_queue(message_group: str, write_queues: int) -> int:
    """The queue every message of a group goes to: a stable hash of the group over the write queues."""
    return zlib.crc32(message_group.encode()) % max(write_queues, 1)
