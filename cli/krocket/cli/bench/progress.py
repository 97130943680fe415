"""The counters of a bench run and their periodic one-line display on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time


class Progress:
    """Counters of a run and a periodic one-line display of them on stderr."""

    def __init__(self, enabled: bool, interval: float = 1.0) -> None:
        self.enabled = enabled
        self.interval = interval
        self.phase = ""
        self.produced = 0
        self.consumed = 0
        self._task: asyncio.Task[None] | None = None
        self._tty = enabled and sys.stderr.isatty()

    def log(self, message: str) -> None:
        if self.enabled:
            self._clear()
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self._tty:
            print("\r\033[K", end="", file=sys.stderr)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._show())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._clear()

    async def _show(self) -> None:
        last = (time.perf_counter(), self.produced, self.consumed)
        while True:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            dt = now - last[0]
            p_rate = (self.produced - last[1]) / dt if dt > 0 else 0
            c_rate = (self.consumed - last[2]) / dt if dt > 0 else 0
            last = (now, self.produced, self.consumed)
            text = (
                f"[bench] {self.phase}: produced {self.produced} ({p_rate / 1000:.1f} k/s), "
                f"consumed {self.consumed} ({c_rate / 1000:.1f} k/s)"
            )
            if self._tty:
                print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)
            else:
                print(text, file=sys.stderr, flush=True)
