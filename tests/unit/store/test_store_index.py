"""Key index: KEYS and the unique key, time ranges, file roll, reopen."""

from __future__ import annotations

import os
import time
from pathlib import Path

from krocket.broker.store.index_service import ENTRY_BYTES, HEADER_BYTES, SLOT_PAGE, IndexService, _runs
from krocket.common.record import decode_record

from tests.unit.store.store_helpers import StoreFactory, body, props


def keys_of(records: list[bytes]) -> list[int]:
    return [decode_record(r, check_crc=True).queue_offset for r in records]


def test_query_by_keys_and_unique_key(make_store: StoreFactory) -> None:
    store = make_store()  # 64 slots: plenty of hash collisions, checked against the records
    for i in range(300):
        store.put_message("Idx", i % 3, body(i), props(i, keys=f"order-{i % 50} batch-{i // 100}"))
    store.put_message("Other", 0, b"x", props(999, keys="order-7"))
    hits = store.query_by_key("Idx", "order-7", max_num=100)
    msgs = [decode_record(r, check_crc=True) for r in hits]
    assert sorted(m.body for m in msgs) == sorted(body(i) for i in range(300) if i % 50 == 7)
    assert all(m.topic == "Idx" for m in msgs)
    assert len(store.query_by_key("Idx", "batch-1", max_num=1000)) == 100
    assert len(store.query_by_key("Idx", "order-7", max_num=2)) == 2
    uniq = store.query_by_key("Idx", "UNIQ00000123")
    assert len(uniq) == 1 and decode_record(uniq[0]).body == body(123)
    assert store.query_by_key("Idx", "missing") == []
    # 300 messages x 3 keys fill several 400-entry index files.
    assert len(store.index.files) >= 3


def test_query_by_key_time_range(make_store: StoreFactory) -> None:
    store = make_store()
    early = store.put_message("Tm", 0, b"a", props(1, keys="k"))
    time.sleep(0.01)
    late = store.put_message("Tm", 0, b"b", props(2, keys="k"))
    assert len(store.query_by_key("Tm", "k")) == 2
    only_late = store.query_by_key("Tm", "k", begin_ts=late.store_timestamp)
    assert [decode_record(r).body for r in only_late] == [b"b"]
    only_early = store.query_by_key("Tm", "k", end_ts=early.store_timestamp)
    assert [decode_record(r).body for r in only_early] == [b"a"]


def test_index_survives_clean_reopen_and_crash(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(50):
        store.put_message("R", 0, body(i), props(i, keys=f"key{i}"))
    store.close()
    store = make_store()
    assert len(store.query_by_key("R", "key10")) == 1
    for i in range(50, 60):
        store.put_message("R", 0, body(i), props(i, keys=f"key{i}"))
    store.commit()
    store.abandon()  # crash: the index buffer is lost and rebuilt from the commit log
    store = make_store()
    assert len(store.query_by_key("R", "key55")) == 1
    assert len(store.query_by_key("R", "key10")) == 1


def test_full_entry_buffer_appends_entries_only_and_flush_writes_slot_runs(tmp_path: Path) -> None:
    index = IndexService(tmp_path / "index", hash_slots=4 * SLOT_PAGE, max_entries=10_000, pending_limit=8)
    index.load(clean_stop=True)
    writes: list[tuple[int, int]] = []
    real_pwrite = os.pwrite

    def recording(fd: int, data: bytes, pos: int) -> int:
        writes.append((pos, len(data)))
        return real_pwrite(fd, data, pos)

    os.pwrite = recording  # type: ignore[assignment]
    try:
        index.put_many([(f"T#k{i}", 100 + i) for i in range(8)], ts=1_000)
        current = index.files[-1]
        # The pending entries went out in one write, past the slot table; no slot page, no header yet.
        assert writes == [(current.entries_at, 8 * ENTRY_BYTES)]
        writes.clear()
        for fd in index.sync_fds():
            os.close(fd)
    finally:
        os.pwrite = real_pwrite  # type: ignore[assignment]
    slot_writes = [(pos, size) for pos, size in writes if HEADER_BYTES <= pos < current.entries_at]
    # Dirty slot pages go out as runs of adjacent pages, at most one write per run (4 pages here).
    assert 1 <= len(slot_writes) <= 4
    assert sum(size for _, size in slot_writes) % (SLOT_PAGE * 4) == 0
    assert (0, HEADER_BYTES) in writes
    assert index.query("T#k3", 10, 0, 2_000) == [103]
    index.close()


def test_slot_page_runs() -> None:
    assert _runs([]) == []
    assert _runs([0, 1, 2, 5, 7, 8]) == [(0, 2), (5, 5), (7, 8)]
