"""Key index on disk: ``topic#key`` -> commit log offsets (RocketMQ's IndexFile, smaller files).

An index file is a 40-byte header {beginTimestamp, endTimestamp, beginPhyOffset, endPhyOffset,
hashSlotCount, indexCount}, then ``hash_slots`` 4-byte slots, then ``max_entries`` 20-byte entries
{keyHash i32, phyOffset i64, timeDiff i32 (ms since beginTimestamp), prevIndex i32}. A slot holds the
newest entry (1-based) for its hash; entries chain to older ones. Only the file being written keeps its
slot table in memory (fixed size, 4 bytes a slot) plus a bounded buffer of new entries; older files are
read with ``pread`` when queried. Query results are hints: the store checks the records they point at.

On a full disk (ENOSPC) pending entries stay in memory and ``on_disk_full`` hears of it; a new index file
that cannot be created leaves the keys of those messages unindexed (a warning says so), never a failed put.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from array import array
from collections.abc import Callable
from pathlib import Path

from .disk_space import is_disk_full_error
from .mapped_file_queue import fsync_dir, pwrite_all

log = logging.getLogger(__name__)

HEADER = struct.Struct(">qqqqii")
HEADER_BYTES = HEADER.size
assert HEADER_BYTES == 40
ENTRY = struct.Struct(">iqii")
ENTRY_BYTES = ENTRY.size
SLOT = struct.Struct(">i")
SLOT_PAGE = 1024  # slots written out together (4 KiB)
MAX_TIME_DIFF = 2**31 - 1
_LITTLE = array("i", [1]).tobytes()[0] == 1


def key_hash(key: str) -> int:
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page numbers as (first, last) runs of adjacent pages."""
    runs: list[tuple[int, int]] = []
    for page in pages:
        if runs and runs[-1][1] == page - 1:
            runs[-1] = (runs[-1][0], page)
        else:
            runs.append((page, page))
    return runs


class IndexFile:
    def __init__(self, path: Path, hash_slots: int, max_entries: int, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        head = os.pread(self.fd, HEADER_BYTES, 0)
        if len(head) == HEADER_BYTES and HEADER.unpack(head)[4] > 0:
            (self.begin_ts, self.end_ts, self.begin_phy, self.end_phy, self.hash_slots, self.count) = HEADER.unpack(
                head
            )
            self.max_entries = max(max_entries, self.count)
        else:
            self.begin_ts = self.end_ts = 0
            self.begin_phy = self.end_phy = -1
            self.hash_slots, self.count, self.max_entries = hash_slots, 0, max_entries
        self.entries_at = HEADER_BYTES + self.hash_slots * 4
        self.written = self.count  # entries on disk (1..written)
        self._pending = bytearray()
        self._slots: array[int] | None = None
        self._dirty_pages: set[int] = set()
        self._header_dirty = False
        if writable:
            raw = os.pread(self.fd, self.hash_slots * 4, HEADER_BYTES)
            slots = array("i", raw.ljust(self.hash_slots * 4, b"\0"))
            if slots.itemsize != 4:
                raise RuntimeError("array('i') must be 4 bytes")
            if _LITTLE:
                slots.byteswap()
            self._slots = slots
        else:
            self.close_fd()

    @property
    def full(self) -> bool:
        return self.count >= self.max_entries

    def fits_time(self, ts: int) -> bool:
        return self.count == 0 or ts - self.begin_ts <= MAX_TIME_DIFF

    def put(self, h: int, phy: int, ts: int) -> None:
        slots = self._slots
        assert slots is not None
        if self.count == 0:
            self.begin_ts, self.begin_phy = ts, phy
        slot = h % self.hash_slots
        self.count += 1
        self._pending += ENTRY.pack(h, phy, ts - self.begin_ts, slots[slot])
        slots[slot] = self.count
        self._dirty_pages.add(slot // SLOT_PAGE)
        self.end_ts, self.end_phy = ts, phy
        self._header_dirty = True

    def put_run(self, entries: list[tuple[str, int]], ts: int) -> None:
        """``put`` of each (key, phy) of ``entries``, all stored at ``ts``, in one loop (the caller checked that
        they fit this file): the same entries, slots and header as one ``put`` each."""
        slots = self._slots
        assert slots is not None
        if self.count == 0:
            self.begin_ts, self.begin_phy = ts, entries[0][1]
        diff = ts - self.begin_ts
        hash_slots = self.hash_slots
        pending = self._pending
        dirty = self._dirty_pages
        pack = ENTRY.pack
        crc32 = zlib.crc32
        count = self.count
        phy = 0
        for key, phy in entries:
            h = crc32(key.encode()) & 0x7FFFFFFF
            slot = h % hash_slots
            count += 1
            pending += pack(h, phy, diff, slots[slot])
            slots[slot] = count
            dirty.add(slot // SLOT_PAGE)
        self.count = count
        self.end_ts, self.end_phy = ts, phy
        self._header_dirty = True

    def _ensure_fd(self) -> int:
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self.fd

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def write_entries(self) -> None:
        """Append the pending entries to the file (slots and header follow in ``write_out``)."""
        if self._pending:
            pwrite_all(self.fd, self._pending, self.entries_at + self.written * ENTRY_BYTES)
            self.written = self.count
            self._pending.clear()

    def write_out(self) -> bool:
        """Write pending entries, then dirty slots (runs of adjacent pages in one write each), then the
        header; True when anything was written."""
        if not self._header_dirty:
            return False
        slots = self._slots
        assert slots is not None
        self.write_entries()
        for first, last in _runs(sorted(self._dirty_pages)):
            part = slots[first * SLOT_PAGE : (last + 1) * SLOT_PAGE]
            if _LITTLE:
                part.byteswap()
            pwrite_all(self.fd, part.tobytes(), HEADER_BYTES + first * SLOT_PAGE * 4)
        self._dirty_pages.clear()
        pwrite_all(
            self.fd,
            HEADER.pack(self.begin_ts, self.end_ts, self.begin_phy, self.end_phy, self.hash_slots, self.count),
            0,
        )
        self._header_dirty = False
        return True

    def _slot(self, slot: int) -> int:
        if self._slots is not None:
            return self._slots[slot]
        raw = os.pread(self._ensure_fd(), 4, HEADER_BYTES + slot * 4)
        return SLOT.unpack(raw)[0] if len(raw) == 4 else 0

    def _entry(self, idx: int) -> tuple[int, int, int, int] | None:
        if idx > self.written and self._slots is not None:
            i = (idx - self.written - 1) * ENTRY_BYTES
            raw: bytes | bytearray = self._pending[i : i + ENTRY_BYTES]
        else:
            raw = os.pread(self._ensure_fd(), ENTRY_BYTES, self.entries_at + (idx - 1) * ENTRY_BYTES)
        return ENTRY.unpack(raw) if len(raw) == ENTRY_BYTES else None

    def lookup(self, h: int, begin_ts: int, end_ts: int, max_num: int) -> list[int]:
        """Commit log offsets of entries with hash ``h`` stored in [begin_ts, end_ts], newest first."""
        out: list[int] = []
        idx = self._slot(h % self.hash_slots)
        # A file closed by a crash may hold entries its header does not count yet; follow them too (the
        # store checks every record an entry points at).
        limit = self.count if self._slots is not None else self.max_entries
        seen = 0
        while 0 < idx <= limit and len(out) < max_num and seen < self.max_entries:
            seen += 1
            e = self._entry(idx)
            if e is None:
                break
            eh, phy, diff, prev = e
            ts = self.begin_ts + diff
            if eh == h and begin_ts <= ts <= end_ts:
                out.append(phy)
            if prev >= idx or ts < begin_ts:
                break
            idx = prev
        if not self.writable:
            self.close_fd()
        return out

    def close(self) -> None:
        if self.writable and self.fd >= 0:
            self.write_out()
        self.close_fd()

    def abandon(self) -> None:
        self._pending.clear()
        self.close_fd()


class IndexService:
    def __init__(
        self,
        directory: Path,
        hash_slots: int,
        max_entries: int,
        pending_limit: int,
        on_disk_full: Callable[[str, OSError], None] | None = None,
    ) -> None:
        self.directory = directory
        self.on_disk_full = on_disk_full
        self.unindexed = 0  # keys left out because a full disk kept a new index file from being created
        self.hash_slots = hash_slots
        self.max_entries = max_entries
        self.pending_limit = pending_limit
        self.files: list[IndexFile] = []
        self._current: IndexFile | None = None

    def load(self, clean_stop: bool) -> None:
        """Open the index files; after a crash the last one is not written to any more."""
        self.directory.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in self.directory.iterdir() if p.name.isdigit())
        for i, name in enumerate(names):
            last = i == len(names) - 1
            f = IndexFile(self.directory / name, self.hash_slots, self.max_entries, writable=last and clean_stop)
            self.files.append(f)
            if f.writable and not f.full:
                self._current = f
            elif f.writable:
                f.writable = False
                f._slots = None
                f.close_fd()

    def _roll(self, ts: int) -> IndexFile:
        if self._current is not None:
            self._current.write_out()
            os.fdatasync(self._current.fd)  # the checkpoint will claim it; rare (once per file)
            self._current.writable = False
            self._current._slots = None
            self._current.close_fd()
            self._current = None
        stamp = max(int(time.time() * 1000), ts)
        while (self.directory / f"{stamp:020d}").exists():
            stamp += 1
        f = IndexFile(self.directory / f"{stamp:020d}", self.hash_slots, self.max_entries, writable=True)
        fsync_dir(self.directory)
        self.files.append(f)
        self._current = f
        return f

    def put(self, key: str, phy: int, ts: int) -> None:
        self.put_many([(key, phy)], ts)

    def _disk_full(self, exc: OSError) -> bool:
        """True when ``exc`` is a full disk this service tolerates (it was reported); else re-raise it."""
        if self.on_disk_full is None or not is_disk_full_error(exc):
            return False
        self.on_disk_full(f"index files in {self.directory}", exc)
        return True

    def put_many(self, entries: list[tuple[str, int]], ts: int) -> None:
        """Index (key, commit log offset) pairs stored at ``ts``."""
        f = self._current
        if f is not None and entries and f.count + len(entries) <= f.max_entries and f.fits_time(ts):
            f.put_run(entries, ts)  # the common case: they all go to the current file
            entries = []
        for pos, (key, phy) in enumerate(entries):
            if f is None or f.full or not f.fits_time(ts):
                try:
                    f = self._roll(ts)
                except OSError as exc:
                    if not self._disk_full(exc):
                        raise
                    self.unindexed += len(entries) - pos
                    log.warning("disk full: %d keys stay out of the index", len(entries) - pos)
                    return
            f.put(key_hash(key), phy, ts)
        if f is not None and len(f._pending) >= self.pending_limit * ENTRY_BYTES:
            try:
                f.write_entries()
            except OSError as exc:
                if not self._disk_full(exc):
                    raise

    def query(self, key: str, max_num: int, begin_ts: int, end_ts: int) -> list[int]:
        """Commit log offsets for ``key`` (newest first, deduplicated)."""
        h = key_hash(key)
        out: list[int] = []
        seen: set[int] = set()
        for f in reversed(self.files):
            if f.count == 0 or f.end_ts < begin_ts or f.begin_ts > end_ts:
                continue
            for phy in f.lookup(h, begin_ts, end_ts, max_num * 2):
                if phy not in seen:
                    seen.add(phy)
                    out.append(phy)
        return out

    def sync_fds(self) -> list[int]:
        f = self._current
        try:
            if f is not None and f.write_out():
                return [os.dup(f.fd)]
        except OSError as exc:
            if not self._disk_full(exc):
                raise
        return []

    def all_written(self) -> bool:
        """Whether every entry is in the files (none held back by a full disk)."""
        f = self._current
        return f is None or not f._header_dirty

    def delete_below(self, min_phy: int) -> int:
        """Delete files whose entries all point below ``min_phy`` (not the one being written)."""
        deleted = 0
        while self.files and self.files[0] is not self._current and self.files[0].end_phy < min_phy:
            f = self.files.pop(0)
            f.close_fd()
            f.path.unlink(missing_ok=True)
            deleted += 1
        return deleted

    @property
    def end_phy(self) -> int:
        return self.files[-1].end_phy if self.files else -1

    def close(self) -> None:
        for f in self.files:
            try:
                f.close()
            except OSError as exc:
                f.close_fd()
                if not self._disk_full(exc):
                    raise
        self.files.clear()
        self._current = None

    def abandon(self) -> None:
        for f in self.files:
            f.abandon()
        self.files.clear()
        self._current = None
