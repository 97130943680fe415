"""The reference for pull reads: the entry-by-entry walk ``MessageReader.get_messages`` did before
``queue_range`` (a tuple per entry, one read per run of adjacent records), kept to compare against."""

from __future__ import annotations

from krocket.broker.store.commitlog import CommitLog
from krocket.broker.store.consume_queue import ConsumeQueueTable
from krocket.broker.store.reader import DEFAULT_MAX_BYTES, FILTER_SCAN_ENTRIES, GetResult, GetStatus


def walk_entries(
    commitlog: CommitLog,
    queues: ConsumeQueueTable,
    topic: str,
    queue_id: int,
    offset: int,
    max_msgs: int = 32,
    max_bytes: int = DEFAULT_MAX_BYTES,
    tag_codes: set[int] | None = None,
) -> GetResult:
    """The reference: the entry-by-entry pull read as it was before ``queue_range`` (a tuple per entry, one
    read per run of adjacent records)."""
    cq = queues.get(topic, queue_id)
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
    min_phy = commitlog.min_offset
    picks: list[tuple[int, int, int]] = []
    next_q = offset
    total = 0
    filtered = 0
    for q, phy, size, tags in cq.iter_entries(offset, scan):
        if len(picks) >= max_msgs or (picks and total + size > max_bytes):
            break
        next_q = q + 1
        if phy < min_phy or size <= 0:
            continue
        if tag_codes is not None and tags not in tag_codes:
            filtered += 1
            continue
        picks.append((q, phy, size))
        total += size
    parts: list[bytes] = []
    count = 0
    i, n = 0, len(picks)
    while i < n:
        start = picks[i][1]
        end = start + picks[i][2]
        j = i + 1
        while j < n and picks[j][1] == end:
            end += picks[j][2]
            j += 1
        data = commitlog.read(start, end - start)
        if len(data) < end - start:
            got = 0
            while i < j and got + picks[i][2] <= len(data):
                got += picks[i][2]
                i += 1
                count += 1
            parts.append(data[:got])
            next_q = picks[i][0] if i < n else next_q
            break
        parts.append(data)
        count += j - i
        i = j
    status = GetStatus.FOUND if count else GetStatus.NO_MATCHED_MESSAGE if filtered else GetStatus.OFFSET_FOUND_NULL
    return GetResult(status, b"".join(parts), count, next_q, lo, hi)


class WalkReader:
    """``get_messages`` by the walk, over a store's commit log and consume queues."""

    def __init__(self, commitlog: CommitLog, queues: ConsumeQueueTable) -> None:
        self.commitlog = commitlog
        self.queues = queues

    def get_messages(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        max_msgs: int = 32,
        max_bytes: int = DEFAULT_MAX_BYTES,
        tag_codes: set[int] | None = None,
    ) -> GetResult:
        return walk_entries(self.commitlog, self.queues, topic, queue_id, offset, max_msgs, max_bytes, tag_codes)
