"""Flushing to disk (RocketMQ's ``FlushRealTimeService`` and ``GroupCommitService``).

ASYNC_FLUSH: a background task fdatasyncs the commit log every ``flush_interval_ms`` when it is dirty.
SYNC_FLUSH: group commit. ``wait_flushed(offset)`` parks the caller (a future); parked replies
(``krocket.broker.reply_parking``) ask for a round with ``request_flush`` and hear of each round's result through a
flushed listener (``add_flushed_listener``), without a future each. One flusher runs one fdatasync at a time,
and each covers every record appended before it started, so requests that arrive during a sync share the
next one: whatever asks during a round gets another round right after it. A round with little to sync
(``sync_flush_inline_bytes``, one small message say) runs its fdatasync on the event loop thread: that costs
~0.1 ms, less than handing it to a thread and back. Larger rounds, and
consume queues, index and checkpoint (flushed by their own, slower loop), run in worker threads on
duplicated descriptors, so the event loop keeps serving and segments may be closed or deleted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from krocket.common.errors import FlushDiskTimeoutError
from krocket.common.metrics import Histogram

from .commitlog import CommitLog
from .config import StoreConfig

log = logging.getLogger(__name__)

INLINE_SLOW_S = 0.002  # inline fdatasyncs slower than this ...
INLINE_SLOW_STREAK = 3  # ... this many times in a row (one alone is as likely the loop thread being preempted) ...
INLINE_BACKOFF_S = 1.0  # ... move the rounds of the next second to the worker thread

# Returns dup'ed descriptors to fdatasync and a function to run (in the worker) once they are synced.
LogicsPrepare = Callable[[], tuple[list[int], Callable[[], None]]]


def fdatasync_all(fds: list[int]) -> None:
    try:
        for fd in fds:
            os.fdatasync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def fdatasync_timed(fds: list[int]) -> float:
    """``fdatasync_all``, returning the seconds the syncs took (run in a worker; observed on the loop thread)."""
    began = time.perf_counter()
    fdatasync_all(fds)
    return time.perf_counter() - began


def _expire(fut: asyncio.Future[None], offset: int, config: StoreConfig) -> None:
    if not fut.done():
        fut.set_exception(
            FlushDiskTimeoutError(
                f"flushing the commit log up to offset {offset} took over {config.sync_flush_timeout_s} s"
            )
        )


class FlushService:
    def __init__(
        self,
        config: StoreConfig,
        commitlog: CommitLog,
        prepare_logics: LogicsPrepare,
    ) -> None:
        self.config = config
        self.commitlog = commitlog
        self.prepare_logics = prepare_logics
        self._commit_pool = ThreadPoolExecutor(1, thread_name_prefix="krocket-flush-commitlog")
        self._logics_pool = ThreadPoolExecutor(1, thread_name_prefix="krocket-flush-logics")
        self._commit_lock: asyncio.Lock | None = None
        self._logics_lock: asyncio.Lock | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flushed_listeners: list[Callable[[int], None]] = []
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._round_soon = False  # a round asked for by request_flush is scheduled
        self._tasks: list[asyncio.Task[None]] = []
        self._inline_off_until = 0.0
        self._slow_inline_streak = 0  # inline syncs in a row slower than INLINE_SLOW_S
        self.sync_rounds = 0
        # Commit log rounds, exported on /metrics: a round from its start until its offset is marked flushed (a
        # worker round's hand-off included), and the fdatasyncs alone. Observed on the loop thread only.
        self.flush_latency = Histogram()
        self.fsync_latency = Histogram()

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def _locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        if self._commit_lock is None or self._logics_lock is None:
            self._commit_lock, self._logics_lock = asyncio.Lock(), asyncio.Lock()
        return self._commit_lock, self._logics_lock

    # -- one round each --------------------------------------------------------------------------------
    def _flush_inline(self) -> bool:
        """One group commit round on the loop thread if little is pending, no threaded round runs and the
        disk has been quick: ``INLINE_SLOW_STREAK`` inline syncs in a row slower than ``INLINE_SLOW_S`` send the
        rounds of the next ``INLINE_BACKOFF_S`` to the worker thread, and the next slow one after that does again,
        so a slow disk stalls the loop a few ms once a second at most. (A single slow sync does not: on a busy
        machine that is as often the loop thread waiting for a CPU, and the worker's hand-offs cost more.)"""
        lock, _ = self._locks()
        if lock.locked():
            return False
        now = time.monotonic()
        if now < self._inline_off_until:
            return False
        before = self.commitlog.flushed
        target = self.commitlog.sync_inline(self.config.sync_flush_inline_bytes)
        if target is None:
            return False
        took = time.monotonic() - now
        if target > before:
            self.flush_latency.observe(took)
            self.fsync_latency.observe(took)
        if took <= INLINE_SLOW_S:
            self._slow_inline_streak = 0
        else:
            self._slow_inline_streak += 1
            if self._slow_inline_streak >= INLINE_SLOW_STREAK:
                self._inline_off_until = now + took + INLINE_BACKOFF_S
                log.info(
                    "%d fdatasyncs on the event loop in a row took over %.0f ms (the last %.1f ms); syncing in the "
                    "worker thread for %.0f s",
                    self._slow_inline_streak,
                    INLINE_SLOW_S * 1000,
                    took * 1000,
                    INLINE_BACKOFF_S,
                )
        if target > before:
            self.sync_rounds += 1
        self._wake(self.commitlog.flushed)
        return True

    async def flush_commitlog(self) -> int:
        """One fdatasync covering everything appended so far; returns the offset now on disk."""
        lock, _ = self._locks()
        async with lock:
            began = time.perf_counter()
            target, fds = self.commitlog.sync_targets()
            if fds:
                synced = await asyncio.get_running_loop().run_in_executor(self._commit_pool, fdatasync_timed, fds)
                self.sync_rounds += 1
                self.fsync_latency.observe(synced)
                self.flush_latency.observe(time.perf_counter() - began)
            self.commitlog.mark_flushed(target)
            self._wake(self.commitlog.flushed)
            return target

    async def flush_logics(self) -> None:
        _, lock = self._locks()
        async with lock:
            fds, finish = self.prepare_logics()

            def work() -> None:
                fdatasync_all(fds)
                finish()

            await asyncio.get_running_loop().run_in_executor(self._logics_pool, work)

    # -- group commit ----------------------------------------------------------------------------------
    async def wait_flushed(self, offset: int) -> None:
        if self.commitlog.flushed >= offset:
            return
        if self._kick is None:  # no background flusher: flush right here
            await asyncio.wait_for(self.flush_commitlog(), self.config.sync_flush_timeout_s)
            if self.commitlog.flushed < offset:
                raise FlushDiskTimeoutError(f"commit log not flushed up to {offset}")
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((offset, fut))
        self._kick.set()
        timer = loop.call_later(self.config.sync_flush_timeout_s, _expire, fut, offset, self.config)
        try:
            await fut
        finally:
            timer.cancel()

    def add_flushed_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(flushed_offset)`` after every flush round (group commit or background flush)."""
        self._flushed_listeners.append(listener)

    def request_flush(self) -> None:
        """SYNC_FLUSH: have a round run on the next loop turn (so after the caller's commit): inline when it may
        (``_flush_inline``), else by the group commit task, right after its current round if one is running
        (what arrived meanwhile is not covered by it). One callback however many ask before it runs; no future."""
        if self._round_soon or self._loop is None or not self.config.sync_flush:
            return
        self._round_soon = True
        self._loop.call_soon(self._requested_round)

    def _requested_round(self) -> None:
        self._round_soon = False
        if self._loop is None:
            return  # stopped meanwhile: the stop flushed what there was
        try:
            if self._flush_inline():
                return
        except Exception:
            log.exception("commit log group commit failed")
        kick = self._kick
        if kick is not None:
            kick.set()  # the worker thread's round (the group commit task)

    def _wake(self, flushed: int) -> None:
        for listener in self._flushed_listeners:
            try:
                listener(flushed)
            except Exception:  # one faulty listener must not hold back the others or the waiters
                log.exception("flushed listener failed")
        if not self._waiters:
            return
        keep = []
        for offset, fut in self._waiters:
            if offset <= flushed:
                if not fut.done():
                    fut.set_result(None)
            elif not fut.done():
                keep.append((offset, fut))
        self._waiters = keep

    # -- background loops ------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._tasks:
            return
        self._kick = asyncio.Event()
        self._loop = loop
        if self.config.sync_flush:
            self._tasks.append(loop.create_task(self._group_commit_loop(), name="krocket-group-commit"))
        else:
            self._tasks.append(loop.create_task(self._async_flush_loop(), name="krocket-async-flush"))
        self._tasks.append(loop.create_task(self._logics_loop(), name="krocket-flush-logics"))

    async def _group_commit_loop(self) -> None:
        kick = self._kick
        assert kick is not None
        while True:
            await kick.wait()
            kick.clear()
            try:
                if not self._flush_inline():
                    await self.flush_commitlog()
            except Exception:
                log.exception("commit log group commit failed")
                await asyncio.sleep(0.1)
            if self._waiters and self.commitlog.wrote > self.commitlog.flushed and not self.commitlog.stuck:
                kick.set()  # appended during the round (a stuck buffer, disk full, waits for its timeout)

    async def _async_flush_loop(self) -> None:
        interval = self.config.flush_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                if self.commitlog.wrote > self.commitlog.flushed:
                    await self.flush_commitlog()
            except Exception:
                log.exception("commit log flush failed")

    async def _logics_loop(self) -> None:
        interval = self.config.flush_logics_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_logics()
            except Exception:
                log.exception("consume queue / index flush failed")

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        # Whoever still waits gets a last flush rather than a timeout.
        await self.flush_commitlog()
        self._kick = self._loop = None

    def cancel(self) -> None:
        """Cancel the loops without awaiting them (a synchronous close)."""
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self._kick = self._loop = None

    def shutdown(self) -> None:
        self._commit_pool.shutdown(wait=True)
        self._logics_pool.shutdown(wait=True)
