"""The supervisor's pid file, held with ``flock`` while ``krocket local up`` runs on a data directory.

A second supervisor on the same directory fails to take the lock and is told the holder's pid, before it
writes anything there. The kernel drops the lock when its holder dies, so a pid file left by a ``kill -9``
does not block the next ``local up``.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

PID_FILE = "supervisor.pid"


class SupervisorBusy(Exception):
    """Another supervisor holds the data directory's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path.parent} is in use by a running local cluster supervisor ({holder}, lock {path})")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _try_lock(fd: int, attempts: int = 5) -> bool:
    """An exclusive lock without waiting for a holder; a few short retries ride out ``holder_pid``'s probe."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.02)
    return False


class SupervisorLock:
    """``acquire()`` takes the lock without waiting (and only then writes the pid); ``release()`` drops it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_FILE
        self._fd: int | None = None
        self.stale_pid: int | None = None
        """The pid a previous holder left in the file (a supervisor that died without cleaning up)."""

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # an existing file is left as it is
            if not _try_lock(fd):
                pid = _read_pid(fd)
                os.close(fd)
                raise SupervisorBusy(self.path, pid)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its previous holder unlinked while we opened it
                break
            os.close(fd)
        self.stale_pid = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it: nobody can be between open and flock
        os.close(self._fd)
        self._fd = None


def holder_pid(data_dir: Path) -> int | None:
    """The pid of the supervisor that holds ``data_dir``'s lock now (0: not written yet), ``None`` when none does."""
    path = data_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
