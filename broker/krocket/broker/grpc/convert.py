"""A stored message as the protocol's ``Message`` (what ReceiveMessage and transaction check-backs carry), as
RocketMQ's proxy builds it (``GrpcConverter.buildMessage``): user properties are the non-system ones, the body
digest is MD5 in upper-case hex (the one digest both the Python and the Node SDK accept), the type comes from the
properties and the delivery attempt is reconsumeTimes + 1."""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_SHARDING_KEY,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TRANSACTION_PREPARED,
    PROPERTY_UNIQ_KEY,
    RESERVED_PROPERTY_KEYS,
    MessageExt,
)
from krocket.common.record import SYSFLAG_COMPRESSED


def timestamp(ms: int) -> Timestamp:
    value = Timestamp()
    value.FromMilliseconds(ms)
    return value


def message_type(properties: dict[str, str]) -> int:
    if properties.get(PROPERTY_TRANSACTION_PREPARED) == "true":
        return pb.TRANSACTION
    if PROPERTY_TIMER_DELIVER_MS in properties or PROPERTY_DELAY in properties:
        return pb.DELAY
    if PROPERTY_SHARDING_KEY in properties:
        return pb.FIFO
    return pb.NORMAL


def to_grpc_message(msg: MessageExt, topic: str | None = None, namespace: str = "") -> pb.Message:
    """``msg`` for a 5.x client; ``topic`` overrides the stored one (a half message's real topic)."""
    props = msg.properties
    out = pb.Message(topic=pb.Resource(name=topic or msg.topic, resource_namespace=namespace), body=msg.body)
    for key, value in props.items():
        if key not in RESERVED_PROPERTY_KEYS:
            out.user_properties[key] = value
    sp = out.system_properties
    sp.message_id = props.get(PROPERTY_UNIQ_KEY) or msg.offset_msg_id
    if msg.tags:
        sp.tag = msg.tags
    sp.keys.extend(msg.keys)
    sp.body_digest.CopyFrom(pb.Digest(type=pb.MD5, checksum=hashlib.md5(msg.body).hexdigest().upper()))
    sp.body_encoding = pb.GZIP if msg.sys_flag & SYSFLAG_COMPRESSED else pb.IDENTITY
    sp.message_type = message_type(props)  # type: ignore[assignment]
    sp.born_timestamp.CopyFrom(timestamp(msg.born_timestamp))
    sp.born_host = msg.born_host
    sp.store_timestamp.CopyFrom(timestamp(msg.store_timestamp))
    sp.store_host = msg.store_host
    due = props.get(PROPERTY_TIMER_DELIVER_MS)
    if due and due.isdigit():
        sp.delivery_timestamp.CopyFrom(timestamp(int(due)))
    if PROPERTY_SHARDING_KEY in props:
        sp.message_group = props[PROPERTY_SHARDING_KEY]
    sp.queue_id = msg.queue_id
    sp.queue_offset = msg.queue_offset
    sp.delivery_attempt = msg.reconsume_times + 1
    return out
