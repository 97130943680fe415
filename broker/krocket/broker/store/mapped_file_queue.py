"""Fixed-size, append-only segment files named by their 20-digit start offset (RocketMQ's MappedFileQueue).

Files are read and written with ``os.pread``/``os.pwrite`` on plain descriptors, never mapped: the kernel's
page cache does the caching, so the process's resident memory does not grow with the data kept.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from krocket.common.errors import ConfigError

from .disk_space import release_blocks, reserve_blocks

log = logging.getLogger(__name__)

NAME_DIGITS = 20


def file_name(offset: int) -> str:
    return f"{offset:0{NAME_DIGITS}d}"


def parse_file_name(name: str) -> int | None:
    if len(name) != NAME_DIGITS or not name.isdigit():
        return None
    return int(name)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


class Segment:
    """One file of the queue: ``start`` is its global offset, ``wrote`` the bytes written into it (the file's
    size). ``reserved``: the blocks up to ``capacity`` are allocated (``reserve_rest``), so writes up to
    there cannot meet a full disk."""

    __slots__ = ("path", "start", "capacity", "fd", "wrote", "reserved")

    def __init__(self, path: Path, start: int, capacity: int) -> None:
        self.path = path
        self.start = start
        self.capacity = capacity
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.wrote = os.fstat(self.fd).st_size
        self.reserved = False

    @property
    def end(self) -> int:
        return self.start + self.wrote

    @property
    def full(self) -> bool:
        return self.wrote >= self.capacity

    def write(self, data: bytes | bytearray | memoryview, pos: int) -> None:
        pwrite_all(self.fd, data, pos)
        if pos + len(data) > self.wrote:
            self.wrote = pos + len(data)

    def extend(self, size: int) -> None:
        """Grow by ``size`` bytes that read as zeros, without writing them."""
        os.ftruncate(self.fd, self.wrote + size)
        self.wrote += size

    def read(self, pos: int, size: int) -> bytes:
        return os.pread(self.fd, size, pos)

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)
        if length < self.wrote:
            self.reserved = False  # a shrinking truncate frees the blocks past the new end
        self.wrote = length

    def reserve_rest(self) -> bool:
        """Allocate the blocks from ``wrote`` to ``capacity`` (the file's size stays). Returns whether the
        file system supports that; raises ``OSError`` (ENOSPC) when the disk cannot hold them."""
        self.reserved = reserve_blocks(self.fd, self.wrote, self.capacity - self.wrote)
        return self.reserved

    def unreserve(self) -> None:
        """Give back the blocks reserved past ``wrote`` (a shrinking truncate frees them on every file system;
        the size is what it was). At a clean stop, so a stopped store holds only what it wrote."""
        if self.reserved and self.wrote < self.capacity:
            os.ftruncate(self.fd, self.wrote + 1)
            os.ftruncate(self.fd, self.wrote)
        self.reserved = False

    def release_from(self, pos: int) -> None:
        """Give back the blocks from ``pos`` to ``capacity`` (a sealed segment's padding; reads give zeros)."""
        release_blocks(self.fd, pos, self.capacity - pos)

    def mtime(self) -> float:
        return os.fstat(self.fd).st_mtime

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class MappedFileQueue:
    """The ordered, contiguous segments of one directory; all segments have ``segment_bytes`` capacity."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segments: list[Segment] = []

    def load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        starts = sorted(s for s in (parse_file_name(p.name) for p in self.directory.iterdir()) if s is not None)
        for start in starts:
            if start % self.segment_bytes:
                raise ConfigError(
                    f"segment {file_name(start)} in {self.directory} does not start at a multiple of "
                    f"commitlog_segment_bytes={self.segment_bytes}; was the store written with another size?"
                )
            if self.segments and start != self.segments[-1].start + self.segment_bytes:
                raise ConfigError(
                    f"commit log segments in {self.directory} are not contiguous before "
                    f"{file_name(start)}; refusing to guess"
                )
            seg = Segment(self.directory / file_name(start), start, self.segment_bytes)
            if seg.wrote > self.segment_bytes:
                raise ConfigError(f"segment {seg.path} is larger than commitlog_segment_bytes")
            self.segments.append(seg)

    @property
    def min_offset(self) -> int:
        return self.segments[0].start if self.segments else 0

    @property
    def max_offset(self) -> int:
        return self.segments[-1].end if self.segments else 0

    @property
    def last(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    def find(self, offset: int) -> Segment | None:
        """The segment holding global ``offset`` (O(1): segments are contiguous and equally sized)."""
        segs = self.segments
        if not segs:
            return None
        i = (offset - segs[0].start) // self.segment_bytes
        if 0 <= i < len(segs):
            return segs[i]
        return None

    def create(self, start: int, reserve: bool = True) -> Segment:
        """A new, empty last segment; with ``reserve`` its blocks are allocated first. A disk that cannot hold
        it raises ``OSError`` (ENOSPC) and leaves no file behind."""
        if start % self.segment_bytes:
            raise ValueError(f"segment start {start} is not aligned to {self.segment_bytes}")
        if self.segments and start != self.segments[-1].start + self.segment_bytes:
            raise ValueError(f"segment start {start} does not follow the last segment")
        seg = Segment(self.directory / file_name(start), start, self.segment_bytes)
        try:
            if reserve:
                seg.reserve_rest()
            fsync_dir(self.directory)
        except OSError:
            seg.delete()
            raise
        self.segments.append(seg)
        return seg

    def truncate_to(self, offset: int) -> int:
        """Drop everything at and after global ``offset``; returns the number of bytes cut."""
        cut = 0
        while self.segments and self.segments[-1].start > offset:
            seg = self.segments.pop()
            cut += seg.wrote
            log.info("deleting commit log segment %s past the valid end %d", seg.path.name, offset)
            seg.delete()
        last = self.last
        if last is not None and last.end > offset:
            cut += last.end - offset
            last.truncate(offset - last.start)
        return cut

    def delete_first(self) -> Segment:
        seg = self.segments.pop(0)
        seg.delete()
        return seg

    def close(self) -> None:
        for seg in self.segments:
            seg.close()
        self.segments.clear()
