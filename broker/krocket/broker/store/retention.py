"""Retention and disk watermarks (RocketMQ's ``CleanCommitLogService``).

Whole commit log segments (never the one being written) are deleted oldest first when older than
``file_reserved_hours`` (by the time of their last write) or while the disk is fuller than
``disk_max_used_ratio``. As in RocketMQ, consumption does not hold data back: a segment goes when it is
expired or the disk is under pressure, whether or not every group has read it. Consume queue and index
files wholly below the new minimum commit log offset go with them, and queue minimum offsets move up.
Above ``disk_warning_ratio`` the store refuses writes (see ``disk_space``); after a deletion the disk space
guard looks again at once, so writes resume as soon as there is room. Segments also roll by time
(``commitlog_roll_interval_ms``), so that a mostly empty segment does not keep old data forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .commitlog import CommitLog
from .config import StoreConfig
from .consume_queue import ConsumeQueueTable
from .disk_space import DiskSpace
from .index_service import IndexService

log = logging.getLogger(__name__)

UsageFn = Callable[[Path], float]  # the used fraction (0..1) of the disk holding a path


def disk_used_ratio(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return (usage.total - usage.free) / usage.total if usage.total else 0.0


class RetentionService:
    def __init__(
        self,
        config: StoreConfig,
        commitlog: CommitLog,
        queues: ConsumeQueueTable,
        index: IndexService,
        usage_fn: UsageFn | None = None,
        space: DiskSpace | None = None,
    ) -> None:
        self.config = config
        self.space = space
        self.commitlog = commitlog
        self.queues = queues
        self.index = index
        self.usage_fn: UsageFn = usage_fn or disk_used_ratio
        self._ratio = 0.0
        self._sampled_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def used_ratio(self, fresh: bool = False) -> float:
        now = time.monotonic()
        if fresh or now - self._sampled_at >= self.config.disk_check_interval_s:
            self._ratio = self.usage_fn(self.config.root)
            self._sampled_at = now
        return self._ratio

    def is_disk_full(self) -> bool:
        return self.used_ratio() > self.config.disk_warning_ratio

    def run_once(self, now: float | None = None) -> int:
        """One retention round; returns how many commit log segments were deleted."""
        now = time.time() if now is None else now
        expire_before = now - self.config.file_reserved_hours * 3600
        segs = self.commitlog.files.segments
        deleted = 0
        while len(segs) > 1 and deleted < self.config.delete_segments_batch_max:
            first = segs[0]
            expired = first.mtime() < expire_before
            ratio = self.used_ratio(fresh=True)
            pressure = ratio > self.config.disk_max_used_ratio
            if not expired and not pressure:
                break
            reason = "expired" if expired else f"disk {ratio:.1%} used > {self.config.disk_max_used_ratio:.0%}"
            log.info("deleting commit log segment %s (%s)", first.path.name, reason)
            self.commitlog.files.delete_first()
            deleted += 1
        if deleted:
            self.trim_logics()
            if self.space is not None:
                self.space.sample()
        return deleted

    def trim_logics(self) -> None:
        min_phy = self.commitlog.min_offset
        cq_files = 0
        for cq in self.queues.queues.values():
            cq_files += cq.delete_files_below(min_phy)
            cq.correct_min_offset(min_phy)
        index_files = self.index.delete_below(min_phy)
        log.info(
            "commit log now starts at %d; deleted %d consume queue and %d index files", min_phy, cq_files, index_files
        )

    # -- background rounds -----------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run a retention round every ``retention_interval_s`` on ``loop``."""
        if self._task is None:
            self._task = loop.create_task(self._loop(), name="krocket-retention")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_interval_s)
            try:
                self.run_once()
            except Exception:
                log.exception("retention round failed")

    @property
    def running(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel(self) -> None:
        """Cancel the rounds without awaiting them (a synchronous close)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
