"""Consume queues: per topic and queue id, fixed 20-byte entries pointing into the commit log.

``consumequeue/<topic>/<queueId>/<20-digit start byte offset>``, ``entries_per_file`` entries a file, so a
queue offset maps to a file and a position in O(1) (RocketMQ's ``ConsumeQueue``). New entries wait
in a small per-queue buffer that reads also consult; it is written out when it fills up and on flush.
Consume queues can always be rebuilt from the commit log, so the buffer costs no durability.

On a full disk (ENOSPC) entries stay in the buffer and ``on_disk_full`` hears of it; reads still find them
and the next write-out tries again. ``all_written`` tells the checkpoint whether it may claim them.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from .disk_space import is_disk_full_error
from .mapped_file_queue import file_name, parse_file_name, pwrite_all

DiskFullHook = Callable[[str, OSError], None]  # (what could not be written, the error)

log = logging.getLogger(__name__)

ENTRY = struct.Struct(">qiq")  # commit log offset, size, tags code
ENTRY_BYTES = ENTRY.size
assert ENTRY_BYTES == 20


class ConsumeQueue:
    def __init__(
        self,
        directory: Path,
        topic: str,
        queue_id: int,
        entries_per_file: int,
        pending_limit: int,
        on_disk_full: DiskFullHook | None = None,
    ) -> None:
        self.directory = directory
        self.on_disk_full = on_disk_full
        self.topic = topic
        self.queue_id = queue_id
        self.per_file = entries_per_file
        self.file_bytes = entries_per_file * ENTRY_BYTES
        self.pending_limit = pending_limit * ENTRY_BYTES
        self.min_offset = 0
        self.max_offset = 0  # the next queue offset
        self.written = 0  # entries below this are in the files; [written, max_offset) are pending
        self._pending = bytearray()
        self._fds: dict[int, int] = {}  # file index -> descriptor (the write file and the last read one)
        self._dirty: set[int] = set()  # file indexes written since the last flush
        self._first_file = 0

    # -- files -----------------------------------------------------------------------------------------
    def _file_indexes(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        out = []
        for p in self.directory.iterdir():
            start = parse_file_name(p.name)
            if start is not None and start % self.file_bytes == 0:
                out.append(start // self.file_bytes)
        return sorted(out)

    def _path(self, index: int) -> Path:
        return self.directory / file_name(index * self.file_bytes)

    def _fd(self, index: int, create: bool = False) -> int | None:
        fd = self._fds.get(index)
        if fd is not None:
            return fd
        try:
            if create:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._path(index), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            else:
                fd = os.open(self._path(index), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        write_index = (self.max_offset - 1) // self.per_file if self.max_offset else 0
        for other in [i for i in self._fds if i != write_index]:
            os.close(self._fds.pop(other))
        self._fds[index] = fd
        return fd

    def _close_fd(self, index: int) -> None:
        fd = self._fds.pop(index, None)
        if fd is not None:
            os.close(fd)

    def load(self) -> None:
        indexes = self._file_indexes()
        if not indexes:
            return
        self._first_file = indexes[0]
        last = indexes[-1]
        size = os.path.getsize(self._path(last))
        entries = size // ENTRY_BYTES
        if size % ENTRY_BYTES:
            log.info(
                "consume queue %s/%d: cutting %d bytes of a torn entry", self.topic, self.queue_id, size % ENTRY_BYTES
            )
            os.truncate(self._path(last), entries * ENTRY_BYTES)
        self.max_offset = self.written = last * self.per_file + entries
        self.min_offset = indexes[0] * self.per_file

    # -- writing ---------------------------------------------------------------------------------------
    def append(self, phy: int, size: int, tags_code: int) -> int:
        """Add the entry for the next queue offset; returns that offset."""
        q = self.max_offset
        self._pending += ENTRY.pack(phy, size, tags_code)
        self.max_offset = q + 1
        if len(self._pending) >= self.pending_limit:
            self.write_out()
        return q

    def put_at(self, q: int, phy: int, size: int, tags_code: int) -> None:
        """Write the entry for queue offset ``q`` (recovery and replication); idempotent."""
        if q == self.max_offset:
            self.append(phy, size, tags_code)
            return
        raw = ENTRY.pack(phy, size, tags_code)
        if q < self.written:
            if q < self.min_offset:
                return
            self._write_entries(q, raw)
            return
        if q < self.max_offset:
            i = (q - self.written) * ENTRY_BYTES
            self._pending[i : i + ENTRY_BYTES] = raw
            return
        log.warning(
            "consume queue %s/%d: entry %d arrives after a gap from %d", self.topic, self.queue_id, q, self.max_offset
        )
        self.write_out()
        if self.max_offset == 0 and self.min_offset == 0:
            self.min_offset = q
            self._first_file = q // self.per_file
        self._write_entries(q, raw)
        self.max_offset = self.written = q + 1

    def _write_entries(self, q: int, raw: bytes | bytearray | memoryview) -> None:
        view = memoryview(raw)
        while view:
            index, slot = divmod(q, self.per_file)
            take = min(len(view) // ENTRY_BYTES, self.per_file - slot)
            fd = self._fd(index, create=True)
            assert fd is not None
            pwrite_all(fd, view[: take * ENTRY_BYTES], slot * ENTRY_BYTES)
            self._dirty.add(index)
            view = view[take * ENTRY_BYTES :]
            q += take

    def write_out(self) -> bool:
        """Write the pending entries into the files; False when a full disk kept them pending (only where
        ``on_disk_full`` is set; without it the error is raised)."""
        if not self._pending:
            return True
        try:
            self._write_entries(self.written, self._pending)
        except OSError as exc:
            if self.on_disk_full is None or not is_disk_full_error(exc):
                raise
            self.on_disk_full(f"consume queue {self.topic}/{self.queue_id}", exc)
            return False
        self.written = self.max_offset
        self._pending.clear()
        return True

    def sync_fds(self) -> list[int]:
        """Write out pending entries and return dup'ed descriptors of files to fdatasync."""
        self.write_out()
        fds = []
        for index in self._dirty:
            fd = self._fd(index)
            if fd is not None:
                fds.append(os.dup(fd))
        self._dirty.clear()
        return fds

    # -- reading ---------------------------------------------------------------------------------------
    def read_entries(self, q: int, count: int) -> bytes:
        """Raw entries from queue offset ``q``: up to ``count``, within one file, none past the end."""
        count = min(count, self.max_offset - q)
        if count <= 0 or q < self.min_offset:
            return b""
        if q >= self.written:
            i = (q - self.written) * ENTRY_BYTES
            return bytes(self._pending[i : i + count * ENTRY_BYTES])
        index, slot = divmod(q, self.per_file)
        on_disk = min(count, self.written - q, self.per_file - slot)
        fd = self._fd(index)
        if fd is None:
            return b""
        raw = os.pread(fd, on_disk * ENTRY_BYTES, slot * ENTRY_BYTES)
        if on_disk < count and len(raw) == on_disk * ENTRY_BYTES and q + on_disk == self.written:
            raw += self._pending[: (count - on_disk) * ENTRY_BYTES]
        return raw

    def entry(self, q: int) -> tuple[int, int, int] | None:
        raw = self.read_entries(q, 1)
        return ENTRY.unpack(raw) if len(raw) == ENTRY_BYTES else None

    def iter_entries(self, q: int, count: int) -> Iterator[tuple[int, int, int, int]]:
        """(queue offset, commit log offset, size, tags code) from ``q`` on, up to ``count``."""
        while count > 0:
            raw = self.read_entries(q, min(count, 4096))
            if not raw:
                return
            for phy, size, tags in ENTRY.iter_unpack(raw):
                yield q, phy, size, tags
                q += 1
            count -= len(raw) // ENTRY_BYTES

    # -- trimming --------------------------------------------------------------------------------------
    def truncate_to(self, q: int) -> None:
        """Drop entries at and after queue offset ``q``."""
        if q >= self.max_offset:
            return
        if not self.write_out() and q >= self.written:
            del self._pending[(q - self.written) * ENTRY_BYTES :]  # the cut lies in the unwritten entries
            self.max_offset = q
            return
        self._pending.clear()
        q = max(q, self.min_offset)
        keep_index, keep_slot = divmod(q, self.per_file)
        for index in self._file_indexes():
            if index > keep_index or (index == keep_index and keep_slot == 0 and index > self._first_file):
                self._close_fd(index)
                self._path(index).unlink(missing_ok=True)
                self._dirty.discard(index)
            elif index == keep_index:
                os.truncate(self._path(index), keep_slot * ENTRY_BYTES)
                self._dirty.add(index)
        self.max_offset = self.written = q

    def truncate_past(self, valid_end: int) -> int:
        """Drop trailing entries that point past commit log offset ``valid_end``; returns how many."""
        self.write_out()
        q = self.max_offset
        while q > self.min_offset:
            step = min(1024, q - self.min_offset, (q - 1) % self.per_file + 1)
            raw = self.read_entries(q - step, step)
            good = None
            entries = list(ENTRY.iter_unpack(raw))
            for i in range(len(entries) - 1, -1, -1):
                phy, size, _tags = entries[i]
                if size > 0 and phy + size <= valid_end:
                    good = q - step + i + 1
                    break
            if good is not None:
                q = good
                break
            q -= step
        cut = self.max_offset - q
        if cut:
            log.info(
                "consume queue %s/%d: cut %d entries past the commit log end %d",
                self.topic,
                self.queue_id,
                cut,
                valid_end,
            )
            self.truncate_to(q)
        return cut

    def correct_min_offset(self, min_phy: int) -> None:
        """Move ``min_offset`` to the first entry whose message is still in the commit log."""
        lo, hi = self.min_offset, self.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            e = self.entry(mid)
            if e is None or e[0] >= min_phy:
                hi = mid
            else:
                lo = mid + 1
        self.min_offset = lo

    def delete_files_below(self, min_phy: int) -> int:
        """Delete files whose entries all point below ``min_phy`` (never the last file); returns count."""
        deleted = 0
        indexes = self._file_indexes()
        for index in indexes[:-1]:
            last_q = (index + 1) * self.per_file - 1
            if last_q >= self.written:
                break
            e = self.entry(last_q)
            if e is None or e[0] >= min_phy:
                break
            self._close_fd(index)
            self._path(index).unlink(missing_ok=True)
            self._dirty.discard(index)
            deleted += 1
        if deleted:
            self._first_file = self._file_indexes()[0]
            self.min_offset = max(self.min_offset, self._first_file * self.per_file)
        return deleted

    def close(self) -> None:
        self.write_out()
        for index in list(self._fds):
            self._close_fd(index)

    def abandon(self) -> None:
        self._pending.clear()
        for index in list(self._fds):
            self._close_fd(index)

    def destroy(self) -> None:
        self.abandon()
        shutil.rmtree(self.directory, ignore_errors=True)


class ConsumeQueueTable:
    """All consume queues of a store, keyed by (topic, queue id)."""

    def __init__(
        self, root: Path, entries_per_file: int, pending_limit: int, on_disk_full: DiskFullHook | None = None
    ) -> None:
        self.root = root
        self.entries_per_file = entries_per_file
        self.pending_limit = pending_limit
        self.on_disk_full = on_disk_full
        self.queues: dict[tuple[str, int], ConsumeQueue] = {}

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for topic_dir in sorted(self.root.iterdir()):
            if not topic_dir.is_dir():
                continue
            for qdir in sorted(topic_dir.iterdir()):
                if qdir.is_dir() and qdir.name.isdigit():
                    cq = self._new(topic_dir.name, int(qdir.name))
                    cq.load()

    def _new(self, topic: str, queue_id: int) -> ConsumeQueue:
        if not topic or "/" in topic or topic in (".", ".."):
            raise ValueError(f"topic {topic!r} cannot name a consume queue directory")
        cq = ConsumeQueue(
            self.root / topic / str(queue_id),
            topic,
            queue_id,
            self.entries_per_file,
            self.pending_limit,
            self.on_disk_full,
        )
        self.queues[(topic, queue_id)] = cq
        return cq

    def get(self, topic: str, queue_id: int) -> ConsumeQueue | None:
        return self.queues.get((topic, queue_id))

    def get_or_create(self, topic: str, queue_id: int) -> ConsumeQueue:
        cq = self.queues.get((topic, queue_id))
        return cq if cq is not None else self._new(topic, queue_id)

    def delete_topic(self, topic: str) -> int:
        return self.delete_topics([topic])

    def delete_topics(self, topics: list[str]) -> int:
        """Drop every queue of ``topics`` and their files (one pass over the queues, however many topics)."""
        gone = set(topics)
        doomed = [key for key in self.queues if key[0] in gone]
        for key in doomed:
            self.queues.pop(key).destroy()
        for topic in gone:
            shutil.rmtree(self.root / topic, ignore_errors=True)
        return len(doomed)

    def topics(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for topic, qid in self.queues:
            out.setdefault(topic, []).append(qid)
        for qids in out.values():
            qids.sort()
        return out

    def sync_fds(self) -> list[int]:
        fds: list[int] = []
        for cq in self.queues.values():
            if cq._pending or cq._dirty:
                fds.extend(cq.sync_fds())
        return fds

    def all_written(self) -> bool:
        """Whether every entry is in the files (none held back by a full disk)."""
        return not any(cq._pending for cq in self.queues.values())

    def close(self) -> None:
        for cq in self.queues.values():
            cq.close()

    def abandon(self) -> None:
        for cq in self.queues.values():
            cq.abandon()
