"""Appends and reads: round trip, segment roll with BLANK padding, batches, limits."""

from __future__ import annotations

import os
import struct

import pytest

from krocket.common.errors import MessageIllegalError
from krocket.common.message import PROPERTY_TAGS
from krocket.common.message_id import offset_msg_id
from krocket.common.record import BLANK_MAGIC, decode_record, decode_records

from tests.unit.store.store_helpers import BORN_HOST, SEGMENT, StoreFactory, body, props


def test_put_get_round_trip(make_store: StoreFactory) -> None:
    store = make_store()
    results = [
        store.put_message(
            "TopicA", 1, body(i), props(i), flag=7, born_timestamp=1000 + i, born_host=BORN_HOST, reconsume_times=2
        )
        for i in range(10)
    ]
    assert [r.queue_offset for r in results] == list(range(10))
    assert results[0].commit_log_offset == 0
    assert results[1].commit_log_offset == results[0].end_offset
    assert results[3].msg_id == offset_msg_id(store.config.store_host, results[3].commit_log_offset)

    got = store.get_messages("TopicA", 1, 0, max_msgs=32)
    assert got.status.name == "FOUND"
    assert (got.count, got.next_begin_offset, got.min_offset, got.max_offset) == (10, 10, 0, 10)
    pos = 0
    for i in range(10):
        msg = decode_record(got.body, pos, check_crc=True)
        assert msg.body == body(i)
        assert msg.topic == "TopicA" and msg.queue_id == 1 and msg.queue_offset == i
        assert msg.flag == 7 and msg.reconsume_times == 2 and msg.born_timestamp == 1000 + i
        assert msg.born_host == "10.0.0.7:50123" and msg.store_host == "192.168.1.2:10911"
        assert msg.commit_log_offset == results[i].commit_log_offset
        assert msg.store_timestamp == results[i].store_timestamp
        assert msg.properties == props(i)
        assert msg.offset_msg_id == results[i].msg_id
        assert store.read_record(results[i].commit_log_offset) == got.body[pos : pos + msg.store_size]
        pos += msg.store_size
    assert pos == len(got.body)


def test_segments_roll_with_blank_padding_and_reads_cross_them(make_store: StoreFactory) -> None:
    store = make_store()
    results = [store.put_message("T", 0, body(i, 1000), props(i)) for i in range(200)]
    assert store.stats()["commitlog_segments"] >= 3
    seg_dir = store.config.commitlog_dir
    names = sorted(os.listdir(seg_dir))
    assert names[:3] == [f"{0:020d}", f"{SEGMENT:020d}", f"{2 * SEGMENT:020d}"]
    # Every finished segment is exactly SEGMENT bytes and ends with a BLANK record filling its tail.
    last_in_first = max((r for r in results if r.end_offset <= SEGMENT), key=lambda r: r.end_offset)
    with open(seg_dir / names[0], "rb") as f:
        data = f.read()
    assert len(data) == SEGMENT
    total, magic = struct.unpack_from(">ii", data, last_in_first.end_offset)
    assert magic == BLANK_MAGIC and total == SEGMENT - last_in_first.end_offset and total >= 8
    first_in_second = results[results.index(last_in_first) + 1]
    assert first_in_second.commit_log_offset == SEGMENT

    got = store.get_messages("T", 0, 0, max_msgs=200, max_bytes=10**9)
    msgs = decode_records(got.body)
    assert [m.queue_offset for m in msgs] == list(range(200))
    assert all(m.body == body(m.queue_offset, 1000) for m in msgs)
    assert store.read_record(last_in_first.end_offset) is None  # a BLANK is no record


def test_max_bytes_limits_a_pull(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(20):
        store.put_message("T", 0, body(i, 1000), props(i))
    got = store.get_messages("T", 0, 0, max_msgs=32, max_bytes=3500)
    assert got.count == 3 and got.next_begin_offset == 3


def test_batch_put_is_contiguous_with_consecutive_queue_offsets(make_store: StoreFactory) -> None:
    store = make_store()
    store.put_message("T", 2, b"first", props(0))
    items = [(body(i, 300), props(i, tags="B" if i % 2 else "A"), i) for i in range(100)]
    results = store.put_messages("T", 2, items, born_host=BORN_HOST)
    assert [r.queue_offset for r in results] == list(range(1, 101))
    # Contiguous within each segment; 100 x ~400 bytes spills into a second segment at most once.
    breaks = [b for a, b in zip(results, results[1:], strict=False) if b.commit_log_offset != a.end_offset]
    assert len(breaks) <= 1 and all(b.commit_log_offset % SEGMENT == 0 for b in breaks)
    msgs = decode_records(store.get_messages("T", 2, 1, max_msgs=100, max_bytes=10**9).body)
    assert [m.body for m in msgs] == [it[0] for it in items]
    assert [m.flag for m in msgs] == list(range(100))
    assert msgs[5].properties[PROPERTY_TAGS] == "B"


def test_batch_put_stores_the_producers_property_bytes_as_they_are(make_store: StoreFactory) -> None:
    store = make_store()
    raw = [b"TAGS\x01A\x02UNIQ_KEY\x01U1\x02", b"KEYS\x01k2\x02"]
    items = [(b"one", {"TAGS": "A", "UNIQ_KEY": "U1"}, 0), (b"two", {"KEYS": "k2"}, 0)]
    store.put_messages("Raw", 0, items, raw_properties=raw)
    got = store.get_messages("Raw", 0, 0, max_msgs=2)
    records = decode_records(got.body)
    assert [r.properties for r in records] == [{"TAGS": "A", "UNIQ_KEY": "U1"}, {"KEYS": "k2"}]
    assert raw[0] in got.body and raw[1] in got.body
    # The parsed properties still feed the tag codes and the key index.
    assert len(store.query_by_key("Raw", "k2")) == 1 and len(store.query_by_key("Raw", "U1")) == 1
    with pytest.raises(ValueError, match="one entry per item"):
        store.put_messages("Raw", 0, items, raw_properties=raw[:1])


def test_oversize_and_impossible_messages_are_refused(make_store: StoreFactory) -> None:
    store = make_store(max_message_bytes=1000)
    with pytest.raises(MessageIllegalError, match="at most 1000"):
        store.put_message("T", 0, b"x" * 1001, {})
    store2 = make_store(root=store.config.root.parent / "other", max_message_bytes=10**6)
    with pytest.raises(MessageIllegalError, match="does not fit"):
        store2.put_message("T", 0, b"x" * SEGMENT, {})
    assert store.max_offset("T", 0) == 0 and store2.max_phy_offset == 0


def test_a_batch_bigger_than_a_segment_is_split_at_record_boundaries(make_store: StoreFactory) -> None:
    store = make_store()
    items = [(body(i, 1000), props(i), 0) for i in range(150)]  # ~165 KiB, segments are 64 KiB
    results = store.put_messages("Big", 0, items)
    assert [r.queue_offset for r in results] == list(range(150))
    assert len({r.commit_log_offset // SEGMENT for r in results}) >= 3
    assert all(r.end_offset // SEGMENT == r.commit_log_offset // SEGMENT for r in results)
    msgs = decode_records(store.get_messages("Big", 0, 0, max_msgs=150, max_bytes=10**9).body)
    assert [m.body for m in msgs] == [it[0] for it in items]
