"""A 5.x message checked as RocketMQ's proxy checks it and mapped onto the 4.x properties both protocols share."""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.send import fifo_queue, to_store_message
from krocket.broker.grpc.status import GrpcError
from krocket.common.message_type import accepted_message_types

NOW_MS = 1_800_000_000_000
ALL = accepted_message_types("MIXED")
MID = "01AABBCCDDEEFF00112233445566778899"


def message(body: bytes = b"hello", topic: str = "T", **system: object) -> pb.Message:
    msg = pb.Message(topic=pb.Resource(name=topic), body=body)
    msg.system_properties.message_id = MID
    for key, value in system.items():
        if key == "keys":
            msg.system_properties.keys.extend(value)  # type: ignore[arg-type]
        elif key == "delivery_ms":
            ts = Timestamp()
            ts.FromMilliseconds(int(value))  # type: ignore[call-overload]
            msg.system_properties.delivery_timestamp.CopyFrom(ts)
        elif isinstance(value, pb.Digest):
            msg.system_properties.body_digest.CopyFrom(value)
        else:
            setattr(msg.system_properties, key, value)
    return msg


def refused(msg: pb.Message, accepted: frozenset[str] = ALL, limit: int = 1024) -> int:
    with pytest.raises(GrpcError) as caught:
        to_store_message(msg, limit, accepted, NOW_MS)
    return caught.value.code


def test_a_normal_message_keeps_the_client_id_tag_keys_and_properties() -> None:
    msg = message(tag="TagA", keys=["k1", "k2"], message_type=pb.NORMAL)
    msg.user_properties["color"] = "red"
    stored = to_store_message(msg, 1024, accepted_message_types(None), NOW_MS)
    assert stored.message_type == "NORMAL" and stored.message_id == MID
    assert stored.properties == {
        "color": "red",
        "TAGS": "TagA",
        "KEYS": "k1 k2",
        "PGROUP": "T",
        "UNIQ_KEY": MID,
    }
    assert stored.born_timestamp == NOW_MS and stored.sys_flag == 0


def test_fifo_delay_and_transaction_map_onto_the_4x_properties() -> None:
    fifo = to_store_message(message(message_group="order-7", message_type=pb.FIFO), 1024, ALL, NOW_MS)
    assert fifo.properties["__SHARDINGKEY"] == "order-7" and fifo.message_group == "order-7"
    delay = to_store_message(message(delivery_ms=NOW_MS + 5000, message_type=pb.DELAY), 1024, ALL, NOW_MS)
    assert delay.properties["TIMER_DELIVER_MS"] == str(NOW_MS + 5000) and delay.message_type == "DELAY"
    tx = to_store_message(message(message_type=pb.TRANSACTION), 1024, ALL, NOW_MS)
    assert tx.properties["TRAN_MSG"] == "true" and tx.sys_flag & 0x4 and tx.is_transaction
    gzip = to_store_message(message(body_encoding=pb.GZIP), 1024, ALL, NOW_MS)
    assert gzip.sys_flag & 0x1


def test_the_type_is_derived_when_the_client_leaves_it_unset() -> None:
    assert to_store_message(message(message_group="g"), 1024, ALL, NOW_MS).message_type == "FIFO"
    assert to_store_message(message(delivery_ms=NOW_MS + 1), 1024, ALL, NOW_MS).message_type == "DELAY"


def test_the_topic_type_is_enforced() -> None:
    assert (
        refused(message(message_group="g"), accepted_message_types("NORMAL")) == pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE
    )
    assert refused(message(), accepted_message_types("FIFO")) == pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        (message(b""), pb.MESSAGE_BODY_EMPTY),
        (message(b"x" * 1025), pb.MESSAGE_BODY_TOO_LARGE),
        (message(topic="%RETRY%g"), pb.ILLEGAL_TOPIC),
        (message(topic="bad topic"), pb.ILLEGAL_TOPIC),
        (message(tag="a|b"), pb.ILLEGAL_MESSAGE_TAG),
        (message(tag="  "), pb.ILLEGAL_MESSAGE_TAG),
        (message(keys=["ok", "bad\x01"]), pb.ILLEGAL_MESSAGE_KEY),
        (message(message_group="g" * 64), pb.ILLEGAL_MESSAGE_GROUP),
        (message(delivery_ms=NOW_MS + 4 * 86_400_000), pb.ILLEGAL_DELIVERY_TIME),
        (message(message_id=" "), pb.ILLEGAL_MESSAGE_ID),
    ],
)
def test_what_the_proxy_refuses_is_refused_with_its_code(msg: pb.Message, code: int) -> None:
    assert refused(msg) == code


def test_reserved_and_too_many_properties_are_refused() -> None:
    msg = message()
    msg.user_properties["UNIQ_KEY"] = "forged"
    assert refused(msg) == pb.ILLEGAL_MESSAGE_PROPERTY_KEY
    many = message()
    for i in range(129):
        many.user_properties[f"k{i}"] = "v"
    assert refused(many) == pb.MESSAGE_PROPERTIES_TOO_LARGE
    big = message()
    big.user_properties["k"] = "v" * 17 * 1024
    assert refused(big, limit=10**6) == pb.MESSAGE_PROPERTIES_TOO_LARGE


def test_a_body_digest_must_match() -> None:
    good = message(body_digest=pb.Digest(type=pb.MD5, checksum=hashlib.md5(b"hello").hexdigest().upper()))
    assert to_store_message(good, 1024, ALL, NOW_MS).body == b"hello"
    assert refused(message(body_digest=pb.Digest(type=pb.MD5, checksum="00"))) == pb.MESSAGE_CORRUPTED


def test_a_message_group_always_lands_on_the_same_queue() -> None:
    queues = {fifo_queue("order-7", 8) for _ in range(10)}
    assert len(queues) == 1 and 0 <= queues.pop() < 8
    assert len({fifo_queue(f"g{i}", 8) for i in range(100)}) == 8  # groups spread over the queues
