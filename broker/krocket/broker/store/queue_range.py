"""A pull's records: which consume queue entries of a range it takes, and their commit log bytes in few reads.

``pick_entries`` reads the range's 20-byte entries in one read per consume queue file and decodes each chunk
into one flat tuple (a few ``struct`` calls of fixed sizes, so the cached structs stay small). Where every entry
of a chunk qualifies (no tag filter, or every tag code matches; no entry below the commit log's start or
emptied) it takes them with slices, ``min`` and an ``accumulate``/``bisect`` for the byte limit, without a
Python object per entry; otherwise it walks the chunk entry by entry. Either way it takes exactly what a walk
of the entries in order takes: it stops at ``max_msgs`` picks, or before a pick that would pass ``max_bytes``
(the first pick is always taken).

``read_picked`` reads the picked records: a contiguous range in one read; otherwise the runs of adjacent records
are read together, one read covering several runs of a segment (their pieces sliced out of it) while the other
queues' records it takes along stay within ``SPAN_GAP_BYTES`` per read saved. A read that comes back short (the
end of the written bytes) keeps the whole records it holds and stops there, as ``short_at`` tells the caller:
what a read per run gave.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress
from operator import add, le, ne

from .commitlog import CommitLog
from .consume_queue import ENTRY, ENTRY_BYTES, ConsumeQueue

CHUNK_ENTRIES = 1024  # entries read and decoded at a time
# A read of a commit log span may take other queues' records along (sliced off): up to this many bytes of them
# per read it saves (a pread costs about what copying ~10-20 KiB does), at most MAX_SPAN_BYTES in one read.
SPAN_GAP_BYTES = 16 * 1024
MAX_SPAN_BYTES = 8 * 1024 * 1024
_ENTRY_FORMAT = ENTRY.format.lstrip("<>!=@")  # one entry's fields without the byte order: "qiq"
_BLOCK_ENTRIES = 64  # entries per struct; a chunk is decoded in blocks, the rest in halving pieces (32, 16, ..., 1)
_STRUCTS: dict[tuple[int, bool], struct.Struct] = {}  # at most 7 sizes x 2 forms, a few KiB in all


def _entries_struct(n: int, with_tags: bool) -> struct.Struct:
    """``n`` entries in one struct; without the tags codes (skipped as pad bytes) unless ``with_tags``."""
    key = (n, with_tags)
    s = _STRUCTS.get(key)
    if s is None:
        one = _ENTRY_FORMAT if with_tags else _ENTRY_FORMAT[:-1] + "8x"
        s = _STRUCTS[key] = struct.Struct(">" + one * n)
    return s


def _unpack_entries(raw: bytes, n: int, with_tags: bool) -> tuple[int, ...]:
    """The fields of ``n`` entries as one flat tuple (commit log offset, size[, tags code] per entry)."""
    full = n - n % _BLOCK_ENTRIES
    pieces: list[Iterable[int]] = []
    if full:
        block = _entries_struct(_BLOCK_ENTRIES, with_tags)
        pieces.append(chain.from_iterable(block.iter_unpack(memoryview(raw)[: full * ENTRY_BYTES])))
    pos = full * ENTRY_BYTES
    rest = n - full
    size = _BLOCK_ENTRIES // 2
    while rest:
        if rest >= size:
            pieces.append(_entries_struct(size, with_tags).unpack_from(raw, pos))
            pos += size * ENTRY_BYTES
            rest -= size
        size //= 2
    if len(pieces) == 1 and isinstance(pieces[0], tuple):
        return pieces[0]
    return tuple(chain.from_iterable(pieces))


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
        flat = _unpack_entries(raw, n, with_tags)
        phys = flat[0::step]
        sizes = flat[1::step]
        picked = len(phys_out)
        valid = min(sizes) > 0 and min(phys) >= min_phy  # no entry below the log's start or emptied
        if valid and (tag_codes is None or all(map(tag_codes.__contains__, flat[2::3]))):
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
            begin = 0
            if valid and not picked and tag_codes is not None:
                # Nothing picked yet: the entries before the first match are filtered out, none can stop the walk.
                begin = next(compress(range(n), map(tag_codes.__contains__, tags)), n)
                if begin:
                    picks.filtered += begin
                    picks.next_q = q + begin
            for i in range(begin, n):
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


def read_picked(commitlog: CommitLog, picks: Picks) -> tuple[bytes, int, int | None]:
    """(the picked records' bytes, how many, the queue offset of the first one not read or None)."""
    phys, sizes = picks.phys, picks.sizes
    n = len(phys)
    if n == 0:
        return b"", 0, None
    read = commitlog.read
    first = phys[0]
    span = phys[-1] + sizes[-1] - first
    if span == picks.total:  # one run of adjacent records (the common case of one queue's batch)
        data = read(first, span)
        if len(data) == span:
            return data, n, None
    ends = list(map(add, phys, sizes))
    run_starts = [0]
    run_starts.extend(compress(range(1, n), map(ne, phys[1:], ends)))  # record i begins where i - 1 ends: same run
    run_ends = run_starts[1:]
    run_ends.append(n)
    segment_bytes = commitlog.segment_bytes
    if (
        span - picks.total <= SPAN_GAP_BYTES * (len(run_starts) - 1)
        and span <= MAX_SPAN_BYTES
        and first // segment_bytes == (first + span - 1) // segment_bytes
        and all(map(le, ends[:-1], phys[1:]))
    ):
        # One read of the span (in one segment, records in order); the runs sliced out of it.
        data = read(first, span)
        view = memoryview(data)
        if len(data) == span:
            parts = list(
                map(
                    view.__getitem__,
                    map(slice, [phys[i] - first for i in run_starts], [ends[j - 1] - first for j in run_ends]),
                )
            )
            return b"".join(parts), n, None
        return _keep_whole(view, first, picks, ends, run_starts, run_ends)
    out: list[bytes] = []
    for i, j in zip(run_starts, run_ends, strict=True):
        start = phys[i]
        want = ends[j - 1] - start
        data = read(start, want)
        if len(data) < want:
            return _keep_whole(memoryview(data), start, picks, ends, [i], [j], out)
        out.append(data)
    return (out[0] if len(out) == 1 else b"".join(out)), n, None


def _keep_whole(
    view: memoryview,
    at: int,
    picks: Picks,
    ends: list[int],
    run_starts: list[int],
    run_ends: list[int],
    done: list[bytes] | None = None,
) -> tuple[bytes, int, int | None]:
    """A read at commit log offset ``at`` came back short (``view``): the runs it holds wholly, then the whole
    records of the run it cuts; the rest is left for the next pull. ``done``: the runs read before."""
    out: list[bytes | memoryview] = list(done) if done else []
    phys = picks.phys
    have = at + len(view)
    n = len(phys)
    for i, j in zip(run_starts, run_ends, strict=True):
        a = phys[i] - at
        if ends[j - 1] <= have:
            out.append(view[a : ends[j - 1] - at])
            continue
        k = i
        while k < j and ends[k] <= have:
            k += 1
        if k > i:
            out.append(view[a : ends[k - 1] - at])
        return b"".join(out), k, picks.queue_offset(k) if k < n else None
    return b"".join(out), n, None
