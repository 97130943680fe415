"""Segments roll by time as well as size, so retention can delete old data from a mostly empty segment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from krocket.broker.store import message_store
from krocket.broker.store.mapped_file_queue import Segment
from krocket.common.record import decode_records

from tests.unit.store.store_helpers import SEGMENT, StoreFactory, body, props
from tests.unit.store.test_disk_space import FakeDisk

MIB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(message_store.time, "time", fake)
    return fake


def test_a_segment_rolls_once_its_interval_is_over(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(commitlog_roll_interval_ms=1000)
    first = store.put_message("R", 0, body(0), props(0))
    clock.now += 0.5
    assert store.put_message("R", 0, body(1), props(1)).commit_log_offset < SEGMENT
    clock.now += 0.6
    rolled = store.put_message("R", 0, body(2), props(2))
    assert rolled.commit_log_offset == SEGMENT and rolled.queue_offset == 2
    sealed = store.commitlog.files.segments[0]
    assert sealed.full and os.path.getsize(sealed.path) == SEGMENT
    msgs = decode_records(store.get_messages("R", 0, 0).body)
    assert [m.body for m in msgs] == [body(i) for i in range(3)]
    assert msgs[0].commit_log_offset == first.commit_log_offset
    # The new segment's interval starts with it.
    clock.now += 0.9
    assert store.put_message("R", 0, body(3), props(3)).commit_log_offset < 2 * SEGMENT
    assert store.stats()["commitlog_segments"] == 2


def test_no_time_roll_when_the_interval_is_zero_or_the_segment_is_empty(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(commitlog_roll_interval_ms=0)
    store.put_message("R", 0, b"a", {})
    clock.now += 10 * 24 * 3600
    assert store.put_message("R", 0, b"b", {}).commit_log_offset < SEGMENT
    timed = make_store(store.config.root.parent / "timed", commitlog_roll_interval_ms=1000)
    clock.now += 5
    assert timed.put_message("R", 0, b"first", {}).commit_log_offset == 0  # a new log starts its segment now
    clock.now += 0.5
    assert timed.put_message("R", 0, b"second", {}).commit_log_offset < SEGMENT


def test_a_time_roll_without_room_for_a_segment_keeps_writing_the_current_one(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store(commitlog_roll_interval_ms=1000, disk_free_reserve_bytes=2 * MIB)
    store.put_message("R", 0, b"a", {})
    store.space.stat_fn = FakeDisk(free=2 * MIB + SEGMENT // 2)  # room for writes, not for a new segment
    clock.now += 2
    assert store.put_message("R", 0, b"b", {}).commit_log_offset < SEGMENT
    assert store.stats()["commitlog_segments"] == 1
    store.space.stat_fn = FakeDisk()
    clock.now += 0.5  # within the retry delay: still no roll attempt
    assert store.put_message("R", 0, b"c", {}).commit_log_offset < SEGMENT
    clock.now += 61
    assert store.put_message("R", 0, b"d", {}).commit_log_offset == SEGMENT


def test_the_roll_deadline_survives_a_restart(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(commitlog_roll_interval_ms=1000)
    store.put_message("R", 0, b"a", {})
    root = store.config.root
    store.close()
    clock.now += 1.5
    reopened = make_store(root, commitlog_roll_interval_ms=1000)
    assert reopened.put_message("R", 0, b"b", {}).commit_log_offset == SEGMENT


def test_retention_deletes_a_rolled_segment_once_expired_never_the_active_one(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store(commitlog_roll_interval_ms=1000, file_reserved_hours=1.0)
    for i in range(10):
        store.put_message("R", i % 2, body(i), props(i, keys=f"k{i}"))
    assert store.run_retention(now=time.time() + 2 * 3600) == 0  # the only segment is the active one
    clock.now += 1.5
    kept = store.put_message("R", 0, b"after the roll", {})
    assert store.stats()["commitlog_segments"] == 2
    assert store.run_retention(now=time.time() + 2 * 3600) == 1
    assert store.min_phy_offset == SEGMENT
    assert store.min_offset("R", 0) == kept.queue_offset and store.min_offset("R", 1) == 5
    assert store.query_by_key("R", "k3") == []
    msgs = decode_records(store.get_messages("R", 0, kept.queue_offset).body)
    assert [m.body for m in msgs] == [b"after the roll"]


def test_a_slave_copies_a_time_rolled_segment_without_writing_its_padding(
    make_store: StoreFactory, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = make_store(tmp_path / "master", commitlog_roll_interval_ms=1000)
    master.put_message("R", 0, b"before", {})
    clock.now += 1.5
    master.put_message("R", 0, b"after", {})
    end = master.max_phy_offset
    copy = bytearray()
    while len(copy) < end:
        copy += master.read_raw(len(copy), 256 * 1024)
    slave = make_store(tmp_path / "slave")
    written: list[int] = []
    original = Segment.write

    def counting(seg: Segment, data: bytes | bytearray | memoryview, pos: int) -> None:
        written.append(len(data))
        original(seg, data, pos)

    monkeypatch.setattr(Segment, "write", counting)
    at = 0
    for start in range(0, end, 16 * 1024):
        at = slave.append_raw(bytes(copy[start : start + 16 * 1024]), at)
    assert at == end and sum(written) < SEGMENT // 2
    assert slave.commitlog.read(0, SEGMENT) == master.commitlog.read(0, SEGMENT)
    msgs = decode_records(slave.get_messages("R", 0, 0).body)
    assert [m.body for m in msgs] == [b"before", b"after"]
