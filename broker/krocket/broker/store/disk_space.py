"""Disk space: blocks reserved before they are written, and the guard that refuses writes before ENOSPC.

Two mechanisms keep a full disk from reaching the commit log as ENOSPC:

- **Reserved segments.** A new commit log segment gets its blocks with ``fallocate(FALLOC_FL_KEEP_SIZE)``
  (Linux; the file's size stays what was written, so recovery still reads the size as the written end). If
  the disk cannot hold the segment, creating it fails cleanly before any record goes into it. Writes into a
  reserved segment cannot run out of space. Where ``fallocate`` is not supported the segment is not reserved
  and its record bytes are charged to the guard's budget instead.
- **The guard** (``DiskSpace``): ``statvfs`` is sampled every ``disk_check_interval_s``, when a segment is
  created, and whenever the budget (free bytes minus ``disk_free_reserve_bytes``, the room kept for consume
  queues, index, checkpoint and config files) runs out; each put charges its estimated bytes outside
  reserved segments. The hot path costs one subtraction and one comparison. An ENOSPC that still happens
  elsewhere (a consume queue, the index, the checkpoint) is reported here: writes are refused for at least
  ``FAILURE_HOLD_S`` and until a sample shows room again; what failed is retried by the next flush.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from krocket.common.errors import ServiceNotAvailableError

log = logging.getLogger(__name__)

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What a put costs outside the commit log: its consume queue entry, index entries and their share of slot
# pages and files (an estimate; the sample every ``disk_check_interval_s`` corrects it).
LOGICS_BYTES_PER_PUT = 128
# The guard keeps at most this share of a volume free for the logics files (a small volume still works).
RESERVE_MAX_SHARE = 0.10
# While writes are refused, statvfs is looked at again at most this often.
FULL_RESAMPLE_S = 0.05
# An ENOSPC refuses writes for at least this long, even where statvfs shows room (quotas, reserved blocks).
FAILURE_HOLD_S = 1.0
# Each way of the refusal is logged at most this often (a disk at the edge may flip often).
TRANSITION_LOG_S = 10.0


class DiskFullError(ServiceNotAvailableError):
    """The store refuses a write because the disk cannot take it (SERVICE_NOT_AVAILABLE, "disk full ...")."""


def is_disk_full_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def _call_fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """True when done, False when the platform or file system does not support it; raises other errors."""
    if _fallocate is None or length <= 0:
        return _fallocate is not None
    while True:
        if _fallocate(fd, mode, offset, length) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise OSError(err, os.strerror(err))


def reserve_blocks(fd: int, offset: int, length: int) -> bool:
    """Allocate ``[offset, offset + length)`` without changing the file's size. True: reserved; False: not
    supported here (nothing reserved). Raises ``OSError`` (ENOSPC) when the disk cannot hold it; a failed
    reservation leaves no partial allocation on tmpfs and ext4."""
    return _call_fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length)


def release_blocks(fd: int, offset: int, length: int) -> None:
    """Best effort: give back the blocks of ``[offset, offset + length)`` (they read as zeros)."""
    page = 4096
    start = -(-offset // page) * page
    end = (offset + length) // page * page
    if end <= start:
        return
    try:
        _call_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start)
    except OSError as exc:
        log.debug("could not punch a hole into a sealed segment: %s", exc)


StatFn = Callable[[Path], os.statvfs_result]
RatioFn = Callable[[], float]


class DiskSpace:
    """The write guard of one store: says whether the disk can take a write, before it is written."""

    def __init__(
        self,
        root: Path,
        reserve_bytes: int,
        warning_ratio: float,
        interval_s: float,
        ratio_fn: RatioFn | None = None,
        stat_fn: StatFn = os.statvfs,
    ) -> None:
        self.root = root
        self.reserve_bytes = reserve_bytes
        self.warning_ratio = warning_ratio
        self.interval_s = interval_s
        self.ratio_fn = ratio_fn
        self.stat_fn = stat_fn
        self._full_resample_s = min(FULL_RESAMPLE_S, interval_s)
        self.free = 0
        self.total = 0
        self.keep = 0
        self.ratio = 0.0
        self.budget = 0  # bytes that may go to disk outside reserved segments before the next sample
        self.next_sample = float("-inf")
        self.refusal: str | None = None  # why writes are refused now, None when they are not
        self._failure: str | None = None  # an ENOSPC seen since the last sample that showed room
        self._failed_at = 0.0
        self._logged_at = float("-inf")
        self._back_logged_at = float("-inf")
        self.failures = 0  # ENOSPC errors reported since start
        self.refusals = 0  # writes refused since start

    # -- sampling --------------------------------------------------------------------------------------
    def sample(self) -> None:
        now = time.monotonic()
        try:
            st = self.stat_fn(self.root)
        except OSError as exc:
            log.warning("cannot stat the disk holding %s: %s", self.root, exc)
            self.next_sample = now + self.interval_s
            return
        self.free = st.f_bavail * st.f_frsize
        self.total = st.f_blocks * st.f_frsize
        self.keep = min(self.reserve_bytes, int(self.total * RESERVE_MAX_SHARE))
        self.budget = self.free - self.keep
        if self.ratio_fn is not None:
            self.ratio = self.ratio_fn()
        else:
            self.ratio = (self.total - self.free) / self.total if self.total else 0.0
        self.next_sample = now + (self._full_resample_s if self.refusal else self.interval_s)
        if self._failure is not None and self.budget > 0 and now - self._failed_at >= FAILURE_HOLD_S:
            self._failure = None
        self._set_refusal(self._reason())

    def _reason(self) -> str | None:
        if self._failure is not None:
            return f"disk full: {self._failure}; writes are refused until space frees"
        if self.ratio > self.warning_ratio:
            return (
                f"disk full: {self.ratio:.1%} of the disk holding {self.root} is used, over disk_warning_ratio "
                f"{self.warning_ratio:.0%}; writes are refused until retention frees space"
            )
        if self.budget <= 0:
            return (
                f"disk full: {self.free} bytes free on the disk holding {self.root}, {self.keep} are kept free "
                f"for consume queues, index and config files; writes are refused until retention frees space"
            )
        return None

    def _set_refusal(self, reason: str | None) -> None:
        if reason is not None and self.refusal is None:
            now = time.monotonic()
            self.next_sample = now + self._full_resample_s
            level = logging.WARNING if now - self._logged_at >= TRANSITION_LOG_S else logging.DEBUG
            self._logged_at = now
            log.log(level, "%s", reason.replace("disk full: ", "disk full, refusing writes: ", 1))
        elif reason is None and self.refusal is not None:
            now = time.monotonic()
            level = logging.INFO if now - self._back_logged_at >= TRANSITION_LOG_S else logging.DEBUG
            self._back_logged_at = now
            log.log(level, "disk space is back (%d bytes free); accepting writes again", self.free)
        self.refusal = reason

    # -- the write path --------------------------------------------------------------------------------
    def admit(self, cost: int) -> None:
        """Charge ``cost`` bytes (outside reserved segments) for a write, or raise ``DiskFullError``."""
        self.budget -= cost
        if self.budget < 0 or self.refusal is not None or time.monotonic() >= self.next_sample:
            self._admit_slow(cost)

    def charge_puts(self, count: int, record_bytes: int) -> None:
        """Charge ``count`` puts already made (the send fast path checks ``admit(0)`` once per read, then charges
        what the read stored): the next ``admit`` sees them."""
        self.budget -= LOGICS_BYTES_PER_PUT * count + record_bytes

    def _admit_slow(self, cost: int) -> None:
        if self.refusal is None or time.monotonic() >= self.next_sample:
            self.sample()
            self.budget -= cost
        if self.refusal is None and self.budget < 0:
            self._set_refusal(self._reason() or f"disk full: a write of {cost} bytes does not fit the free space")
        if self.refusal is not None:
            self.refusals += 1
            raise DiskFullError(self.refusal)

    def ensure_room(self, nbytes: int, what: str) -> None:
        """Before reserving ``nbytes`` for ``what``: raise ``DiskFullError`` unless the disk can hold them
        and still keep its reserve free."""
        self.sample()
        if self.refusal is None and self.free - nbytes < self.keep:
            self._set_refusal(
                f"disk full: {what} needs {nbytes} bytes, {self.free} are free and {self.keep} are kept free"
            )
            self.next_sample = time.monotonic() + self._full_resample_s
        if self.refusal is not None:
            self.refusals += 1
            raise DiskFullError(self.refusal)

    def reserved(self, nbytes: int) -> None:
        """``nbytes`` were just allocated: the budget shrinks until the next sample says exactly."""
        self.budget -= nbytes

    def report_failure(self, what: str, exc: OSError) -> None:
        """An ENOSPC (or EDQUOT) happened writing ``what``: refuse writes until a sample shows room."""
        self.failures += 1
        self._failure = f"{exc.strerror or exc} writing {what}"
        self._failed_at = time.monotonic()
        self.budget = min(self.budget, 0)
        self._set_refusal(self._reason())

    @property
    def full(self) -> bool:
        return self.refusal is not None

    def stats(self) -> dict[str, int | float]:
        return {
            "disk_free_bytes": self.free,
            "disk_full": int(self.full),
            "disk_full_refusals": self.refusals,
            "disk_full_errors": self.failures,
        }
