"""Start-up recovery (reference/rocketmq.md section 3.6).

The commit log is scanned from a safe point: the segment holding the offset up to which consume queues and
index are known to be on disk (from the checkpoint), and at least the last
``recover_segments_after_clean_stop`` segments. Every record is checked (size, magic, its own offset,
lengths, CRC when configured); the log is cut after the last good record, so a torn tail, appended garbage
or a flipped byte is never served. Consume queue entries that point past the new end are cut, and records
that consume queues or the index lack are dispatched again (idempotently).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from krocket.common.message import BLANK_MAGIC

from .checkpoint import CheckpointData
from .commitlog import BLANK_MIN_BYTES, RECORD_MIN_BYTES, TOTAL_MAGIC, BadRecord, CommitLog, RecordMeta, parse_record
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
    def __init__(self, config: StoreConfig, commitlog: CommitLog, queues: ConsumeQueueTable,
                 redispatch: Redispatch) -> None:
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
        log.info("recovering store after a %s: scanning the commit log from offset %d (%d segments)",
                 "clean stop" if clean_stop else "crash", scan_from, len(segs) - start_idx)
        valid_end, reason = self._scan(start_idx, logics_from, index_from, report)
        report.valid_end = valid_end
        if valid_end < self.commitlog.max_offset:
            report.cut_bytes = self.commitlog.truncate_to(valid_end)
            report.cut_reason = reason
            log.info("cut %d bytes of torn tail at offset %d (%s)", report.cut_bytes, valid_end, reason)
        for cq in list(self.queues.queues.values()):
            report.consume_queue_entries_cut += cq.truncate_past(valid_end)
            cq.correct_min_offset(self.commitlog.min_offset)
        log.info("recovery done: commit log valid up to %d, %d records scanned, %d consume queue entries cut",
                 valid_end, report.records_scanned, report.consume_queue_entries_cut)
        return report

    def _scan(self, start_idx: int, logics_from: int, index_from: int,
              report: RecoveryReport) -> tuple[int, str]:
        segs = self.commitlog.files.segments
        check_crc = self.config.check_crc_on_recover
        for si in range(start_idx, len(segs)):
            seg = segs[si]
            last = si == len(segs) - 1
            chunk = b""
            chunk_pos = 0
            pos = 0
            while True:
                if pos + BLANK_MIN_BYTES > seg.wrote:
                    if pos == seg.wrote and last:
                        return seg.start + pos, "end of data"
                    return seg.start + pos, "segment ends without a BLANK record"
                if pos + BLANK_MIN_BYTES > chunk_pos + len(chunk):
                    chunk, chunk_pos = seg.read(pos, SCAN_CHUNK), pos
                total, magic = TOTAL_MAGIC.unpack_from(chunk, pos - chunk_pos)
                if magic == BLANK_MAGIC:
                    if total != seg.capacity - pos:
                        return seg.start + pos, f"BLANK record of {total} bytes does not end the segment"
                    if seg.wrote < seg.capacity:
                        seg.truncate(seg.capacity)
                    break
                if total < RECORD_MIN_BYTES or pos + total + BLANK_MIN_BYTES > seg.capacity:
                    return seg.start + pos, f"impossible record size {total}"
                if pos + total > seg.wrote:
                    return seg.start + pos, "torn record"
                if pos + total > chunk_pos + len(chunk):
                    chunk, chunk_pos = seg.read(pos, max(SCAN_CHUNK, total)), pos
                try:
                    meta = parse_record(chunk, pos - chunk_pos, seg.start + pos, check_crc)
                except BadRecord as exc:
                    return seg.start + pos, str(exc)
                report.records_scanned += 1
                self.redispatch(meta, meta.phy >= logics_from, meta.phy >= index_from)
                pos += total
            if last:
                # The last segment is complete; the next append rolls to a new one.
                return seg.start + seg.capacity, "end of data"
        return self.commitlog.max_offset, "end of data"
