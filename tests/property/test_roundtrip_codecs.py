"""Unit-level round trips over the whole space of what a client may send: whatever the checks accept is stored
and decoded byte-identical; whatever would not round-trip is refused."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krocket.common.batch import decode_batch, encode_batch
from krocket.common.message import decode_properties, encode_properties
from krocket.common.message_checks import (
    InvalidMessageError,
    TransactionNotSupportedError,
    check_compressed_body,
    check_properties,
    check_raw_properties,
    check_sys_flag,
)
from krocket.common.record import (
    SYSFLAG_ALLOWED,
    SYSFLAG_COMPRESSED,
    SYSFLAG_HOSTS_V6,
    decode_record,
    encode_record,
    parse_record,
    record_host,
)

from tests.property.strategies import (
    allowed_properties,
    any_properties,
    any_text,
    bodies,
    int32s,
    sys_flags,
    topics,
)


@given(any_properties)
def test_client_properties_are_refused_or_round_trip(props: dict[str, str]) -> None:
    properties_round_trip(props)


def properties_round_trip(props: dict[str, str]) -> None:
    try:
        check_properties(props)
    except ValueError:
        return
    raw = encode_properties(props)
    assert check_raw_properties(raw) == props == decode_properties(raw)


@given(st.lists(any_text, max_size=6).map("\x02".join))
def test_raw_properties_text_is_refused_or_encodes_back(text: str) -> None:
    try:
        decoded = check_raw_properties(text)
    except InvalidMessageError:
        return
    assert encode_properties(decoded).decode() in (text, text + "\x02") or (text == "" and decoded == {})


@given(sys_flags)
def test_sys_flags_are_refused_or_stored_without_host_bits(sys_flag: int) -> None:
    try:
        stored = check_sys_flag(sys_flag)
    except TransactionNotSupportedError:
        assert (sys_flag & 0xC) in (0x8, 0xC)
        return
    except InvalidMessageError:
        assert sys_flag < 0 or sys_flag & ~SYSFLAG_ALLOWED or sys_flag & 0x700
        return
    assert stored == sys_flag & ~SYSFLAG_HOSTS_V6 and (sys_flag & 0xC) in (0, 0x4)


MESSAGES = (topics, bodies, allowed_properties, int32s, st.booleans(), st.booleans(), st.integers(0, 2**40))


@settings(max_examples=300)
@given(*MESSAGES)
def test_accepted_messages_round_trip_through_the_record_byte_identical(
    topic: str, body: bytes, props: dict[str, str], flag: int, compressed: bool, multi_tags: bool, phy: int
) -> None:
    record_round_trip(topic, body, props, flag, compressed, multi_tags, phy)


def record_round_trip(
    topic: str, body: bytes, props: dict[str, str], flag: int, compressed: bool, multi_tags: bool, phy: int
) -> None:
    check_properties(props)
    sys_flag = check_sys_flag((SYSFLAG_COMPRESSED if compressed else 0) | (0x2 if multi_tags else 0))
    stored_body = zlib.compress(body) if compressed else body
    if compressed:
        assert check_compressed_body(stored_body, 4 * 1024 * 1024) == len(body)
    raw_props = encode_properties(props)
    host = record_host(("127.0.0.1", 4321))
    record = encode_record(
        topic=topic.encode(),
        body=stored_body,
        properties=raw_props,
        queue_id=3,
        flag=flag,
        queue_offset=7,
        physical_offset=phy,
        sys_flag=sys_flag,
        born_timestamp=1,
        born_host=host,
        store_timestamp=2,
        store_host=host,
    )
    msg = decode_record(record, check_crc=True)
    assert (msg.topic, msg.body, msg.properties, msg.flag, msg.sys_flag) == (topic, body, props, flag, sys_flag)
    assert msg.born_host == "127.0.0.1:4321" and msg.commit_log_offset == phy
    meta = parse_record(record, 0, phy, True)
    assert meta.properties == raw_props and meta.topic == topic
    again = encode_record(
        topic=msg.topic.encode(),
        body=zlib.compress(msg.body) if compressed else msg.body,
        properties=encode_properties(msg.properties),
        queue_id=3,
        flag=msg.flag,
        queue_offset=7,
        physical_offset=phy,
        sys_flag=msg.sys_flag,
        born_timestamp=1,
        born_host=host,
        store_timestamp=2,
        store_host=host,
    )
    assert again == record


@given(st.lists(st.tuples(bodies, allowed_properties, int32s), min_size=1, max_size=5))
def test_batches_round_trip(items: list[tuple[bytes, dict[str, str], int]]) -> None:
    decoded = decode_batch(encode_batch(items))
    assert [(i.body, check_raw_properties(i.raw_properties), i.flag) for i in decoded] == items


@given(st.binary(max_size=200) | bodies.map(zlib.compress))
def test_bodies_flagged_compressed_are_refused_or_inflate_to_what_decoding_gives(body: bytes) -> None:
    try:
        size = check_compressed_body(body, 4 * 1024 * 1024)
    except InvalidMessageError:
        return
    record = encode_record(topic=b"T", body=body, sys_flag=SYSFLAG_COMPRESSED)
    assert len(decode_record(record).body) == size


# The long run: ``pytest -m fuzz tests/property``.
LONG = settings(max_examples=20_000, deadline=None)


@pytest.mark.fuzz
@LONG
@given(*MESSAGES)
def test_long_run_records(
    topic: str, body: bytes, props: dict[str, str], flag: int, compressed: bool, multi_tags: bool, phy: int
) -> None:
    record_round_trip(topic, body, props, flag, compressed, multi_tags, phy)


@pytest.mark.fuzz
@LONG
@given(any_properties)
def test_long_run_properties(props: dict[str, str]) -> None:
    properties_round_trip(props)
