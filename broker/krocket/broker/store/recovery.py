"""Start-up recovery (RocketMQ's normal and abnormal recovery).

The commit log is scanned from a safe point: the segment holding the offset up to which consume queues and
index are known to be on disk (from the checkpoint), and at least the last
``recover_segments_after_clean_stop`` segments. Every record is checked with the one record codec
(``krocket.common.record``: size, magic, its own offset, lengths; CRC when configured).

A record that fails its checks is either a torn tail or a bad record in the middle: the scan looks forward
for the next position where a valid record starts (magic, size, own offset, CRC) that is followed by another
valid record, a BLANK record or the end of the data (``find_next_record``). When there is one (or when later
segments follow), the bad range is overwritten with a filler record that no consume queue takes
(``filler_record``; BLANK padding when it runs to the segment's end), consume queue entries that pointed into
it are emptied (pulls skip them), one WARNING names the range, and the records after it are kept. When nothing
valid follows, it is a torn tail: the log is cut there. Nothing that fails its checks is ever served.

Consume queue entries that point past the new end are cut, and records that consume queues or the index lack
are dispatched again (idempotently).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from krocket.common.metrics import Metrics
from krocket.common.record import (
    BLANK_MAGIC,
    BLANK_MIN_BYTES,
    MAGIC_V1,
    MAGIC_V2,
    RECORD_FIXED_BYTES,
    RECORD_MIN_BYTES,
    SYSFLAG_TRANSACTION_ROLLBACK,
    RecordError,
    RecordMeta,
    blank_record,
    encode_record,
    peek_head,
    record_layout,
)

from .checkpoint import CheckpointData
from .commitlog import CommitLog
from .config import StoreConfig
from .consume_queue import ConsumeQueue, ConsumeQueueTable
from .mapped_file_queue import Segment

log = logging.getLogger(__name__)

SCAN_CHUNK = 8 * 1024 * 1024


@dataclass(slots=True)
class RecoveryReport:
    clean_stop: bool
    scan_from: int
    valid_end: int
    cut_bytes: int = 0
    cut_reason: str = ""
    records_scanned: int = 0
    consume_queue_entries_cut: int = 0
    corrupt_ranges: list[CorruptRange] = field(default_factory=list)

    @property
    def corrupt_bytes(self) -> int:
        return sum(r.end - r.start for r in self.corrupt_ranges)

    @property
    def corrupt_records(self) -> int:
        """Messages lost to corruption: the consume queue entries emptied, at least one per bad range."""
        return sum(max(1, r.queue_entries_emptied) for r in self.corrupt_ranges)


@dataclass(slots=True)
class CorruptRange:
    """Commit log bytes [start, end) that failed their checks, with valid records after them."""

    start: int
    end: int
    reason: str
    records_scanned_before: int
    queue_entries_emptied: int = 0


def register_recovery_metrics(metrics: Metrics, report: RecoveryReport | None) -> None:
    """What start-up recovery cut or blanked, as counters on the broker's /metrics."""
    counts = {
        "store_recovery_cut_bytes_total": ("Torn-tail bytes cut from the commit log at start-up", "cut_bytes"),
        "store_recovery_corrupt_bytes_total": ("Corrupt commit log bytes blanked at start-up", "corrupt_bytes"),
        "store_recovery_corrupt_records_total": (
            "Messages lost to corrupt commit log records found at start-up (records after them are kept)",
            "corrupt_records",
        ),
    }
    for name, (help_text, attr) in counts.items():
        metrics.counter(name, help_text)
        metrics.inc(name, float(getattr(report, attr)) if report is not None else 0.0)


_MAGICS = (MAGIC_V1.to_bytes(4, "big", signed=True), MAGIC_V2.to_bytes(4, "big", signed=True))
_BLANK_MAGIC_BYTES = BLANK_MAGIC.to_bytes(4, "big", signed=True)


def filler_record(phy: int, size: int) -> bytes:
    """A valid record of exactly ``size`` bytes (>= ``RECORD_MIN_BYTES``) at ``phy`` that no consume queue or
    index takes: no topic, no properties, a zero body, flagged as a rolled-back transaction."""
    return encode_record(
        topic=b"", body=bytes(size - RECORD_MIN_BYTES), physical_offset=phy, sys_flag=SYSFLAG_TRANSACTION_ROLLBACK
    )


def _valid_at(seg: Segment, pos: int, phy: int) -> int:
    """The size of the valid record (CRC checked) or segment-ending BLANK record at segment position ``pos``,
    0 when there is none."""
    head = seg.read(pos, BLANK_MIN_BYTES)
    if len(head) < BLANK_MIN_BYTES:
        return 0
    total, magic = peek_head(head, 0)
    if magic == BLANK_MAGIC:
        return total if total == seg.capacity - pos else 0
    if total < RECORD_MIN_BYTES or pos + total > seg.wrote:
        return 0
    raw = seg.read(pos, total)
    try:
        head_fields, body_end, _topic, _props, _end = record_layout(raw, 0, phy)
    except RecordError:
        return 0
    if zlib.crc32(raw[RECORD_FIXED_BYTES:body_end]) & 0x7FFFFFFF != head_fields[2]:
        return 0
    return total


def find_next_record(seg: Segment, pos: int) -> int | None:
    """The first segment position at or after ``pos`` where a valid record (or a BLANK record that ends the
    segment) starts and is followed by another one or by the end of the data; None when there is none."""
    chunk = SCAN_CHUNK
    at = pos
    while at + BLANK_MIN_BYTES <= seg.wrote:
        data = seg.read(at, chunk + BLANK_MIN_BYTES)
        hits: list[int] = []
        for magic in (*_MAGICS, _BLANK_MAGIC_BYTES):
            i = data.find(magic, 4)
            while 0 <= i < chunk + 4:
                hits.append(at + i - 4)
                i = data.find(magic, i + 1)
        for candidate in sorted(hits):
            size = _valid_at(seg, candidate, seg.start + candidate)
            if not size:
                continue
            after = candidate + size
            if after >= seg.wrote or _valid_at(seg, after, seg.start + after):
                return candidate
        at += chunk
    return None


# (record meta, dispatch it to its consume queue even when the queue has it, add it to the index)
Redispatch = Callable[[RecordMeta, bool, bool], None]


class Recovery:
    def __init__(
        self, config: StoreConfig, commitlog: CommitLog, queues: ConsumeQueueTable, redispatch: Redispatch
    ) -> None:
        self.config = config
        self.commitlog = commitlog
        self.queues = queues
        self.redispatch = redispatch

    def run(self, clean_stop: bool, ckpt: CheckpointData | None) -> RecoveryReport:
        segs = self.commitlog.files.segments
        logics_from = ckpt.logics_offset if ckpt is not None else 0
        index_from = ckpt.index_offset if ckpt is not None else 0
        start_idx = 0
        if segs:
            keep = max(1, self.config.recover_segments_after_clean_stop)
            start_idx = max(0, len(segs) - keep)
            safe = min(logics_from, index_from)
            ckpt_idx = (safe - segs[0].start) // self.commitlog.segment_bytes
            start_idx = max(0, min(start_idx, ckpt_idx))
        scan_from = segs[start_idx].start if segs else self.commitlog.max_offset
        report = RecoveryReport(clean_stop, scan_from, scan_from)
        log.info(
            "recovering store after a %s: scanning the commit log from offset %d (%d segments)",
            "clean stop" if clean_stop else "crash",
            scan_from,
            len(segs) - start_idx,
        )
        valid_end, reason = self._scan(start_idx, logics_from, index_from, report)
        report.valid_end = valid_end
        if valid_end < self.commitlog.max_offset:
            report.cut_bytes = self.commitlog.truncate_to(valid_end)
            report.cut_reason = reason
            log.warning(
                "cut %d bytes of torn tail at offset %d (%s): no valid record follows",
                report.cut_bytes,
                valid_end,
                reason,
            )
        for bad in report.corrupt_ranges:
            bad.queue_entries_emptied = sum(
                empty_entries_in(cq, bad.start, bad.end) for cq in self.queues.queues.values()
            )
            log.warning(
                "commit log corrupt at [%d, %d) (%d bytes: %s): blanked and never served; %d consume queue entries "
                "pointed into it (emptied); the %d valid records after it are kept",
                bad.start,
                bad.end,
                bad.end - bad.start,
                bad.reason,
                bad.queue_entries_emptied,
                report.records_scanned - bad.records_scanned_before,
            )
        for cq in list(self.queues.queues.values()):
            report.consume_queue_entries_cut += cq.truncate_past(valid_end)
            cq.correct_min_offset(self.commitlog.min_offset)
        log.info(
            "recovery done: commit log valid up to %d, %d records scanned, %d consume queue entries cut, "
            "%d corrupt ranges blanked",
            valid_end,
            report.records_scanned,
            report.consume_queue_entries_cut,
            len(report.corrupt_ranges),
        )
        return report

    def _scan(self, start_idx: int, logics_from: int, index_from: int, report: RecoveryReport) -> tuple[int, str]:
        segs = self.commitlog.files.segments
        check_crc = self.config.check_crc_on_recover
        queues = self.queues.queues
        redispatch = self.redispatch
        layout = record_layout
        crc32 = zlib.crc32
        topics: dict[bytes, str] = {}
        scanned = 0
        for si in range(start_idx, len(segs)):
            seg = segs[si]
            last = si == len(segs) - 1
            view = memoryview(b"")
            chunk_pos = 0
            pos = 0
            base = seg.start
            capacity = seg.capacity
            while True:
                wrote = seg.wrote
                bad = ""
                if pos + BLANK_MIN_BYTES > wrote:
                    if pos == wrote and last:
                        report.records_scanned += scanned
                        return base + pos, "end of data"
                    bad = "segment ends without a BLANK record"
                else:
                    p = pos - chunk_pos
                    if p + RECORD_FIXED_BYTES > len(view):
                        view, chunk_pos = memoryview(seg.read(pos, SCAN_CHUNK)), pos
                        p = 0
                    total, magic = peek_head(view, p)
                    if magic == BLANK_MAGIC:
                        if total == capacity - pos:
                            if wrote < capacity:
                                seg.truncate(capacity)
                            break
                        bad = f"BLANK record of {total} bytes does not end the segment"
                    elif total < RECORD_MIN_BYTES or pos + total + BLANK_MIN_BYTES > capacity:
                        bad = f"impossible record size {total}"
                    elif pos + total > wrote:
                        bad = "torn record"
                if not bad:
                    if p + total > len(view):
                        view, chunk_pos = memoryview(seg.read(pos, max(SCAN_CHUNK, total))), pos
                        p = 0
                    phy = base + pos
                    try:
                        head, body_end, topic_start, props_start, end = layout(view, p, phy)
                        if check_crc and crc32(view[p + RECORD_FIXED_BYTES : body_end]) & 0x7FFFFFFF != head[2]:
                            raise RecordError(f"body CRC mismatch in record at {phy}")
                    except RecordError as exc:
                        bad = str(exc)
                if bad:
                    report.records_scanned += scanned
                    scanned = 0
                    resume = self._skip_bad_range(seg, pos, last, bad, report)
                    if resume is None:
                        return base + pos, bad
                    view = memoryview(b"")
                    if resume >= capacity:
                        break
                    pos = resume
                    continue
                raw_topic = bytes(view[topic_start : props_start - 2])
                topic = topics.get(raw_topic)
                if topic is None:
                    topic = topics[raw_topic] = raw_topic.decode(errors="replace")
                cq = queues.get((topic, head[3]))
                force = phy >= logics_from
                if force or phy >= index_from or (cq is not None and head[5] >= cq.max_offset):
                    meta = RecordMeta(
                        phy, total, head[3], head[5], head[7], head[10], topic, bytes(view[props_start:end])
                    )
                    redispatch(meta, force, phy >= index_from)
                scanned += 1
                pos += total
            if last:
                # The last segment is complete; the next append rolls to a new one.
                report.records_scanned += scanned
                return base + capacity, "end of data"
        report.records_scanned += scanned
        return self.commitlog.max_offset, "end of data"

    def _skip_bad_range(self, seg: Segment, pos: int, last: bool, reason: str, report: RecoveryReport) -> int | None:
        """Where the scan resumes after the bad record at segment position ``pos``, having blanked the bad range;
        None when it is a torn tail (nothing valid follows in the last segment)."""
        resume = find_next_record(seg, pos + RECORD_MIN_BYTES) if pos + RECORD_MIN_BYTES <= seg.wrote else None
        if resume is None and last:
            return None
        if resume is None or peek_head(seg.read(resume, BLANK_MIN_BYTES), 0)[1] == BLANK_MAGIC:
            # The bad range runs to the segment's end (later segments follow, or a BLANK record ends this one).
            end = seg.capacity
            seg.write(blank_record(end - pos), pos)
            if seg.wrote < end:
                seg.truncate(end)
                seg.wrote = end
        else:
            end = resume
            seg.write(filler_record(seg.start + pos, end - pos), pos)
        os.fsync(seg.fd)
        report.corrupt_ranges.append(CorruptRange(seg.start + pos, seg.start + end, reason, report.records_scanned))
        return end


def empty_entries_in(cq: ConsumeQueue, start: int, end: int) -> int:
    """Empty (size 0: pulls skip them) the entries of ``cq`` whose record starts in commit log [start, end)."""
    lo, hi = cq.min_offset, cq.max_offset
    while lo < hi:  # entries are in commit log order: find the first at or after ``start``
        mid = (lo + hi) // 2
        e = cq.entry(mid)
        if e is not None and e[0] < start:
            lo = mid + 1
        else:
            hi = mid
    emptied = 0
    for q, phy, size, tags in cq.iter_entries(lo, cq.max_offset - lo):
        if phy >= end:
            break
        if size > 0:
            cq.put_at(q, phy, 0, tags)
            emptied += 1
    return emptied
