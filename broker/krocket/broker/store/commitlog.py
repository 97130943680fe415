"""The commit log: one append-only log of records for all topics (RocketMQ's ``CommitLog``). Records are
encoded here, in the layout of ``krocket.common.record``.

Appends are gathered in a small user-space buffer that belongs to the last segment and is written out
(``commit``) with one ``pwrite`` when it grows past ``commit_buffer_bytes``, when a read needs its bytes,
before a flush, and once per event loop iteration when the store runs in a loop. Flushing (``fdatasync``)
is the flush service's business; this module only says which descriptors cover which range.

Disk space (see ``disk_space``): a new segment is reserved (its blocks allocated) before the log rolls into
it, so a full disk refuses the roll with ``DiskFullError`` and nothing changes. A segment also rolls once
``commitlog_roll_interval_ms`` passed since it was started, so that retention can delete old data on a
small volume; such a time roll is skipped (and tried again later) when the disk has no room for a new
segment. A write into the files that still fails with ENOSPC keeps its bytes in the buffer; the commit
before acknowledgements (``commit_for_ack``) raises for them, so they are not acknowledged, and later
commits retry.
"""

from __future__ import annotations

import logging
import math
import os
import time

from krocket.common.errors import MessageIllegalError
from krocket.common.record import (
    BLANK_MIN_BYTES,
    MAGIC_V1,
    MAGIC_V2,
    POS_STORE_TIMESTAMP,
    RECORD_MIN_BYTES,
    blank_record,
    pack_record_into,
    peek_head,
    store_timestamp_of,
)

from .config import StoreConfig
from .disk_space import DiskFullError, DiskSpace, is_disk_full_error
from .mapped_file_queue import MappedFileQueue, Segment

log = logging.getLogger(__name__)

# One message of a run appended by ``append_run``: (record size, body, properties, flag).
RunItem = tuple[int, bytes, bytes, int]


# A time roll that found no room for a new segment is tried again after this long (ms).
TIME_ROLL_RETRY_MS = 60_000
# A replicated run of at least this many zero bytes (a BLANK record's padding) extends the file unwritten.
ZERO_RUN_BYTES = 4096


class CommitLog:
    def __init__(self, config: StoreConfig, space: DiskSpace | None = None) -> None:
        self.config = config
        self.space = space
        self.segment_bytes = config.commitlog_segment_bytes
        self.files = MappedFileQueue(config.commitlog_dir, self.segment_bytes)
        self._buf = bytearray()
        self._commit_limit = config.commit_buffer_bytes
        # Global offsets: [committed, wrote) sits in the buffer; everything below is in the files.
        self.committed = 0
        self.wrote = 0
        self.flushed = 0
        self._tail_room = 0  # bytes left in the last segment after ``wrote``
        self._roll_interval_ms = config.commitlog_roll_interval_ms
        self._roll_at: float = math.inf  # store timestamp (ms) from which the next append rolls by time
        self.stuck = False  # a commit failed (ENOSPC): the buffer's bytes wait for space
        self._refused_upto = -1  # ``commit_for_ack`` raised for the buffered bytes up to here

    # -- lifecycle -------------------------------------------------------------------------------------
    def load(self) -> None:
        self.files.load()
        self.reload_positions()
        self.flushed = self.wrote

    def reload_positions(self) -> None:
        self._buf.clear()
        self.stuck = False
        self._refused_upto = -1
        self.committed = self.wrote = self.files.max_offset
        last = self.files.last
        self._tail_room = last.capacity - last.wrote if last is not None else 0
        self._roll_at = math.inf
        if last is not None and not last.full:
            self._reserve_tail(last)
            if self._roll_interval_ms > 0 and last.wrote > 0:
                started = self.store_timestamp_at(last.start)
                self._roll_at = (started if started > 0 else last.mtime() * 1000) + self._roll_interval_ms

    def _reserve_tail(self, last: Segment) -> None:
        """Allocate the rest of the last segment (at start and after a cut); on a full disk, warn and go on:
        writes into it are then charged to the disk space guard instead."""
        if last.reserved:
            return
        try:
            last.reserve_rest()
        except OSError as exc:
            if not is_disk_full_error(exc):
                raise
            log.warning(
                "disk full: cannot reserve the %d bytes left in commit log segment %s (%s); writes are refused "
                "until space frees",
                last.capacity - last.wrote,
                last.path.name,
                exc.strerror,
            )
            if self.space is not None:
                self.space.report_failure(f"commit log segment {last.path.name}", exc)

    @property
    def tail_room(self) -> int:
        """Bytes left in the last segment (a record needs its size plus ``BLANK_MIN_BYTES``)."""
        return self._tail_room

    @property
    def tail_reserved(self) -> bool:
        """Whether appends to the last segment land in allocated blocks (none charged to the free space)."""
        last = self.files.last
        return last is not None and last.reserved

    def truncate_to(self, offset: int) -> int:
        """Cut the log at ``offset`` (inside or at the end of the existing segments)."""
        self.commit()
        cut = self.files.truncate_to(offset)
        self.reload_positions()
        self.flushed = min(self.flushed, self.wrote)
        return cut

    def close(self) -> None:
        """Commit, give back the last segment's unused reservation (the next start reserves it again) and
        close the files."""
        self.commit()
        last = self.files.last
        if last is not None and not self.stuck:
            last.unreserve()
        self.files.close()

    def abandon(self) -> None:
        """Drop the descriptors and the unwritten buffer, as a killed process would."""
        self._buf.clear()
        self.files.close()

    # -- appending -------------------------------------------------------------------------------------
    @property
    def min_offset(self) -> int:
        return self.files.min_offset

    @property
    def max_offset(self) -> int:
        return self.wrote

    def reserve(self, size: int, now_ms: int = 0) -> int:
        """Make room for ``size`` contiguous bytes in the last segment and return their global offset.

        A record never spans segments: when it does not fit the tail (keeping room for a BLANK record of at
        least 8 bytes), the tail is padded with a BLANK record and the log rolls to a new segment. With
        ``now_ms`` (the store timestamp) past the roll deadline, the log rolls by time first, where it can.
        Raises ``DiskFullError`` when a needed roll finds no room for the new segment.
        """
        if size + BLANK_MIN_BYTES <= self._tail_room:
            if now_ms >= self._roll_at:
                self._roll_by_time(now_ms)
            return self.wrote
        if size + BLANK_MIN_BYTES > self.segment_bytes:
            raise MessageIllegalError(
                f"a record of {size} bytes does not fit a commit log segment of {self.segment_bytes} bytes"
            )
        self._roll(now_ms)
        return self.wrote

    def _roll_by_time(self, now_ms: int) -> None:
        last = self.files.last
        if last is None or self.wrote <= last.start:
            self._roll_at = now_ms + self._roll_interval_ms  # an empty segment: it starts now
            return
        try:
            self._roll(now_ms)
        except DiskFullError as exc:
            self._roll_at = now_ms + min(self._roll_interval_ms, TIME_ROLL_RETRY_MS)
            log.warning("commit log segment %s stays open past its roll interval: %s", last.path.name, exc.message)

    def _roll(self, now_ms: int = 0) -> None:
        """Seal the last segment with a BLANK record and start the next one, reserved first: when the disk
        has no room for it, ``DiskFullError`` and nothing changed."""
        self.commit()
        if self._buf:
            raise DiskFullError("disk full: buffered records cannot be written; not rolling the commit log")
        last = self.files.last
        start = last.start + last.capacity if last is not None else 0
        seg = self._new_segment(start)
        if last is not None and not last.full:
            pos = last.wrote
            try:
                last.write(blank_record(last.capacity - pos), pos)
                last.truncate(last.capacity)  # the rest of the blank reads as zeros
            except OSError as exc:
                self.files.segments.pop().delete()
                last.truncate(pos)
                if not is_disk_full_error(exc):
                    raise
                raise self._full("sealing commit log segment " + last.path.name, exc) from None
            last.release_from(pos + BLANK_MIN_BYTES)
        self.wrote = self.committed = seg.start
        self._tail_room = seg.capacity
        now = now_ms or int(time.time() * 1000)
        self._roll_at = now + self._roll_interval_ms if self._roll_interval_ms > 0 else math.inf

    def _new_segment(self, start: int) -> Segment:
        """Create (and reserve) the segment at ``start``, or raise ``DiskFullError`` leaving none behind."""
        what = f"commit log segment {start:020d}"
        if self.space is not None:
            self.space.ensure_room(self.segment_bytes, what)
        try:
            seg = self.files.create(start)
        except OSError as exc:
            if not is_disk_full_error(exc):
                raise
            raise self._full(what, exc) from None
        if self.space is not None and seg.reserved:
            self.space.reserved(seg.capacity)
        return seg

    def _full(self, what: str, exc: OSError) -> DiskFullError:
        if self.space is not None:
            self.space.report_failure(what, exc)
        return DiskFullError(f"disk full: {exc.strerror} writing {what}; writes are refused until space frees")

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes reserved with ``reserve``."""
        self._buf += data
        n = len(data)
        self.wrote += n
        self._tail_room -= n
        if len(self._buf) >= self._commit_limit:
            self.commit()

    def append_message(
        self,
        total: int,
        queue_id: int,
        flag: int,
        queue_offset: int,
        sys_flag: int,
        born_timestamp: int,
        born_host: bytes,
        store_timestamp: int,
        store_host: bytes,
        reconsume_times: int,
        body: bytes,
        prefix: bytes,
        properties: bytes,
    ) -> int:
        """Encode one record (``total`` bytes, see ``record.record_size``) at the end of the log and return
        its commit log offset; rolls to a new segment when the record does not fit the last one."""
        if total + BLANK_MIN_BYTES <= self._tail_room and store_timestamp < self._roll_at:
            phy = self.wrote
        else:
            phy = self.reserve(total, store_timestamp)
        buf = self._buf
        pack_record_into(buf, total, queue_id, flag, queue_offset, phy, sys_flag, born_timestamp, born_host,
                         store_timestamp, store_host, reconsume_times, body, prefix, properties)  # fmt: skip
        self.wrote = phy + total
        self._tail_room -= total
        if len(buf) >= self._commit_limit:
            self.commit()
        return phy

    def append_run(
        self,
        items: list[RunItem],
        queue_id: int,
        first_queue_offset: int,
        sys_flag: int,
        born_timestamp: int,
        born_host: bytes,
        store_timestamp: int,
        store_host: bytes,
        prefix: bytes,
    ) -> int:
        """Encode records of one queue with consecutive queue offsets, contiguous in one segment (the caller
        keeps the run within ``segment_bytes - BLANK_MIN_BYTES``); returns the offset of the first."""
        run = 0
        for item in items:
            run += item[0]
        phy = self.reserve(run, store_timestamp)
        out = bytearray()
        pack = pack_record_into
        qoff = first_queue_offset
        at = phy
        for total, body, props, flag in items:
            pack(out, total, queue_id, flag, qoff, at, sys_flag, born_timestamp, born_host, store_timestamp,
                 store_host, 0, body, prefix, props)  # fmt: skip
            qoff += 1
            at += total
        self.append(out)
        return phy

    def commit(self) -> None:
        """Write the buffered appends into the last segment. On ENOSPC the bytes stay buffered (``stuck``)
        and the disk space guard hears of it; a later commit tries again."""
        self._write_buffer()

    def commit_for_ack(self) -> None:
        """``commit`` before acknowledgements leave: raises ``DiskFullError`` when bytes stay buffered that
        no earlier call raised for, so that the records they hold are not acknowledged."""
        if self._write_buffer() or self.wrote <= self._refused_upto:
            return
        self._refused_upto = self.wrote
        raise DiskFullError(
            f"disk full: {len(self._buf)} bytes of records could not be written to the commit log and are "
            f"not acknowledged; writes are refused until space frees"
        )

    def _write_buffer(self) -> bool:
        """True when the buffer is empty afterwards."""
        if not self._buf:
            return True
        seg = self.files.last
        assert seg is not None
        try:
            seg.write(self._buf, self.committed - seg.start)
        except OSError as exc:
            if not is_disk_full_error(exc):
                raise
            if not self.stuck:
                self.stuck = True
                self._full("the commit log", exc)
                log.warning("disk full: %d bytes of records wait in memory: %s", len(self._buf), exc.strerror)
            return False
        if self.stuck:
            self.stuck = False
            log.warning("the commit log bytes held back by a full disk are written now")
        self.committed = self.wrote
        self._buf.clear()
        return True

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    # -- raw appends (replication) ---------------------------------------------------------------------
    def append_raw(self, data: bytes | memoryview) -> None:
        """Append bytes that already are records (and BLANK padding), split at segment boundaries."""
        view = memoryview(data)
        while view:
            self.commit()
            last = self.files.last
            if last is None or last.full:
                start = last.start + last.capacity if last is not None else self.wrote
                last = self._new_segment(start)
            self.commit()
            take = min(len(view), last.capacity - last.wrote)
            chunk = view[:take]
            if take >= ZERO_RUN_BYTES and chunk[0] == 0 and chunk[-1] == 0 and chunk.tobytes().count(0) == take:
                last.extend(take)  # the padding of a sealed segment: read as zeros without writing them
            else:
                last.write(chunk, last.wrote)
            self.wrote = self.committed = last.end
            self._tail_room = last.capacity - last.wrote
            view = view[take:]

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at global ``offset``, never across a segment end."""
        if offset + size > self.committed:
            self.commit()  # on a full disk, the bytes still buffered are not read
        seg = self.files.find(offset)
        if seg is None or offset >= seg.end:
            return b""
        pos = offset - seg.start
        return seg.read(pos, min(size, seg.wrote - pos))

    def read_record(self, offset: int) -> bytes | None:
        """The record starting at ``offset``, or None when there is none (BLANK, out of range, torn)."""
        if offset < self.min_offset or offset + RECORD_MIN_BYTES > self.wrote:
            return None
        head = self.read(offset, 4096)
        if len(head) < BLANK_MIN_BYTES:
            return None
        total, magic = peek_head(head, 0)
        if (magic != MAGIC_V1 and magic != MAGIC_V2) or total < RECORD_MIN_BYTES:
            return None
        if total > len(head):
            head = self.read(offset, total)
        if len(head) < total:
            return None
        return head[:total] if len(head) > total else head

    def store_timestamp_at(self, offset: int) -> int:
        raw = self.read(offset + POS_STORE_TIMESTAMP, 8)
        return store_timestamp_of(raw) if len(raw) == 8 else -1

    # -- flushing support ------------------------------------------------------------------------------
    def sync_targets(self) -> tuple[int, list[int]]:
        """Commit, then return the offset a flush now covers and dup'ed descriptors to fdatasync.

        The descriptors are duplicates, so closing or deleting a segment meanwhile cannot hurt the flusher;
        the caller closes them.
        """
        self.commit()
        target = self.committed
        fds: list[int] = []
        if target > self.flushed:
            for seg in self._segments_between(self.flushed, target):
                fds.append(os.dup(seg.fd))
        return target, fds

    def sync_inline(self, limit: int) -> int | None:
        """Commit and, when at most ``limit`` bytes are not yet on disk, fdatasync them right here (on the
        caller's thread, on the segments' own descriptors) and return the offset now on disk; else None."""
        self.commit()
        target = self.committed
        if target - self.flushed > limit:
            return None
        if target > self.flushed:
            for seg in self._segments_between(self.flushed, target):
                os.fdatasync(seg.fd)
        self.mark_flushed(target)
        return target

    def _segments_between(self, begin: int, end: int) -> list[Segment]:
        out = []
        for seg in reversed(self.files.segments):
            if seg.start >= end:
                continue
            if seg.start + seg.capacity <= begin:
                break
            out.append(seg)
        return out

    def mark_flushed(self, offset: int) -> None:
        if offset > self.flushed:
            self.flushed = offset

    def segment_count(self) -> int:
        return len(self.files.segments)
