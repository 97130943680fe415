"""The one record codec: every reader (client decode, store meta, recovery's layout walk) sees the same layout
and refuses the same broken records."""

from __future__ import annotations

import struct

import pytest

from krocket.common.message import encode_properties
from krocket.common.message_id import pack_host
from krocket.common.record import (
    MAGIC_V2,
    POS_MAGIC,
    POS_PHYSICAL_OFFSET,
    POS_SYSFLAG,
    RECORD_FIXED_BYTES,
    RECORD_HEAD,
    SYSFLAG_BORNHOST_V6,
    RecordError,
    decode_record,
    encode_record,
    pack_record_into,
    parse_record,
    record_layout,
    record_size,
    topic_prefix,
)

BORN = pack_host("10.0.0.7:4000")
STORE = pack_host("127.0.0.1:10911")
PROPS = encode_properties({"TAGS": "TagA", "KEYS": "k1 k2"})


def _record(phy: int = 4096, body: bytes = b"payload") -> bytes:
    return encode_record(
        topic=b"orders",
        body=body,
        properties=PROPS,
        queue_id=3,
        flag=9,
        queue_offset=17,
        physical_offset=phy,
        sys_flag=0,
        born_timestamp=111,
        born_host=BORN,
        store_timestamp=222,
        store_host=STORE,
        reconsume_times=2,
    )


def _patched(raw: bytes, pos: int, fmt: str, value: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def test_pack_into_a_buffer_is_the_encoded_record():
    out = bytearray(b"xx")
    prefix = topic_prefix("orders")
    total = record_size(len(b"payload"), len(prefix) - 1, len(PROPS))
    pack_record_into(out, total, 3, 9, 17, 4096, 0, 111, BORN, 222, STORE, 2, b"payload", prefix, PROPS)
    assert bytes(out[2:]) == _record()
    assert len(out) - 2 == total


def test_client_and_store_read_the_same_fields():
    raw = _record()
    msg = decode_record(raw, check_crc=True)
    meta = parse_record(raw, 0, 4096, check_crc=True)
    assert (meta.phy, meta.size, meta.queue_id, meta.queue_offset, meta.store_timestamp, meta.topic) == (
        msg.commit_log_offset,
        msg.store_size,
        msg.queue_id,
        msg.queue_offset,
        msg.store_timestamp,
        msg.topic,
    )
    assert meta.properties == PROPS and msg.properties == {"TAGS": "TagA", "KEYS": "k1 k2"}
    assert (msg.born_host, msg.store_host, msg.reconsume_times, msg.flag) == ("10.0.0.7:4000", "127.0.0.1:10911", 2, 9)


def test_layout_names_where_the_parts_are():
    raw = b"\0" * 5 + _record()
    head, body_end, topic_start, props_start, end = record_layout(raw, 5)
    assert head == RECORD_HEAD.unpack_from(raw, 5)
    assert raw[5 + RECORD_FIXED_BYTES : body_end] == b"payload"
    assert raw[topic_start : props_start - 2] == b"orders"
    assert raw[props_start:end] == PROPS and end == len(raw)


def test_a_magic_v2_record_has_a_two_byte_topic_length():
    v1 = _record()
    body_end = RECORD_FIXED_BYTES + len(b"payload")
    v2 = bytearray(v1[:body_end] + struct.pack(">h", 6) + v1[body_end + 1 :])
    struct.pack_into(">ii", v2, 0, len(v2), MAGIC_V2)
    assert decode_record(bytes(v2)).topic == "orders"
    assert parse_record(bytes(v2), 0, 4096, False).topic == "orders"


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (lambda r: r[:50], "torn"),
        (lambda r: r[:-1], "runs past"),
        (lambda r: _patched(r, POS_MAGIC, ">i", 12345), "bad magic"),
        (lambda r: _patched(r, POS_SYSFLAG, ">i", SYSFLAG_BORNHOST_V6), "IPv6"),
        (lambda r: _patched(r, 0, ">i", len(r) - 1)[:-1], "inconsistent lengths"),
        (lambda r: _patched(r, RECORD_FIXED_BYTES - 4, ">i", 10_000), "body length"),
    ],
)
def test_every_reader_refuses_a_broken_record(broken, reason):
    raw = broken(_record())
    with pytest.raises(RecordError, match=reason):
        decode_record(raw)
    with pytest.raises(RecordError, match=reason):
        parse_record(raw, 0, 4096, False)


def test_the_store_checks_the_offset_a_record_claims():
    raw = _patched(_record(), POS_PHYSICAL_OFFSET, ">q", 1)
    decode_record(raw)  # a consumer does not know where the record sits
    with pytest.raises(RecordError, match="claims physical offset 1"):
        parse_record(raw, 0, 4096, False)


def test_a_flipped_body_byte_fails_the_crc():
    raw = bytearray(_record())
    raw[RECORD_FIXED_BYTES] ^= 0xFF
    parse_record(bytes(raw), 0, 4096, False)
    with pytest.raises(RecordError, match="CRC"):
        parse_record(bytes(raw), 0, 4096, True)
    with pytest.raises(RecordError, match="CRC"):
        decode_record(bytes(raw), check_crc=True)


@pytest.mark.parametrize("topic", ["", "x" * 256])
def test_topic_prefix_refuses_what_one_length_byte_cannot_hold(topic):
    with pytest.raises(RecordError, match="1 to 255 bytes"):
        topic_prefix(topic)


def _queue_record(queue_offset: int, body: bytes = b"ok", sys_flag: int = 0) -> bytes:
    from krocket.common.record import encode_record

    return encode_record(topic=b"T", body=body, queue_offset=queue_offset, sys_flag=sys_flag)


def test_a_pull_body_with_a_record_that_does_not_inflate_skips_just_that_record():
    from krocket.common.record import decode_pulled_records

    body = _queue_record(5) + _queue_record(6, b"not zlib", sys_flag=0x1) + _queue_record(7)
    pulled = decode_pulled_records(body, 5)
    assert [m.queue_offset for m in pulled.messages] == [5, 7]
    [bad] = pulled.undecodable
    assert bad.queue_offset == 6 and "does not inflate" in bad.reason
    assert pulled.resume_at is None  # the broker's nextBeginOffset is already past it


def test_a_pull_body_with_a_broken_layout_resumes_past_the_bad_record():
    from krocket.common.record import decode_pulled_records

    broken = bytearray(_queue_record(11))
    broken[4:8] = b"\0\0\0\0"  # the magic
    body = _queue_record(10) + bytes(broken) + _queue_record(12)
    pulled = decode_pulled_records(body, 10)
    assert [m.queue_offset for m in pulled.messages] == [10]
    assert [b.queue_offset for b in pulled.undecodable] == [11] and pulled.resume_at == 12
    first_broken = decode_pulled_records(bytes(broken), 11)
    assert first_broken.messages == [] and first_broken.resume_at == 12
