"""The rules of one plain_acl.yml, re-read when the file changes (its mtime or size, polled)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from krocket.common.acl.plain_acl import PlainAcl, load_plain_acl
from krocket.common.errors import ConfigError

log = logging.getLogger(__name__)

RELOAD_POLL_SECONDS = 2.0


class AclFile:
    """``rules`` are the file's current rules. A file that turns bad keeps the last good rules and logs one
    error per bad version of the file."""

    def __init__(self, path: str | Path, poll_s: float = RELOAD_POLL_SECONDS) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._stamp = self._read_stamp()
        self.rules: PlainAcl = load_plain_acl(self.path)  # ConfigError at start: the caller refuses to start
        self.reloads = 0
        self.reload_errors = 0
        self._task: asyncio.Task[None] | None = None

    def _read_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self) -> bool:
        """Re-read the file if it changed; True when new rules took effect."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            rules = load_plain_acl(self.path)
        except ConfigError as exc:
            self.reload_errors += 1
            log.error("ACL file not reloaded, the previous rules stay in force: %s", exc.message)
            return False
        self.rules = rules
        self.reloads += 1
        log.info("ACL file %s reloaded: %d account(s)", self.path, len(rules.accounts))
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="acl-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.check()
            except Exception:  # keep polling whatever happens
                log.exception("ACL reload check failed")
