"""Key index: KEYS and the unique key, time ranges, file roll, reopen."""

from __future__ import annotations

import time

from store_helpers import StoreFactory, body, props

from krocket.common.message import decode_record


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
