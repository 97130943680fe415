"""Start-up recovery (RocketMQ's normal and abnormal recovery).

The commit log is scanned from a safe point: the segment holding the offset up to which consume queues and
index are known to be on disk (from the checkpoint), and at least the last
``recover_segments_after_clean_stop`` segments. Every record is checked with the one record codec
(``krocket.common.record``: size, magic, its own offset, lengths; CRC when configured); the log is cut after
the last good record, so a torn tail, appended garbage or a flipped byte is never served. Consume queue
entries that point past the new end are cut, and records that consume queues or the index lack are
dispatched again (idempotently).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from krocket.common.record import (
    BLANK_MAGIC,
    BLANK_MIN_BYTES,
    RECORD_FIXED_BYTES,
    RECORD_MIN_BYTES,
    RecordError,
    RecordMeta,
    peek_head,
    record_layout,
)

from .checkpoint import CheckpointData
from .commitlog import CommitLog
from .config import StoreConfig
from .consume_queue import ConsumeQueueTable

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
            log.info("cut %d bytes of torn tail at offset %d (%s)", report.cut_bytes, valid_end, reason)
        for cq in list(self.queues.queues.values()):
            report.consume_queue_entries_cut += cq.truncate_past(valid_end)
            cq.correct_min_offset(self.commitlog.min_offset)
        log.info(
            "recovery done: commit log valid up to %d, %d records scanned, %d consume queue entries cut",
            valid_end,
            report.records_scanned,
            report.consume_queue_entries_cut,
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
            wrote = seg.wrote
            while True:
                if pos + BLANK_MIN_BYTES > wrote:
                    report.records_scanned += scanned
                    if pos == wrote and last:
                        return base + pos, "end of data"
                    return base + pos, "segment ends without a BLANK record"
                p = pos - chunk_pos
                if p + RECORD_FIXED_BYTES > len(view):
                    view, chunk_pos = memoryview(seg.read(pos, SCAN_CHUNK)), pos
                    p = 0
                total, magic = peek_head(view, p)
                if magic == BLANK_MAGIC:
                    if total != capacity - pos:
                        report.records_scanned += scanned
                        return base + pos, f"BLANK record of {total} bytes does not end the segment"
                    if wrote < capacity:
                        seg.truncate(capacity)
                    break
                if total < RECORD_MIN_BYTES or pos + total + BLANK_MIN_BYTES > capacity:
                    report.records_scanned += scanned
                    return base + pos, f"impossible record size {total}"
                if pos + total > wrote:
                    report.records_scanned += scanned
                    return base + pos, "torn record"
                if p + total > len(view):
                    view, chunk_pos = memoryview(seg.read(pos, max(SCAN_CHUNK, total))), pos
                    p = 0
                phy = base + pos
                try:
                    head, body_end, topic_start, props_start, end = layout(view, p, phy)
                    if check_crc and crc32(view[p + RECORD_FIXED_BYTES : body_end]) & 0x7FFFFFFF != head[2]:
                        raise RecordError(f"body CRC mismatch in record at {phy}")
                except RecordError as exc:
                    report.records_scanned += scanned
                    return phy, str(exc)
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
