"""A pull's records: which consume queue entries of a range it takes, and their commit log bytes in few reads.

``pick_entries`` reads the range's 20-byte entries in one read per consume queue file and decodes each chunk with
one ``struct`` call into a flat tuple. Where every entry of a chunk qualifies (no tag filter, or every tag code
matches; no entry below the commit log's start or emptied) it takes them with slices, ``min`` and an
``accumulate``/``bisect`` for the byte limit, without a Python object per entry; otherwise it walks the chunk
entry by entry. Either way it takes exactly what a walk of the entries in order takes: it stops at ``max_msgs``
picks, or before a pick that would pass ``max_bytes`` (the first pick is always taken).

``read_picked`` reads the picked records: the whole span once when it is contiguous or holds at most as many
bytes again as needed (and slices the picked runs out of it), else one read per run of adjacent records. A read
that comes back short (the end of a segment, bytes not yet committed) keeps the whole records it holds and stops
there, as ``short_at`` tells the caller.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, compress
from operator import add, ne

from .commitlog import CommitLog
from .consume_queue import ENTRY, ENTRY_BYTES, ConsumeQueue

CHUNK_ENTRIES = 1024  # entries decoded per struct call
_ENTRY_FORMAT = ENTRY.format.lstrip("<>!=@")  # one entry's fields without the byte order: "qiq"
_STRUCTS: dict[tuple[int, bool], struct.Struct] = {}


def _entries_struct(n: int, with_tags: bool) -> struct.Struct:
    """``n`` entries in one struct; without the tags codes (skipped as pad bytes) unless ``with_tags``."""
    key = (n, with_tags)
    s = _STRUCTS.get(key)
    if s is None:
        one = _ENTRY_FORMAT if with_tags else _ENTRY_FORMAT[:-1] + "8x"
        s = _STRUCTS[key] = struct.Struct(">" + one * n)
    return s


@dataclass(slots=True)
class Picks:
    """The entries a pull takes, in queue order, as parallel lists; ``next_q`` is where the next pull starts.
    Picks ``starts[k]`` on have consecutive queue offsets from ``start_qs[k]`` (up to the next start)."""

    phys: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    next_q: int = 0
    total: int = 0  # bytes of the picked records
    filtered: int = 0  # entries a tag filter skipped
    found_null: int = 0  # entries below the commit log's start or emptied
    starts: list[int] = field(default_factory=list)
    start_qs: list[int] = field(default_factory=list)

    def queue_offset(self, i: int) -> int:
        """The queue offset of pick ``i``."""
        k = bisect_right(self.starts, i) - 1
        return self.start_qs[k] + i - self.starts[k]


def pick_entries(
    cq: ConsumeQueue,
    offset: int,
    scan: int,
    max_msgs: int,
    max_bytes: int,
    min_phy: int,
    tag_codes: set[int] | frozenset[int] | None,
) -> Picks:
    """The entries from queue offset ``offset`` a pull takes, looking at ``scan`` entries at most."""
    picks = Picks(next_q=offset)
    phys_out, sizes_out = picks.phys, picks.sizes
    starts, start_qs = picks.starts, picks.start_qs
    with_tags = tag_codes is not None
    step = 3 if with_tags else 2
    q = offset
    left = scan
    while left > 0 and len(phys_out) < max_msgs:
        raw = cq.read_entries(q, min(left, CHUNK_ENTRIES))
        n = len(raw) // ENTRY_BYTES
        if n == 0:
            break
        flat = _entries_struct(n, with_tags).unpack(raw)
        phys = flat[0::step]
        sizes = flat[1::step]
        picked = len(phys_out)
        if (
            min(sizes) > 0
            and min(phys) >= min_phy
            and (tag_codes is None or all(map(tag_codes.__contains__, flat[2::3])))
        ):
            # Every entry qualifies: take a prefix, cut by max_msgs and max_bytes.
            take = min(n, max_msgs - picked)
            ends = list(accumulate(sizes[:take], initial=picks.total))
            fit = bisect_right(ends, max_bytes, 1) - 1  # entries whose running total stays within max_bytes
            if fit == 0 and not picked:
                fit = 1  # the first pick is taken whatever its size
            take = min(take, fit)
            if take:
                starts.append(picked)
                start_qs.append(q)
                phys_out.extend(phys[:take])
                sizes_out.extend(sizes[:take])
                picks.total = ends[take]
                picks.next_q = q + take
            if take < n:
                return picks
        else:
            tags = flat[2::3] if with_tags else ()
            total = picks.total
            for i in range(n):
                size = sizes[i]
                if picked >= max_msgs or (picked and total + size > max_bytes):
                    picks.total = total
                    return picks
                picks.next_q = q + i + 1
                phy = phys[i]
                if phy < min_phy or size <= 0:
                    picks.found_null += 1
                    continue
                if tag_codes is not None and tags[i] not in tag_codes:
                    picks.filtered += 1
                    continue
                starts.append(picked)
                start_qs.append(q + i)
                phys_out.append(phy)
                sizes_out.append(size)
                picked += 1
                total += size
            picks.total = total
        q += n
        left -= n
    return picks


def _run_starts(phys: list[int], sizes: list[int]) -> list[int]:
    """Indexes where a run of adjacent records starts (0 first): record i starts a run unless it begins where
    record i - 1 ends."""
    ends = map(add, phys, sizes)
    starts = [0]
    starts.extend(compress(range(1, len(phys)), map(ne, phys[1:], ends)))
    return starts


def read_picked(commitlog: CommitLog, picks: Picks) -> tuple[bytes, int, int | None]:
    """(the picked records' bytes, how many, the queue offset of the first one not read or None)."""
    phys, sizes = picks.phys, picks.sizes
    n = len(phys)
    if n == 0:
        return b"", 0, None
    first = phys[0]
    span = phys[-1] + sizes[-1] - first
    total = picks.total
    read = commitlog.read
    if span == total:
        data = read(first, span)
        if len(data) == span:
            return data, n, None
        return _read_runs(read, picks, [0])
    starts = _run_starts(phys, sizes)
    if span <= 2 * total:
        data = read(first, span)
        if len(data) == span:
            view = memoryview(data)
            parts = []
            bounds = starts[1:]
            bounds.append(n)
            i = 0
            for j in bounds:
                a = phys[i] - first
                parts.append(view[a : phys[j - 1] + sizes[j - 1] - first])
                i = j
            return b"".join(parts), n, None
    return _read_runs(read, picks, starts)


def _read_runs(read: Callable[[int, int], bytes], picks: Picks, starts: list[int]) -> tuple[bytes, int, int | None]:
    """One read per run (``starts``: the index of each run's first record)."""
    phys, sizes = picks.phys, picks.sizes
    n = len(phys)
    parts: list[bytes] = []
    bounds = starts[1:]
    bounds.append(n)
    i = 0
    for j in bounds:
        start = phys[i]
        want = phys[j - 1] + sizes[j - 1] - start
        data = read(start, want)
        if len(data) < want:
            # Keep only the whole records that came back.
            got = 0
            while i < j and got + sizes[i] <= len(data):
                got += sizes[i]
                i += 1
            parts.append(data[:got])
            return b"".join(parts), i, picks.queue_offset(i) if i < n else None
        parts.append(data)
        i = j
    return (parts[0] if len(parts) == 1 else b"".join(parts)), n, None
