"""Retention (expired segments, disk pressure) and the disk-full write refusal."""

from __future__ import annotations

import os
import time

import pytest

from krocket.broker.store.message_store import GetStatus
from krocket.common.codes import ResponseCode
from krocket.common.errors import ServiceNotAvailableError
from krocket.common.record import decode_records

from tests.unit.store.store_helpers import SEGMENT, StoreFactory, body, props


def test_expired_segments_are_deleted_and_min_offsets_move(make_store: StoreFactory) -> None:
    store = make_store(consume_queue_entries_per_file=20)
    results = [store.put_message("R", i % 2, body(i, 500), props(i, keys=f"k{i}")) for i in range(500)]
    store.flush()
    segs = sorted(store.config.commitlog_dir.iterdir())
    assert len(segs) >= 4
    old = time.time() - 73 * 3600
    for seg in segs[:2]:
        os.utime(seg, (old, old))
    assert store.run_retention() == 2
    assert store.min_phy_offset == 2 * SEGMENT
    first_kept = next(r for r in results if r.commit_log_offset >= 2 * SEGMENT)
    lows = {}
    for q in (0, 1):
        lo = lows[q] = store.min_offset("R", q)
        expect = next(r for r in results[q::2] if r.commit_log_offset >= 2 * SEGMENT)
        assert lo == expect.queue_offset
        assert store.earliest_store_time("R", q) == expect.store_timestamp
        got = store.get_messages("R", q, 0)
        assert got.status is GetStatus.OFFSET_TOO_SMALL and got.next_begin_offset == lo
        msgs = decode_records(store.get_messages("R", q, lo).body)
        assert msgs[0].queue_offset == lo and msgs[0].commit_log_offset >= first_kept.commit_log_offset
    # Consume queue files wholly below the new minimum went with the segments.
    qfiles = sorted((store.config.consume_queue_dir / "R" / "0").iterdir())
    assert int(qfiles[0].name) // (20 * 20) * 20 <= store.min_offset("R", 0)
    assert int(qfiles[0].name) > 0
    assert store.query_by_key("R", "k0") == []
    # The reopened store agrees.
    store.close()
    store = make_store()
    assert store.min_phy_offset == 2 * SEGMENT
    assert {q: store.min_offset("R", q) for q in (0, 1)} == lows


def test_recent_segments_are_kept_and_the_current_one_never_goes(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(300):
        store.put_message("R", 0, body(i, 500), props(i))
    segments = store.stats()["commitlog_segments"]
    assert segments >= 3
    assert store.run_retention() == 0
    assert store.run_retention(now=time.time() + 100 * 3600) == segments - 1
    assert store.stats()["commitlog_segments"] == 1
    assert store.put_message("R", 0, b"still", {}).queue_offset == 300


def test_disk_pressure_deletes_the_oldest(make_store: StoreFactory) -> None:
    store = make_store(usage=0.8)  # over disk_max_used_ratio 0.75, under the 0.90 warning level
    for i in range(300):
        store.put_message("R", 0, body(i, 500), props(i))
    before = store.stats()["commitlog_segments"]
    assert before >= 3
    store.config.delete_segments_batch_max = 1
    assert store.run_retention() == 1
    assert store.stats()["commitlog_segments"] == before - 1
    assert store.min_phy_offset == SEGMENT


def test_disk_full_refuses_writes_but_reads_work(make_store: StoreFactory) -> None:
    usage = {"ratio": 0.5}
    store = make_store()
    store.retention.usage_fn = lambda _p: usage["ratio"]
    for i in range(10):
        store.put_message("F", 0, body(i), props(i))
    usage["ratio"] = 0.95
    assert store.is_disk_full()
    with pytest.raises(ServiceNotAvailableError, match=r"disk full: 95\.0%.*disk_warning_ratio 90%") as err:
        store.put_message("F", 0, b"refused", {})
    assert err.value.code == ResponseCode.SERVICE_NOT_AVAILABLE
    with pytest.raises(ServiceNotAvailableError):
        store.put_messages("F", 0, [(b"refused", {}, 0)])
    got = store.get_messages("F", 0, 0)
    assert got.count == 10 and store.max_offset("F", 0) == 10
    usage["ratio"] = 0.6
    assert store.put_message("F", 0, b"ok again", {}).queue_offset == 10
