"""Flush modes (ASYNC background flush, SYNC group commit), the store lock, raw appends for replication."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from krocket.broker.store import flush as flush_module
from krocket.broker.store.checkpoint import StoreLockedError
from krocket.broker.store.message_store import MessageStore
from krocket.common.errors import FlushDiskTimeoutError, MessageIllegalError
from krocket.common.record import decode_records

from tests.unit.store.store_helpers import SEGMENT, StoreFactory, body, props, small_config


async def test_async_flush_wait_is_a_no_op_and_the_background_flushes(make_store: StoreFactory) -> None:
    store = make_store(flush_interval_ms=20, flush_logics_interval_ms=20)
    store.start_background()
    try:
        r = store.put_message("A", 0, body(1), props(1))
        assert store.flushed_offset < r.end_offset
        await store.wait_flushed(r.end_offset)  # returns at once under ASYNC_FLUSH
        assert store.flushed_offset < r.end_offset
        for _ in range(100):
            await asyncio.sleep(0.01)
            if store.flushed_offset >= r.end_offset and store.checkpoint.data.logics_offset >= r.end_offset:
                break
        assert store.flushed_offset >= r.end_offset
        assert store.checkpoint.data.logics_offset >= r.end_offset
    finally:
        await store.stop_background()


async def test_sync_flush_group_commit_shares_fdatasyncs(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(flush_mode="SYNC_FLUSH")
    synced: list[int] = []
    real = flush_module.fdatasync_all

    def slow_sync(fds: list[int]) -> None:
        import time

        time.sleep(0.02)  # a slow disk: requests pile up behind each sync
        synced.append(len(fds))
        real(fds)

    monkeypatch.setattr(flush_module, "fdatasync_all", slow_sync)
    store.start_background()
    try:

        async def send(i: int) -> int:
            r = store.put_message("S", 0, body(i), props(i))
            assert store.flushed_offset < r.end_offset
            await store.wait_flushed(r.end_offset)
            assert store.flushed_offset >= r.end_offset
            return r.end_offset

        ends = await asyncio.gather(*(send(i) for i in range(200)))
        assert store.flushed_offset >= max(ends)
        rounds = store.stats()["sync_flush_rounds"]
        assert 1 <= rounds <= 10, rounds  # 200 acks, a handful of fdatasync rounds
    finally:
        await store.stop_background()


async def test_sync_flush_timeout_raises(make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(flush_mode="SYNC_FLUSH", sync_flush_timeout_s=0.05, sync_flush_inline_bytes=0)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stuck_sync(fds: list[int]) -> None:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
        for fd in fds:
            os.close(fd)

    monkeypatch.setattr(flush_module, "fdatasync_all", stuck_sync)
    store.start_background()
    try:
        r = store.put_message("S", 0, b"x", {})
        with pytest.raises(FlushDiskTimeoutError, match="took over 0.05 s"):
            await store.wait_flushed(r.end_offset)
    finally:
        release.set()
        await store.stop_background()


async def test_small_sync_flush_rounds_run_on_the_loop_and_large_ones_in_the_worker(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(flush_mode="SYNC_FLUSH", sync_flush_inline_bytes=4096)
    threaded: list[int] = []
    real = flush_module.fdatasync_all

    def counting(fds: list[int]) -> None:
        threaded.append(len(fds))
        real(fds)

    monkeypatch.setattr(flush_module, "fdatasync_all", counting)
    store.start_background()
    try:
        small = store.put_message("S", 0, b"x" * 100, {})
        await store.wait_flushed(small.end_offset)
        assert store.flushed_offset >= small.end_offset
        assert threaded == []  # one small record: synced on the loop thread
        rounds = store.flusher.sync_rounds
        large = store.put_messages("S", 0, [(b"y" * 1000, {}, 0)] * 10)
        await store.wait_flushed(large[-1].end_offset)
        assert store.flushed_offset >= large[-1].end_offset
        assert threaded == [1]  # ~10 KiB pending: handed to the worker thread
        assert store.flusher.sync_rounds == rounds + 1
    finally:
        await store.stop_background()


async def test_slow_inline_syncs_in_a_row_send_the_next_rounds_to_the_worker(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(flush_mode="SYNC_FLUSH")
    threaded: list[int] = []
    real_sync, real_worker = os.fdatasync, flush_module.fdatasync_all
    monkeypatch.setattr(flush_module, "INLINE_SLOW_S", 0.05)  # a quick sync stays quick on a busy machine

    def slow_sync(fd: int) -> None:
        time.sleep(flush_module.INLINE_SLOW_S * 2)
        real_sync(fd)

    def counting(fds: list[int]) -> None:
        threaded.append(len(fds))
        real_worker(fds)

    monkeypatch.setattr(flush_module, "fdatasync_all", counting)
    store.start_background()
    try:
        monkeypatch.setattr(os, "fdatasync", slow_sync)
        first = store.put_message("S", 0, b"x", {})
        await store.wait_flushed(first.end_offset)
        assert threaded == []  # synced inline, slowly: once may be the loop thread preempted
        monkeypatch.setattr(os, "fdatasync", real_sync)
        quick = store.put_message("S", 0, b"q", {})
        await store.wait_flushed(quick.end_offset)  # a quick one in between: the streak starts again
        monkeypatch.setattr(os, "fdatasync", slow_sync)
        for i in range(flush_module.INLINE_SLOW_STREAK):
            r = store.put_message("S", 0, b"s%d" % i, {})
            await store.wait_flushed(r.end_offset)
        assert threaded == []  # all inline; the last of the streak moved the next rounds to the worker
        monkeypatch.setattr(os, "fdatasync", real_sync)
        second = store.put_message("S", 0, b"y", {})
        await store.wait_flushed(second.end_offset)
        assert threaded == [1] and store.flushed_offset >= second.end_offset  # the worker took over
    finally:
        await store.stop_background()


async def test_sync_flush_without_background_flushes_inline(make_store: StoreFactory) -> None:
    store = make_store(flush_mode="SYNC_FLUSH")
    r = store.put_message("S", 0, b"x", {})
    await store.wait_flushed(r.end_offset)
    assert store.flushed_offset >= r.end_offset


def test_lock_prevents_a_second_store(make_store: StoreFactory, tmp_path: Path) -> None:
    first = make_store()
    second = MessageStore(small_config(tmp_path / "store"))
    with pytest.raises(StoreLockedError, match=f"already open by another broker.*pid {os.getpid()}"):
        second.open()
    first.close()
    second.open()
    second.close()


def test_append_raw_replicates_byte_for_byte(make_store: StoreFactory, tmp_path: Path) -> None:
    master = make_store()
    for i in range(300):
        master.put_message("Rep", i % 2, body(i, 400), props(i, tags="x" if i % 3 else "y", keys=f"k{i}"))
    slave = make_store(root=tmp_path / "slave")
    seen: list[tuple[str, int, int, int]] = []
    slave.on_dispatched(lambda *a: seen.append(a))
    offset = 0
    chunk = 7777  # not aligned to records: partial records are carried to the next append
    while offset < master.max_phy_offset:
        data = master.read_raw(offset, chunk)
        assert data
        assert slave.append_raw(data, offset) == offset + len(data)
        offset += len(data)
    assert slave.max_phy_offset == master.max_phy_offset
    for seg in sorted(master.config.commitlog_dir.iterdir()):
        assert (slave.config.commitlog_dir / seg.name).read_bytes() == seg.read_bytes()
    for q in (0, 1):
        a = master.get_messages("Rep", q, 0, max_msgs=1000, max_bytes=10**9)
        b = slave.get_messages("Rep", q, 0, max_msgs=1000, max_bytes=10**9)
        assert a.body == b.body and a.max_offset == b.max_offset == 150
    assert len(seen) == 300
    assert len(slave.query_by_key("Rep", "k123")) == 1
    with pytest.raises(Exception, match="commit log ends at"):
        slave.append_raw(b"\0" * 16, 5)
    assert master.max_phy_offset > SEGMENT
    # The slave survives a restart with the same data.
    slave.close()
    slave = make_store(root=tmp_path / "slave")
    assert len(decode_records(slave.get_messages("Rep", 1, 0, max_msgs=1000, max_bytes=10**9).body)) == 150


async def test_appends_reach_the_files_every_loop_tick(make_store: StoreFactory) -> None:
    store = make_store(commit_buffer_bytes=10**9)
    store.start_background()
    try:
        r = store.put_message("K", 0, body(1), props(1))
        assert store.commitlog.pending_bytes == r.wrote_bytes  # still in the user-space buffer
        await asyncio.sleep(0)
        assert store.commitlog.pending_bytes == 0 and store.commitlog.committed == r.end_offset
    finally:
        await store.stop_background()


def test_append_raw_refuses_bytes_that_are_not_records(make_store: StoreFactory, tmp_path: Path) -> None:
    master = make_store()
    master.put_message("Rep", 0, body(1), props(1))
    good = master.read_raw(0, 4096)
    slave = make_store(root=tmp_path / "slave")
    bad = bytearray(good)
    bad[28:36] = (12345).to_bytes(8, "big")  # a wrong PHYSICALOFFSET
    with pytest.raises(MessageIllegalError, match="physical offset"):
        slave.append_raw(bytes(bad), 0)
    assert slave.max_phy_offset == 0
    assert slave.append_raw(good, 0) == len(good)
