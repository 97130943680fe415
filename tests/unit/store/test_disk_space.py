"""The disk space guard and reservations: refusals come before ENOSPC, an ENOSPC that still happens poisons
nothing, and a store opens on a full disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.store import consume_queue, index_service, mapped_file_queue
from krocket.broker.store.checkpoint import StoreCheckpoint
from krocket.broker.store.disk_space import FAILURE_HOLD_S, DiskFullError, DiskSpace, release_blocks, reserve_blocks
from krocket.broker.store.mapped_file_queue import Segment
from krocket.broker.store.message_store import MessageStore
from krocket.common.codes import ResponseCode
from krocket.common.record import decode_records

from tests.unit.store.store_helpers import SEGMENT, StoreFactory, body, props

MIB = 1024 * 1024


class FakeDisk:
    """A statvfs stand-in: ``free`` bytes free of ``total``."""

    def __init__(self, total: int = 1024 * MIB, free: int = 512 * MIB) -> None:
        self.total = total
        self.free = free
        self.calls = 0

    def __call__(self, _path: Path) -> Any:
        self.calls += 1
        return os.statvfs_result((4096, 4096, self.total // 4096, self.free // 4096, self.free // 4096) + (0,) * 5)


def enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- the guard on its own ---------------------------------------------------------------------------------
def test_the_budget_is_charged_per_write_and_statvfs_runs_only_when_it_runs_out() -> None:
    disk = FakeDisk(free=10 * MIB)
    space = DiskSpace(Path("/x"), reserve_bytes=4 * MIB, warning_ratio=1.0, interval_s=3600, stat_fn=disk)
    space.sample()
    assert space.budget == 6 * MIB and disk.calls == 1
    for _ in range(1024):
        space.admit(1024)  # 1 MiB in all: no statvfs on the way
    assert disk.calls == 1 and space.budget == 5 * MIB
    disk.free = 4 * MIB + 1000  # the disk filled meanwhile (another writer)
    with pytest.raises(DiskFullError, match="disk full: .* kept free") as err:
        space.admit(6 * MIB)
    assert err.value.code == ResponseCode.SERVICE_NOT_AVAILABLE
    assert disk.calls == 2 and space.full


def test_the_reserve_is_at_most_a_tenth_of_a_small_volume() -> None:
    disk = FakeDisk(total=20 * MIB, free=3 * MIB)
    space = DiskSpace(Path("/x"), reserve_bytes=64 * MIB, warning_ratio=1.0, interval_s=0, stat_fn=disk)
    space.sample()
    assert space.keep == 2 * MIB and not space.full
    space.admit(512 * 1024)


def test_writes_resume_once_a_sample_shows_room_again() -> None:
    disk = FakeDisk(free=1 * MIB)
    space = DiskSpace(Path("/x"), reserve_bytes=2 * MIB, warning_ratio=1.0, interval_s=0, stat_fn=disk)
    with pytest.raises(DiskFullError):
        space.admit(100)
    disk.free = 100 * MIB
    space.admit(100)
    assert not space.full and space.refusals == 1


def test_a_segment_is_created_only_where_it_fits_with_the_reserve() -> None:
    disk = FakeDisk(free=5 * MIB)
    space = DiskSpace(Path("/x"), reserve_bytes=2 * MIB, warning_ratio=1.0, interval_s=3600, stat_fn=disk)
    space.ensure_room(3 * MIB, "a segment")
    with pytest.raises(DiskFullError, match="a segment needs 3145729 bytes"):
        space.ensure_room(3 * MIB + 1, "a segment")


def test_a_reported_enospc_refuses_until_a_later_sample_shows_room() -> None:
    disk = FakeDisk(free=100 * MIB)
    space = DiskSpace(Path("/x"), reserve_bytes=2 * MIB, warning_ratio=1.0, interval_s=0, stat_fn=disk)
    space.sample()
    space.report_failure("consume queue T/0", OSError(errno.ENOSPC, "No space left on device"))
    assert space.full and "No space left on device writing consume queue T/0" in (space.refusal or "")
    space.sample()  # at once: the failure stands (resample period not over)
    assert space.full
    space._failed_at -= FAILURE_HOLD_S
    space.admit(10)
    assert not space.full and space.failures == 1


def test_the_used_ratio_over_the_warning_level_refuses() -> None:
    space = DiskSpace(Path("/x"), 0, warning_ratio=0.9, interval_s=0, ratio_fn=lambda: 0.95, stat_fn=FakeDisk())
    with pytest.raises(DiskFullError, match=r"95\.0% .* over disk_warning_ratio 90%"):
        space.admit(1)


# -- block reservation ------------------------------------------------------------------------------------
def test_reserved_blocks_keep_the_size_and_a_hole_gives_them_back(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "seg", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not reserve_blocks(fd, 0, 4 * MIB):
            pytest.skip("fallocate(FALLOC_FL_KEEP_SIZE) is not supported on this file system")
        st = os.fstat(fd)
        assert st.st_size == 0 and st.st_blocks * 512 >= 4 * MIB
        os.pwrite(fd, b"x" * 100, 0)
        os.ftruncate(fd, 4 * MIB)
        release_blocks(fd, 100, 4 * MIB - 100)
        assert os.fstat(fd).st_blocks * 512 <= 64 * 1024
        assert os.pread(fd, 8, 4096) == bytes(8)
    finally:
        os.close(fd)


def test_new_segments_are_reserved_and_a_failed_reservation_leaves_no_file(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    store.put_message("T", 0, b"first", {})
    seg = store.commitlog.files.last
    assert seg is not None
    if not seg.reserved:
        pytest.skip("fallocate(FALLOC_FL_KEEP_SIZE) is not supported on this file system")
    assert os.fstat(seg.fd).st_blocks * 512 >= SEGMENT
    monkeypatch.setattr(mapped_file_queue, "reserve_blocks", enospc)
    before = sorted(p.name for p in store.config.commitlog_dir.iterdir())
    end = store.max_phy_offset
    with pytest.raises(DiskFullError, match="No space left on device writing commit log segment"):
        for i in range(1000):
            store.put_message("T", 0, body(i, 1000), props(i))
    assert sorted(p.name for p in store.config.commitlog_dir.iterdir()) == before
    assert store.max_phy_offset >= end and store.stats()["commitlog_segments"] == 1
    count = store.max_offset("T", 0)
    assert len(decode_records(store.get_messages("T", 0, 0, max_msgs=count).body)) == count


# -- an ENOSPC that still happens -------------------------------------------------------------------------
def test_a_full_disk_refuses_the_roll_and_leaves_the_log_as_it_was(make_store: StoreFactory) -> None:
    store = make_store(disk_free_reserve_bytes=2 * MIB)
    disk = FakeDisk(free=512 * MIB)
    store.space.stat_fn = disk
    acked = [store.put_message("T", 0, b"first", {})]
    disk.free = 2 * MIB + SEGMENT - 1  # the current segment has room, a new one does not fit
    with pytest.raises(DiskFullError) as err:
        for i in range(1000):
            acked.append(store.put_message("T", i % 2, body(i, 700), props(i)))
    assert err.value.code == ResponseCode.SERVICE_NOT_AVAILABLE
    assert store.stats()["commitlog_segments"] == 1 and acked
    got = [decode_records(store.get_messages("T", q, 0, max_msgs=1000).body) for q in (0, 1)]
    assert sum(len(g) for g in got) == len(acked)
    disk.free = 512 * MIB
    assert store.put_message("T", 0, body(0, 700), {}).commit_log_offset == SEGMENT


def test_enospc_in_a_consume_queue_refuses_writes_and_keeps_the_entries(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    for i in range(5):
        store.put_message("Q", 0, body(i), props(i))
    store.flush()
    claimed = store.checkpoint.data.logics_offset
    monkeypatch.setattr(consume_queue, "pwrite_all", enospc)
    accepted = 0
    with pytest.raises(DiskFullError, match="consume queue Q/0"):
        for i in range(5, 200):
            store.put_message("Q", 0, body(i), props(i))  # the put that meets ENOSPC still succeeds
            accepted += 1
    assert accepted > 0 and store.is_disk_full()
    store.flush()
    assert store.checkpoint.data.logics_offset == claimed  # entries in memory are not claimed
    n = 5 + accepted
    msgs = decode_records(store.get_messages("Q", 0, 0, max_msgs=n).body)
    assert [m.body for m in msgs] == [body(i) for i in range(n)]
    monkeypatch.undo()
    store.space._failed_at -= FAILURE_HOLD_S
    assert store.put_message("Q", 0, b"again", {}).queue_offset == n
    store.flush()
    assert store.checkpoint.data.logics_offset == store.max_phy_offset


def test_a_commit_that_meets_enospc_raises_once_and_keeps_the_bytes(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    store.put_message("C", 0, b"committed", {})
    store.commit()
    monkeypatch.setattr(Segment, "write", enospc)
    put = store.put_message("C", 0, b"held back", {})
    with pytest.raises(DiskFullError, match="not acknowledged"):
        store.commit()  # before the acknowledgements: they must not leave
    store.commit()  # already refused: later replies (reads, other connections) go out
    assert store.commitlog.stuck and store.is_disk_full()
    assert decode_records(store.get_messages("C", 0, 0).body)[0].body == b"committed"
    with pytest.raises(DiskFullError):
        store.put_message("C", 0, b"refused", {})
    monkeypatch.undo()
    store.commit()
    assert not store.commitlog.stuck
    assert store.read_record(put.commit_log_offset) is not None


# -- start on a full disk ---------------------------------------------------------------------------------
def test_a_store_opens_on_a_full_disk_serves_reads_and_refuses_writes(
    tmp_path: Path, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path / "s")
    for i in range(20):
        store.put_message("S", 0, body(i), props(i))
    store.close()
    monkeypatch.setattr(mapped_file_queue, "reserve_blocks", enospc)
    monkeypatch.setattr(StoreCheckpoint, "write", enospc)
    reopened = MessageStore(store.config, usage_fn=lambda _p: 0.1).open()
    try:
        assert reopened.is_disk_full()
        msgs = decode_records(reopened.get_messages("S", 0, 0).body)
        assert [m.body for m in msgs] == [body(i) for i in range(20)]
        with pytest.raises(DiskFullError):
            reopened.put_message("S", 0, b"refused", {})
        monkeypatch.undo()
        reopened.space._failed_at -= FAILURE_HOLD_S
        assert reopened.put_message("S", 0, b"accepted", {}).queue_offset == 20
    finally:
        reopened.close()


def test_a_clean_close_gives_back_the_reservation_and_the_next_open_takes_it_again(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    store.put_message("U", 0, b"x" * 100, {})
    seg = store.commitlog.files.last
    assert seg is not None
    if not seg.reserved:
        pytest.skip("fallocate(FALLOC_FL_KEEP_SIZE) is not supported on this file system")
    path, size = seg.path, store.max_phy_offset
    store.close()
    st = os.stat(path)
    assert st.st_size == size and st.st_blocks * 512 < SEGMENT // 2
    reopened = make_store(store.config.root)
    assert reopened.commitlog.tail_reserved and os.stat(path).st_blocks * 512 >= SEGMENT
    assert decode_records(reopened.get_messages("U", 0, 0).body)[0].body == b"x" * 100


def test_a_close_on_a_full_disk_keeps_the_abort_marker_so_the_next_start_rebuilds(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    for i in range(30):
        store.put_message("K", 0, body(i), props(i, keys=f"key{i}"))
    monkeypatch.setattr(consume_queue, "pwrite_all", enospc)
    monkeypatch.setattr(index_service, "pwrite_all", enospc)
    root = store.config.root
    store.close()
    assert (root / "abort").exists()
    monkeypatch.undo()
    reopened = make_store(root)
    assert reopened.recovery_report is not None and not reopened.recovery_report.clean_stop
    msgs = decode_records(reopened.get_messages("K", 0, 0, max_msgs=30).body)
    assert [m.body for m in msgs] == [body(i) for i in range(30)]
    assert reopened.query_by_key("K", "key29")
