import zlib

import pytest

from krocket.common.batch import decode_batch, encode_batch
from krocket.common.message import Message, MessageExt, decode_properties, encode_properties, java_string_hash
from krocket.common.message_id import UniqueIdGenerator, decode_offset_msg_id, offset_msg_id, pack_host
from krocket.common.record import SYSFLAG_COMPRESSED, RecordError, decode_record, decode_records, encode_record


def _record(body=b"hello", props=None, phys=100, sys_flag=0):
    return encode_record(
        topic=b"TopicA",
        body=body,
        properties=encode_properties(props or {"TAGS": "TagA"}),
        queue_id=2,
        flag=3,
        queue_offset=5,
        physical_offset=phys,
        sys_flag=sys_flag,
        born_timestamp=1000,
        born_host=pack_host("127.0.0.1:4000"),
        store_timestamp=2000,
        store_host=pack_host("127.0.0.1:10911"),
    )


def test_record_round_trip():
    msg = decode_record(_record(), check_crc=True)
    assert (msg.topic, msg.body, msg.tags, msg.queue_id, msg.flag, msg.queue_offset, msg.commit_log_offset) == (
        "TopicA",
        b"hello",
        "TagA",
        2,
        3,
        5,
        100,
    )
    assert msg.born_host == "127.0.0.1:4000" and msg.store_host == "127.0.0.1:10911"
    assert decode_offset_msg_id(msg.offset_msg_id) == ("127.0.0.1:10911", 100)


def test_decoded_record_reads_its_wire_fields_on_demand_and_compares_by_value():
    msg = decode_record(_record(props={"TAGS": "T", "UNIQ_KEY": "U1"}))
    eager = MessageExt(
        "TopicA",
        b"hello",
        {"TAGS": "T", "UNIQ_KEY": "U1"},
        2,
        5,
        100,
        msg.store_size,
        0,
        3,
        1000,
        "127.0.0.1:4000",
        2000,
        "127.0.0.1:10911",
        0,
        msg.offset_msg_id,
        msg.body_crc,
    )
    assert msg == eager and repr(msg) == repr(eager)
    assert msg.msg_id == "U1" and msg.keys == []
    msg.properties = {"TAGS": "X"}  # consumers may replace what they read
    assert msg.tags == "X" and msg != eager
    built = MessageExt("T", b"b", {}, 0, 0, 64, 0, 0, 0, 0, "", 0, "127.0.0.1:10911", 0, "")
    assert built.offset_msg_id == ""  # given ids are kept as they are


def test_records_concatenated_decode_in_order():
    data = _record(b"a", phys=0) + _record(b"bb", phys=200)
    assert [m.body for m in decode_records(data)] == [b"a", b"bb"]


def test_flipped_body_byte_fails_crc_and_torn_record_is_rejected():
    raw = bytearray(_record(b"payload"))
    raw[90] ^= 0xFF
    with pytest.raises(RecordError):
        decode_record(bytes(raw), check_crc=True)
    with pytest.raises(RecordError):
        decode_record(_record()[:-3])


def test_compressed_body_is_inflated():
    body = b"x" * 10000
    msg = decode_record(_record(zlib.compress(body), sys_flag=SYSFLAG_COMPRESSED))
    assert msg.body == body


def test_properties_round_trip():
    props = {"TAGS": "A", "KEYS": "k1 k2", "u": "v=1"}
    assert decode_properties(encode_properties(props)) == props


def test_java_string_hash_matches_java():
    # Values of String.hashCode() in Java.
    assert java_string_hash("") == 0
    assert java_string_hash("TagA") == 2598919
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -2147483648
    assert java_string_hash("\u00e9t\u00e9") == 227742  # 233, then 233*31+116, then *31+233


def test_batch_round_trip():
    items = [(b"a", {"TAGS": "x"}, 0), (b"bb", {}, 1)]
    got = decode_batch(encode_batch(items))
    assert [(i.body, i.properties, i.flag) for i in got] == [(b"a", {"TAGS": "x"}, 0), (b"bb", {}, 1)]
    with pytest.raises(RecordError):
        decode_batch(encode_batch(items)[:-1])


def test_unique_ids_are_32_hex_and_distinct():
    gen = UniqueIdGenerator()
    ids = {gen.next_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_message_wire_properties():
    msg = Message("T", b"b", tags="TagA", keys=["k1", "k2"], properties={"p": "1"})
    assert msg.wire_properties() == {"p": "1", "TAGS": "TagA", "KEYS": "k1 k2"}


def test_offset_msg_id_layout():
    assert offset_msg_id(pack_host("10.0.0.1:10911"), 255) == "0A00000100002A9F00000000000000FF"
