"""Suspended pulls: a pull that finds no message waits until one arrives in its queue, or its time is up."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable


class PullWaiter:
    __slots__ = ("offset", "codes", "future")

    def __init__(self, offset: int, codes: set[int] | None, future: asyncio.Future[None]) -> None:
        self.offset = offset
        self.codes = codes
        self.future = future


class LongPolling:
    """Wakes suspended pulls as soon as a matching message is dispatched to their queue."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], list[PullWaiter]] = defaultdict(list)

    async def wait(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        codes: set[int] | None,
        timeout: float,
        has_new: Callable[[], bool],
    ) -> bool:
        """Wait until a message at or past ``offset`` arrives. ``has_new`` closes the check-then-wait race."""
        return await self.wait_any([(topic, queue_id, offset)], codes, timeout, has_new)

    async def wait_any(
        self,
        watched: list[tuple[str, int, int]],
        codes: set[int] | None,
        timeout: float,
        has_new: Callable[[], bool],
    ) -> bool:
        """Wait until a message arrives in any of the ``(topic, queue, offset)`` (a pop watches every queue of its
        topic and its retry topic at once)."""
        if has_new():
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entries = [((topic, queue_id), PullWaiter(offset, codes, fut)) for topic, queue_id, offset in watched]
        for key, waiter in entries:
            self._waiters[key].append(waiter)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            for key, waiter in entries:
                self._remove(key, waiter)

    def _remove(self, key: tuple[str, int], waiter: PullWaiter) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            try:
                waiters.remove(waiter)
            except ValueError:
                pass
            if not waiters:
                self._waiters.pop(key, None)

    def notify(self, topic: str, queue_id: int, max_offset: int, tags_code: int | None) -> None:
        """A message was dispatched; ``max_offset`` is the queue's new end."""
        waiters = self._waiters.get((topic, queue_id))
        if not waiters:
            return
        for waiter in waiters:
            if waiter.future.done() or max_offset <= waiter.offset:
                continue
            if waiter.codes and tags_code is not None and tags_code not in waiter.codes:
                continue
            waiter.future.set_result(None)

    def wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_result(None)

    def suspended(self) -> int:
        return sum(len(w) for w in self._waiters.values())
