"""A broker metadata file (``config/*.json``) that a full disk cannot break.

Each write is atomic (temp file, fsync, rename). When the disk is full the write fails, the temp file is removed
and the data stays in memory: the caller keeps serving from memory, and a later write saves it once space frees.
The first refusal and the first write that works again are logged; the ones in between are not.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

from krocket.common.jsonfile import write_json_atomic

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ConfigFile:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self._what = what  # "consumer offsets", "subscription groups": named in the log
        self.failing = False  # the last write met a full disk

    def write(self, data: Any) -> bool:
        """Write ``data``; False (data kept in memory by the caller) when the disk is full. Other errors raise."""
        try:
            write_json_atomic(self.path, data)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
            if not self.failing:
                log.warning("disk full: %s stay in memory until %s can be written: %s", self._what, self.path, exc)
            self.failing = True
            return False
        if self.failing:
            log.warning("%s are written to %s again", self._what, self.path)
            self.failing = False
        return True
