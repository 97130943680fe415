"""The ``checkpoint`` file, the ``abort`` marker and the ``lock`` file (RocketMQ's ``StoreCheckpoint``).

``checkpoint`` is 4 KiB. Like RocketMQ's it holds physicMsgTimestamp, logicsMsgTimestamp, indexMsgTimestamp,
masterFlushedOffset and confirmPhyOffset as i64 at 0/8/16/24/32; krocket adds the commit log offset up to
which the log (40), the consume queues (48) and the index (56) are known to be on disk, a sequence number
(64) and a CRC32 of bytes 0..68 (68). All of it sits in the first disk sector, written with one ``pwrite``
and ``fdatasync``; a torn or garbled checkpoint fails its CRC and is ignored (recovery then re-dispatches
from the start of the log, which is safe, only slower).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from krocket.common.errors import ServiceNotAvailableError

from .disk_space import is_disk_full_error

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 4096
_BODY = struct.Struct(">qqqqqqqqi")
_CRC = struct.Struct(">I")


class StoreLockedError(ServiceNotAvailableError):
    """Another broker (or another store object) has this store open."""


@dataclass(slots=True)
class CheckpointData:
    physic_msg_timestamp: int = 0
    logics_msg_timestamp: int = 0
    index_msg_timestamp: int = 0
    master_flushed_offset: int = 0
    confirm_phy_offset: int = 0
    physic_offset: int = 0
    logics_offset: int = 0
    index_offset: int = 0


class StoreCheckpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.data = CheckpointData()
        self.seq = 0
        self.valid = False

    def load(self) -> CheckpointData:
        """Open (creating if needed) and read the checkpoint; ``valid`` tells whether one was found."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        raw = os.pread(self.fd, _BODY.size + _CRC.size, 0)
        self.valid = False
        if len(raw) == _BODY.size + _CRC.size:
            (crc,) = _CRC.unpack_from(raw, _BODY.size)
            if crc == zlib.crc32(raw[: _BODY.size]):
                *fields, self.seq = _BODY.unpack_from(raw, 0)
                self.data = CheckpointData(*fields)
                self.valid = True
            else:
                log.warning("checkpoint %s fails its CRC; recovering without it", self.path)
        return self.data

    def encode(self) -> bytes:
        d = self.data
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        body = _BODY.pack(
            d.physic_msg_timestamp,
            d.logics_msg_timestamp,
            d.index_msg_timestamp,
            d.master_flushed_offset,
            d.confirm_phy_offset,
            d.physic_offset,
            d.logics_offset,
            d.index_offset,
            self.seq,
        )
        return (body + _CRC.pack(zlib.crc32(body))).ljust(CHECKPOINT_BYTES, b"\0")

    def write(self, sync: bool = True) -> None:
        os.pwrite(self.fd, self.encode(), 0)
        if sync:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class AbortMarker:
    """``abort`` exists while the store is open; finding it at start means the last stop was a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> bool:
        """Create the marker; on a full disk warn and return False (a crash then looks like a clean stop to
        the next start, whose recovery re-validates only the last segments)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if not is_disk_full_error(exc):
                raise
            log.warning("disk full: cannot create the abort marker %s (%s); starting without it", self.path, exc)
            return False
        return True

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class StoreLock:
    """An exclusive ``flock`` on ``lock``: two brokers cannot open one store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"store {self.path.parent} is already open by another broker (lock held by pid {holder}); "
                f"stop it or point this broker at another store directory"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # the pid is for people; the lock holds without it
            if not is_disk_full_error(exc):
                os.close(fd)
                raise
            log.warning("disk full: the store lock %s holds no pid", self.path)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1
