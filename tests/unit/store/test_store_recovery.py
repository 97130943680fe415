"""Recovery: clean reopen, crashes (in process and a SIGKILLed writer), torn tails, garbage, flipped bytes,
consume queue repair."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from krocket.broker.store.consume_queue import ENTRY_BYTES
from krocket.broker.store.message_store import MessageStore
from krocket.common.record import RECORD_FIXED_BYTES, decode_record, decode_records

from tests.unit.store.store_helpers import SEGMENT, StoreFactory, body, props


def segment_files(store: MessageStore) -> list[Path]:
    return sorted(store.config.commitlog_dir.iterdir())


def all_messages(store: MessageStore, topic: str, qid: int) -> list:
    got = store.get_messages(topic, qid, store.min_offset(topic, qid), max_msgs=10**6, max_bytes=10**9)
    msgs = decode_records(got.body)
    for pos_msg in msgs:  # every served record passes its CRC
        decode_record(store.read_record(pos_msg.commit_log_offset) or b"", check_crc=True)
    return msgs


def fill(store: MessageStore, n: int, topic: str = "T", queues: int = 1, size: int = 200) -> list:
    return [store.put_message(topic, i % queues, body(i, size), props(i, keys=f"k{i}")) for i in range(n)]


def test_clean_close_and_reopen_keeps_everything(make_store: StoreFactory) -> None:
    store = make_store()
    results = fill(store, 600, queues=3)
    end = store.max_phy_offset
    store.close()
    assert not (store.config.root / "abort").exists()
    store = make_store()
    assert store.recovery_report is not None and store.recovery_report.clean_stop
    assert store.recovery_report.cut_bytes == 0
    assert store.max_phy_offset == end
    for q in range(3):
        msgs = all_messages(store, "T", q)
        assert [m.body for m in msgs] == [body(i) for i in range(q, 600, 3)]
    assert len(store.query_by_key("T", "k77")) == 1
    nxt = store.put_message("T", 1, b"after", {})
    assert nxt.queue_offset == 200 and nxt.commit_log_offset == end
    assert results[-1].end_offset == end


def test_crash_without_close_keeps_what_was_written(make_store: StoreFactory) -> None:
    store = make_store(consume_queue_pending_entries=10_000)
    fill(store, 300)
    store.commit()  # what the event loop does every tick: the bytes reach the page cache
    end = store.max_phy_offset
    store.abandon()  # no flush, no checkpoint, abort marker left behind
    assert (store.config.root / "abort").exists()
    store = make_store()
    assert store.recovery_report is not None and not store.recovery_report.clean_stop
    assert store.max_phy_offset == end
    assert [m.body for m in all_messages(store, "T", 0)] == [body(i) for i in range(300)]
    assert store.put_message("T", 0, b"next", {}).queue_offset == 300


def test_torn_last_record_is_cut(make_store: StoreFactory) -> None:
    store = make_store()
    results = fill(store, 50)
    store.close()
    last = segment_files(store)[-1]
    os.truncate(last, os.path.getsize(last) - 37)
    store = make_store()
    report = store.recovery_report
    assert report is not None and report.cut_bytes == results[-1].wrote_bytes - 37
    assert store.max_phy_offset == results[-2].end_offset
    assert store.max_offset("T", 0) == 49
    assert len(all_messages(store, "T", 0)) == 49
    assert store.read_record(results[-1].commit_log_offset) is None
    again = store.put_message("T", 0, b"again", {})
    assert (again.queue_offset, again.commit_log_offset) == (49, results[-1].commit_log_offset)


def test_random_garbage_appended_is_cut(make_store: StoreFactory) -> None:
    store = make_store()
    fill(store, 50)
    end = store.max_phy_offset
    store.commit()
    store.abandon()
    with open(segment_files(store)[-1], "ab") as f:
        f.write(os.urandom(5000))
    store = make_store()
    assert store.max_phy_offset == end
    assert store.recovery_report is not None and store.recovery_report.cut_bytes == 5000
    assert len(all_messages(store, "T", 0)) == 50


def flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def test_flipped_body_byte_fails_crc_is_never_served_and_the_records_after_it_are_kept(
    make_store: StoreFactory,
) -> None:
    # Before: the log was cut at the bad record and the 19 valid records after it were dropped.
    store = make_store()
    results = fill(store, 40)
    store.close()
    victim = results[20]
    flip_byte(segment_files(store)[-1], victim.commit_log_offset % SEGMENT + RECORD_FIXED_BYTES + 5)
    store = make_store()
    report = store.recovery_report
    assert report is not None and report.cut_bytes == 0
    [bad] = report.corrupt_ranges
    assert (bad.start, bad.end) == (victim.commit_log_offset, victim.end_offset) and "CRC" in bad.reason
    assert report.corrupt_records == 1 and report.corrupt_bytes == victim.wrote_bytes
    assert store.max_phy_offset == results[-1].end_offset
    assert store.max_offset("T", 0) == 40
    assert [m.queue_offset for m in all_messages(store, "T", 0)] == [q for q in range(40) if q != 20]
    assert store.query_by_key("T", "k20") == []  # the index hit lands on the filler, checked and dropped
    assert len(store.query_by_key("T", "k25")) == 1
    assert store.put_message("T", 0, b"next", {}).queue_offset == 40
    store.close()
    store = make_store()  # the bad range now holds a valid filler: nothing more to repair
    assert store.recovery_report is not None and not store.recovery_report.corrupt_ranges
    assert len(all_messages(store, "T", 0)) == 40


def test_a_destroyed_record_head_in_the_middle_keeps_the_records_after_it(make_store: StoreFactory) -> None:
    store = make_store()
    results = fill(store, 30, queues=2)
    store.close()
    first, last = results[10], results[13]
    with open(segment_files(store)[-1], "r+b") as f:  # four records overwritten, heads included
        f.seek(first.commit_log_offset % SEGMENT)
        f.write(b"\xee" * (last.end_offset - first.commit_log_offset))
    store = make_store()
    report = store.recovery_report
    assert report is not None and report.cut_bytes == 0
    [bad] = report.corrupt_ranges
    assert (bad.start, bad.end) == (first.commit_log_offset, last.end_offset)
    assert report.corrupt_records == 4
    kept = {q: [m.queue_offset for m in all_messages(store, "T", q)] for q in range(2)}
    assert kept == {0: [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14], 1: [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14]}


def test_corruption_in_an_earlier_segment_keeps_the_later_segments(make_store: StoreFactory) -> None:
    # Before: every segment after the bad record was dropped.
    store = make_store()
    results = fill(store, 400, size=500)
    assert len(segment_files(store)) == 4
    store.close()
    victim = next(r for r in results if r.commit_log_offset > SEGMENT + 1000)
    with open(segment_files(store)[1], "r+b") as f:
        f.seek(victim.commit_log_offset - SEGMENT + 4)  # the magic code
        f.write(b"\0\0\0\0")
    store = make_store()
    report = store.recovery_report
    assert report is not None and report.cut_bytes == 0 and len(report.corrupt_ranges) == 1
    assert store.max_phy_offset == results[-1].end_offset
    assert len(segment_files(store)) == 4
    got = [m.queue_offset for m in all_messages(store, "T", 0)]
    assert got == [q for q in range(400) if q != victim.queue_offset]
    assert store.put_message("T", 0, b"x", {}).queue_offset == 400


def test_a_segment_whose_end_is_destroyed_is_blanked_to_its_end_and_later_segments_kept(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    results = fill(store, 400, size=500)
    store.close()
    in_second = [r for r in results if SEGMENT <= r.commit_log_offset < 2 * SEGMENT]
    victim = in_second[-3]
    with open(segment_files(store)[1], "r+b") as f:  # the last three records and the BLANK padding
        f.seek(victim.commit_log_offset - SEGMENT)
        f.write(bytes(SEGMENT - (victim.commit_log_offset - SEGMENT)))
    store = make_store()
    report = store.recovery_report
    assert report is not None and report.cut_bytes == 0
    [bad] = report.corrupt_ranges
    assert (bad.start, bad.end) == (victim.commit_log_offset, 2 * SEGMENT) and report.corrupt_records == 3
    got = [m.queue_offset for m in all_messages(store, "T", 0)]
    lost = {r.queue_offset for r in in_second[-3:]}
    assert got == [q for q in range(400) if q not in lost]


def test_garbage_after_the_last_record_is_a_torn_tail_and_cut(make_store: StoreFactory) -> None:
    store = make_store()
    results = fill(store, 20)
    store.close()
    with open(segment_files(store)[-1], "ab") as f:
        f.write(b"\x01" * 500)
    store = make_store()
    report = store.recovery_report
    assert report is not None and report.cut_bytes == 500 and not report.corrupt_ranges
    assert store.max_phy_offset == results[-1].end_offset


def test_consume_queue_entries_past_the_end_are_cut(make_store: StoreFactory) -> None:
    store = make_store()
    results = fill(store, 50)
    store.close()
    os.truncate(segment_files(store)[-1], results[40].commit_log_offset % SEGMENT)  # a clean record boundary
    store = make_store()
    assert store.max_offset("T", 0) == 40
    assert store.recovery_report is not None and store.recovery_report.consume_queue_entries_cut == 10
    assert len(all_messages(store, "T", 0)) == 40


def test_missing_consume_queue_entries_are_rebuilt(make_store: StoreFactory) -> None:
    store = make_store()
    fill(store, 120)
    store.close()
    qdir = store.config.consume_queue_dir / "T" / "0"
    files = sorted(qdir.iterdir())
    os.truncate(files[-1], 3 * ENTRY_BYTES)  # lose the last entries of the last file
    store = make_store()
    assert store.max_offset("T", 0) == 120
    assert [m.body for m in all_messages(store, "T", 0)] == [body(i) for i in range(120)]


def test_crash_before_consume_queues_were_written_rebuilds_them(make_store: StoreFactory) -> None:
    store = make_store(consume_queue_pending_entries=10_000, index_pending_entries=10_000)
    fill(store, 100, queues=4)
    store.commit()
    store.abandon()
    store = make_store()
    for q in range(4):
        assert [m.body for m in all_messages(store, "T", q)] == [body(i) for i in range(q, 100, 4)]
    assert len(store.query_by_key("T", "k42")) == 1


def test_garbled_checkpoint_falls_back_to_a_full_scan(make_store: StoreFactory) -> None:
    store = make_store()
    fill(store, 30)
    store.close()
    with open(store.config.root / "checkpoint", "r+b") as f:
        f.write(b"garbage!")
    store = make_store()
    assert store.max_offset("T", 0) == 30
    assert store.recovery_report is not None and store.recovery_report.scan_from == 0


WRITER = textwrap.dedent("""
    import asyncio, sys
    from krocket.broker.store.config import StoreConfig
    from krocket.broker.store.message_store import MessageStore

    async def main() -> None:
        cfg = StoreConfig(sys.argv[1], commitlog_segment_bytes=64 * 1024, flush_mode="SYNC_FLUSH",
                          consume_queue_entries_per_file=100, index_hash_slots=64, index_max_entries=1000)
        store = MessageStore(cfg, usage_fn=lambda _p: 0.1).open()
        store.start_background()
        i = 0
        while True:
            r = store.put_message("Acked", 0, b"payload-%d" % i * 20, {"KEYS": "k%d" % i})
            await store.wait_flushed(r.end_offset)
            sys.stdout.write(f"{r.queue_offset} {r.commit_log_offset}\\n")
            sys.stdout.flush()
            i += 1

    asyncio.run(main())
""")


def test_sigkilled_sync_flush_writer_loses_no_acked_message(tmp_path: Path, make_store: StoreFactory) -> None:
    root = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    acked: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            q, phy = map(int, line.split())
            acked.append((q, phy))
            if len(acked) >= 400:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(acked) >= 400
    store = make_store(root=root)
    assert store.recovery_report is not None and not store.recovery_report.clean_stop
    assert store.max_offset("Acked", 0) >= len(acked)
    for q, phy in acked:
        rec = store.read_record(phy)
        assert rec is not None
        msg = decode_record(rec, check_crc=True)
        assert msg.queue_offset == q and msg.body == b"payload-%d" % q * 20
