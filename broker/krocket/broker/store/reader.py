"""Reads: queue offsets to record bytes for pulls (a pull response body is records exactly as stored), the
offset of a time, and key lookups through the index (RocketMQ's ``getMessage`` and ``queryMessage``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from krocket.common.message import PROPERTY_KEYS, PROPERTY_UNIQ_KEY, decode_properties
from krocket.common.record import RecordError, parse_record

from .commitlog import CommitLog
from .consume_queue import ConsumeQueueTable
from .dispatch import index_key
from .index_service import IndexService
from .queue_range import pick_entries, read_picked

DEFAULT_MAX_BYTES = 1024 * 1024
FILTER_SCAN_ENTRIES = 800  # entries scanned per pull when a tag filter skips some (RocketMQ: 16000 bytes)


class GetStatus(enum.Enum):
    FOUND = "FOUND"
    NO_MATCHED_MESSAGE = "NO_MATCHED_MESSAGE"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_FOUND_NULL = "OFFSET_FOUND_NULL"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"


@dataclass(slots=True)
class GetResult:
    status: GetStatus
    body: bytes
    count: int
    next_begin_offset: int
    min_offset: int
    max_offset: int


class MessageReader:
    def __init__(self, commitlog: CommitLog, queues: ConsumeQueueTable, index: IndexService) -> None:
        self.commitlog = commitlog
        self.queues = queues
        self.index = index

    def get_messages(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        max_msgs: int = 32,
        max_bytes: int = DEFAULT_MAX_BYTES,
        tag_codes: set[int] | None = None,
    ) -> GetResult:
        """Records of a queue from ``offset``, concatenated exactly as stored (a PULL response body): up to
        ``max_msgs``, stopping before one that would pass ``max_bytes`` (the first is always taken), only those
        whose tags code is in ``tag_codes`` (looking at ``FILTER_SCAN_ENTRIES`` entries at most) when set."""
        cq = self.queues.get(topic, queue_id)
        if cq is None or cq.max_offset == 0:
            return GetResult(GetStatus.NO_MESSAGE_IN_QUEUE, b"", 0, 0, 0, 0)
        lo, hi = cq.min_offset, cq.max_offset
        if offset < lo:
            return GetResult(GetStatus.OFFSET_TOO_SMALL, b"", 0, lo, lo, hi)
        if offset == hi:
            return GetResult(GetStatus.OFFSET_OVERFLOW_ONE, b"", 0, offset, lo, hi)
        if offset > hi:
            return GetResult(GetStatus.OFFSET_OVERFLOW_BADLY, b"", 0, hi, lo, hi)
        scan = max(max_msgs, FILTER_SCAN_ENTRIES) if tag_codes is not None else max_msgs
        picks = pick_entries(cq, offset, scan, max_msgs, max_bytes, self.commitlog.min_offset, tag_codes)
        body, count, short_at = read_picked(self.commitlog, picks)
        next_q = short_at if short_at is not None else picks.next_q
        if count:
            status = GetStatus.FOUND
        elif picks.filtered:
            status = GetStatus.NO_MATCHED_MESSAGE
        else:
            status = GetStatus.OFFSET_FOUND_NULL
        return GetResult(status, body, count, next_q, lo, hi)

    def max_offset(self, topic: str, queue_id: int) -> int:
        cq = self.queues.get(topic, queue_id)
        return cq.max_offset if cq is not None else 0

    def min_offset(self, topic: str, queue_id: int) -> int:
        cq = self.queues.get(topic, queue_id)
        return cq.min_offset if cq is not None else 0

    def offset_by_time(self, topic: str, queue_id: int, ts_ms: int) -> int:
        """The first queue offset whose message was stored at or after ``ts_ms`` (``max_offset`` if none)."""
        cq = self.queues.get(topic, queue_id)
        if cq is None:
            return 0
        lo, hi = cq.min_offset, cq.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            e = cq.entry(mid)
            ts = self.commitlog.store_timestamp_at(e[0]) if e is not None else -1
            if ts >= ts_ms:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def earliest_store_time(self, topic: str, queue_id: int) -> int:
        """Store timestamp of the oldest message still in the queue, or -1."""
        cq = self.queues.get(topic, queue_id)
        if cq is None or cq.min_offset >= cq.max_offset:
            return -1
        e = cq.entry(cq.min_offset)
        return self.commitlog.store_timestamp_at(e[0]) if e is not None else -1

    def query_by_key(
        self, topic: str, key: str, max_num: int = 32, begin_ts: int = 0, end_ts: int = 2**63 - 1
    ) -> list[bytes]:
        """Records of ``topic`` whose KEYS or unique key is ``key``, stored in [begin_ts, end_ts], newest
        first. Every index hit is checked against the record it points at."""
        out: list[bytes] = []
        for phy in self.index.query(index_key(topic, key), max_num * 2, begin_ts, end_ts):
            rec = self.commitlog.read_record(phy)
            if rec is None:
                continue
            try:
                meta = parse_record(rec, 0, phy, False)
            except RecordError:
                continue
            if meta.topic != topic or not begin_ts <= meta.store_timestamp <= end_ts:
                continue
            props = decode_properties(meta.properties)
            if props.get(PROPERTY_UNIQ_KEY) != key and key not in props.get(PROPERTY_KEYS, "").split(" "):
                continue
            out.append(rec)
            if len(out) >= max_num:
                break
        return out
