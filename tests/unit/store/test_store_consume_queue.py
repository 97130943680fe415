"""Consume queues: file roll, offsets, statuses, tag filtering, lookups by time."""

from __future__ import annotations

import os
import time

from krocket.broker.store.consume_queue import ENTRY_BYTES
from krocket.broker.store.message_store import GetStatus
from krocket.common.message import tags_code
from krocket.common.record import decode_records

from tests.unit.store.store_helpers import StoreFactory, body, props


def test_consume_queue_files_roll_by_entry_count(make_store: StoreFactory) -> None:
    store = make_store()  # 50 entries a file
    for i in range(130):
        store.put_message("Roll", 3, body(i, 50), props(i))
    store.flush()
    qdir = store.config.consume_queue_dir / "Roll" / "3"
    names = sorted(os.listdir(qdir))
    per_file = 50 * ENTRY_BYTES
    assert names == [f"{0:020d}", f"{per_file:020d}", f"{2 * per_file:020d}"]
    assert [os.path.getsize(qdir / n) for n in names] == [per_file, per_file, 30 * ENTRY_BYTES]
    # Reads across file boundaries and from the pending buffer.
    for start in (0, 45, 49, 50, 99, 120):
        msgs = decode_records(store.get_messages("Roll", 3, start, max_msgs=10).body)
        assert [m.queue_offset for m in msgs] == list(range(start, min(start + 10, 130)))


def test_reads_see_entries_not_yet_written_out(make_store: StoreFactory) -> None:
    store = make_store(consume_queue_pending_entries=1000)
    for i in range(30):
        store.put_message("P", 0, body(i), props(i))
    qdir = store.config.consume_queue_dir / "P" / "0"
    assert not qdir.exists() or not os.listdir(qdir)  # all still pending
    got = store.get_messages("P", 0, 25)
    assert [m.queue_offset for m in decode_records(got.body)] == [25, 26, 27, 28, 29]


def test_offsets_and_statuses(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.get_messages("Q", 0, 0).status is GetStatus.NO_MESSAGE_IN_QUEUE
    for i in range(5):
        store.put_message("Q", 0, body(i), props(i))
    assert (store.min_offset("Q", 0), store.max_offset("Q", 0)) == (0, 5)
    assert store.max_offset("Q", 1) == 0 and store.max_offset("Nope", 0) == 0
    one = store.get_messages("Q", 0, 5)
    assert one.status is GetStatus.OFFSET_OVERFLOW_ONE and one.next_begin_offset == 5
    bad = store.get_messages("Q", 0, 9)
    assert bad.status is GetStatus.OFFSET_OVERFLOW_BADLY and bad.next_begin_offset == 5
    small = store.get_messages("Q", 0, -1)
    assert small.status is GetStatus.OFFSET_TOO_SMALL and small.next_begin_offset == 0
    assert store.topics_with_queues() == {"Q": [0]}
    assert store.queue_ids("Q") == [0]


def test_tag_filtering_skips_but_advances(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(40):
        store.put_message("Tags", 0, body(i), props(i, tags="red" if i % 4 == 0 else "blue"))
    red = {tags_code("red")}
    got = store.get_messages("Tags", 0, 0, max_msgs=5, tag_codes=red)
    msgs = decode_records(got.body)
    assert [m.queue_offset for m in msgs] == [0, 4, 8, 12, 16]
    assert all(m.tags == "red" for m in msgs)
    assert got.next_begin_offset == 17
    # Nothing matching from 37 on: the pull still moves past what it scanned.
    none = store.get_messages("Tags", 0, 37, tag_codes=red)
    assert none.status is GetStatus.NO_MATCHED_MESSAGE and none.count == 0 and none.next_begin_offset == 40
    # A filter with two codes.
    both = store.get_messages("Tags", 0, 0, max_msgs=40, tag_codes={tags_code("red"), tags_code("blue")})
    assert both.count == 40


def test_offset_by_time_and_earliest_store_time(make_store: StoreFactory) -> None:
    store = make_store()
    stamps = []
    for i in range(6):
        stamps.append(store.put_message("Time", 0, body(i), props(i)).store_timestamp)
        time.sleep(0.003)
    assert store.earliest_store_time("Time", 0) == stamps[0]
    assert store.earliest_store_time("Time", 1) == -1
    assert store.offset_by_time("Time", 0, 0) == 0
    assert store.offset_by_time("Time", 0, stamps[3]) == stamps.index(stamps[3])
    assert store.offset_by_time("Time", 0, stamps[-1] + 1) == 6


def test_delete_topic_drops_its_queues(make_store: StoreFactory) -> None:
    store = make_store()
    store.put_message("Gone", 0, b"a", {})
    store.put_message("Gone", 1, b"b", {})
    store.put_message("Kept", 0, b"c", {})
    assert store.delete_topic("Gone") == 2
    assert store.topics_with_queues() == {"Kept": [0]}
    assert not (store.config.consume_queue_dir / "Gone").exists()
    assert store.get_messages("Gone", 0, 0).status is GetStatus.NO_MESSAGE_IN_QUEUE
    store.close()
    reopened = type(store)(store.config).open()
    try:
        assert reopened.topics_with_queues() == {"Kept": [0]}
    finally:
        reopened.close()


def test_dispatch_listeners_hear_each_message_and_each_batch_once_per_tag(make_store: StoreFactory) -> None:
    store = make_store()
    seen: list[tuple[str, int, int, int]] = []
    store.on_dispatched(lambda *args: seen.append(args))
    store.put_message("L", 2, b"x", {"TAGS": "t"})
    store.put_messages("L", 2, [(b"y", {}, 0), (b"z", {}, 0)])
    assert seen == [("L", 2, 1, tags_code("t")), ("L", 2, 3, 0)]
    seen.clear()
    store.put_messages("L", 2, [(b"a", {"TAGS": "t"}, 0), (b"b", {"TAGS": "u"}, 0), (b"c", {"TAGS": "t"}, 0)])
    # Every tag of the batch is announced with the queue's end after it, so no filtered long poll is missed.
    assert sorted(seen) == sorted([("L", 2, 6, tags_code("t")), ("L", 2, 6, tags_code("u"))])
