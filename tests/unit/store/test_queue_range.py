"""Pull reads (``queue_range``: one read of the entries, the records in few reads) give exactly what the
entry-by-entry walk they replaced gave: the same status, body bytes, count and offsets, on interleaved queues,
tag filters, segment ends (BLANK records), emptied entries, retention, short reads, offsets out of range and a
slave's store."""

from __future__ import annotations

import itertools
from pathlib import Path

from krocket.broker.store import queue_range
from krocket.broker.store.message_store import MessageStore
from krocket.broker.store.reader import DEFAULT_MAX_BYTES, GetStatus
from krocket.broker.store.recovery import empty_entries_in
from krocket.broker.tag_filter import java_string_hash
from krocket.common.record import decode_records

from tests.unit.store.store_helpers import SEGMENT, StoreFactory, body, props
from tests.unit.store.walk_reference import walk_entries

TAG_CODES = [None, {java_string_hash("TagA")}, {java_string_hash("TagA"), java_string_hash("TagB")}, {12345}]


def assert_same_reads(store: MessageStore, topic: str, queue_ids: range, offsets: list[int] | None = None) -> int:
    """Every pull shape from every offset (and a few out of range) reads the same both ways; returns how many
    messages the reads found."""
    found = 0
    for queue_id in queue_ids:
        cq = store.queues.get(topic, queue_id)
        hi = cq.max_offset if cq is not None else 0
        starts = offsets if offsets is not None else [*range(0, hi + 1), hi + 5]
        shapes = itertools.product([1, 3, 32, 1024], [200, 5000, DEFAULT_MAX_BYTES], TAG_CODES)
        for max_msgs, max_bytes, codes in shapes:
            for offset in starts:
                want = walk_entries(store.commitlog, store.queues, topic, queue_id, offset, max_msgs, max_bytes, codes)
                got = store.get_messages(topic, queue_id, offset, max_msgs, max_bytes, codes)
                assert got == want, (queue_id, offset, max_msgs, max_bytes, codes)
                found += got.count
    return found


def fill_interleaved(store: MessageStore, topic: str, n: int, queues: int, run: int, size: int = 300) -> None:
    """``n`` messages in runs of ``run`` per queue, round robin over ``queues``, tags TagA/TagB/TagC."""
    i = 0
    while i < n:
        q = (i // run) % queues
        items = [(body(i + k, size), props(i + k, tags=("TagA", "TagB", "TagC")[(i + k) % 3]), 0) for k in range(run)]
        store.put_messages(topic, q, items)
        i += run


def test_interleaved_queues_read_the_same(make_store: StoreFactory) -> None:
    store = make_store()
    fill_interleaved(store, "I", 240, queues=3, run=1)  # every queue's records apart from each other
    fill_interleaved(store, "I", 240, queues=3, run=7)  # runs of adjacent records
    assert store.commitlog.max_offset > 2 * SEGMENT  # the queues cross segment ends (BLANK records)
    assert assert_same_reads(store, "I", range(3)) > 0


def test_one_queue_contiguous_and_pending_entries_read_the_same(make_store: StoreFactory) -> None:
    store = make_store(consume_queue_entries_per_file=20, consume_queue_pending_entries=64)
    for i in range(130):  # some entries in consume queue files, the rest still in the pending buffer
        store.put_message("C", 0, body(i, 100 + i % 50), props(i, tags="TagA" if i % 4 else "TagB"))
    cq = store.queues.get("C", 0)
    assert cq is not None and cq.written < cq.max_offset
    assert assert_same_reads(store, "C", range(1)) > 0
    got = store.get_messages("C", 0, 0, max_msgs=1024, max_bytes=10**9)
    assert [m.queue_offset for m in decode_records(got.body)] == list(range(130))


def test_emptied_entries_read_the_same(make_store: StoreFactory) -> None:
    store = make_store()
    results = [store.put_message("E", i % 2, body(i, 250), props(i)) for i in range(120)]
    cq = store.queues.get("E", 0)
    assert cq is not None
    bad = results[20].commit_log_offset, results[31].commit_log_offset  # as recovery empties a corrupt range
    assert empty_entries_in(cq, *bad) == 6
    assert assert_same_reads(store, "E", range(2)) > 0
    skipped = store.get_messages("E", 0, 10, max_msgs=5)
    assert skipped.status is GetStatus.OFFSET_FOUND_NULL and skipped.next_begin_offset == 15


def test_reads_after_retention_and_past_a_cut_log_read_the_same(make_store: StoreFactory) -> None:
    store = make_store()
    results = [store.put_message("R", i % 2, body(i, 500), props(i)) for i in range(400)]
    store.flush()
    assert store.run_retention(now=1e12) > 0  # the oldest segments go; queue minimums move
    assert store.min_offset("R", 0) > 0
    assert_same_reads(store, "R", range(2), offsets=[0, 1, 50, 120, 150, 199, 200, 260])
    # Entries past the log's end (cut without trimming the queues): reads come back short or empty.
    store.commitlog.truncate_to(results[-30].commit_log_offset + 100)
    found = assert_same_reads(store, "R", range(2), offsets=[150, 170, 185, 190, 199])
    assert found > 0


def test_a_slaves_store_reads_the_same(make_store: StoreFactory, tmp_path: Path) -> None:
    master = make_store(root=tmp_path / "master")
    fill_interleaved(master, "S", 300, queues=2, run=5, size=400)
    slave = make_store(root=tmp_path / "slave")
    offset = 0
    while offset < master.max_phy_offset:
        data = master.read_raw(offset, 7777)
        slave.append_raw(data, offset)
        offset += len(data)
    assert assert_same_reads(slave, "S", range(2)) > 0
    for q in (0, 1):
        assert slave.get_messages("S", q, 0, 1024, 10**9) == master.get_messages("S", q, 0, 1024, 10**9)


def test_empty_and_unknown_queues_read_the_same(make_store: StoreFactory) -> None:
    store = make_store()
    store.put_message("U", 1, body(0), props(0))
    assert_same_reads(store, "U", range(3), offsets=[0, 1, 2, 7])
    assert store.get_messages("Nope", 0, 0).status is GetStatus.NO_MESSAGE_IN_QUEUE


def test_a_log_cut_inside_a_run_reads_the_same(make_store: StoreFactory) -> None:
    store = make_store()
    fill_interleaved(store, "K", 60, queues=2, run=6, size=200)
    last = store.get_messages("K", 1, 0, 1024, 10**9)
    records = decode_records(last.body)
    cut = records[-4]  # in the middle of queue 1's last run
    store.commitlog.truncate_to(cut.commit_log_offset + 50)
    assert_same_reads(store, "K", range(2))
    short = store.get_messages("K", 1, records[-8].queue_offset, 32)
    assert short.count == 4 and short.next_begin_offset == cut.queue_offset


def test_queues_far_apart_read_the_same(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(12):  # queue 0's records lie ~18 KiB apart: read one by one; queue 1's in runs, close
        store.put_message("G", 0, body(i, 300), props(i))
        store.put_messages("G", 1, [(body(k, 300), props(k, tags="TagB"), 0) for k in range(60)])
    assert assert_same_reads(store, "G", range(2), offsets=[0, 1, 5, 11, 12, 100, 400, 719]) > 0
    last = decode_records(store.get_messages("G", 0, 11).body)[0]
    store.commitlog.truncate_to(last.commit_log_offset + 100)  # queue 0's last record cut: its read is short
    assert assert_same_reads(store, "G", range(2), offsets=[0, 5, 9, 10, 11, 640, 659, 660]) > 0


def test_reads_of_every_length_keep_few_decoding_structs(make_store: StoreFactory) -> None:
    store = make_store(consume_queue_entries_per_file=300)
    for i in range(260):
        store.put_message("L", 0, body(i, 60), props(i))
    for n in range(1, 260):  # each length decodes once: blocks of 64 and halving pieces
        got = store.get_messages("L", 0, 0, max_msgs=n, tag_codes={java_string_hash("TagA")} if n % 2 else None)
        assert got.count == n
    assert len(queue_range._STRUCTS) <= 14  # 7 sizes, with and without tags codes: a few KiB, not one per length
