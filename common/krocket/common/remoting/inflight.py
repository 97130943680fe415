"""Requests in flight on one connection, by opaque: each waits in a future or a callback, with a deadline.

No timer per request: one sweep timer per table, armed at the earliest deadline (re-armed only when a request
comes due sooner than the armed time), fails what is overdue with ``RemotingTimeoutError``. A response resolves
its waiter at once: a future gets its result, a callback is called right there (``callback(response, None)``;
on failure ``callback(None, error)``), so a callback-driven sender needs no task, coroutine or timer per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from krocket.common.errors import RemotingTimeoutError
from krocket.common.remoting.command import RemotingCommand

log = logging.getLogger(__name__)

ResponseCallback = Callable[[RemotingCommand | None, BaseException | None], None]
Waiter = asyncio.Future[RemotingCommand] | ResponseCallback

# The sweep never runs more often than this (seconds), so a burst of short timeouts costs few wake-ups.
MIN_SWEEP_INTERVAL_S = 0.005


class InFlight:
    """The requests of one connection waiting for their responses."""

    __slots__ = ("_entries", "_loop", "_sweep_at", "_timer", "peer")

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: str = "?") -> None:
        self._loop = loop
        # opaque -> (waiter, deadline in loop time, request code, timeout): the code and timeout for the error
        self._entries: dict[int, tuple[Waiter, float, int, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sweep_at = float("inf")
        self.peer = peer

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, opaque: int) -> bool:
        return opaque in self._entries

    def add(self, opaque: int, waiter: Waiter, code: int, timeout: float) -> None:
        """Wait for the response to ``opaque`` for at most ``timeout`` seconds."""
        deadline = self._loop.time() + timeout
        self._entries[opaque] = (waiter, deadline, code, timeout)
        if deadline < self._sweep_at:
            self._arm(deadline)

    def discard(self, opaque: int) -> None:
        """Stop waiting for ``opaque`` (its waiter gave up); a late response is then ignored."""
        self._entries.pop(opaque, None)

    def resolve(self, response: RemotingCommand) -> None:
        """Hand a response to the waiter of its opaque; one nobody waits for (any more) is dropped."""
        entry = self._entries.pop(response.opaque, None)
        if entry is not None:
            _wake(entry[0], response, None)

    def fail_all(self, error: BaseException) -> None:
        """Fail every request in flight (the connection closed)."""
        entries, self._entries = self._entries, {}
        self._disarm()
        for waiter, _, _, _ in entries.values():
            _wake(waiter, None, error)

    def sweep(self) -> None:
        """Fail the overdue requests with ``RemotingTimeoutError``; re-arm for the earliest deadline left."""
        self._timer = None
        self._sweep_at = float("inf")
        now = self._loop.time()
        overdue: list[int] = []
        earliest = float("inf")
        for opaque, entry in self._entries.items():
            deadline = entry[1]
            if deadline <= now:
                overdue.append(opaque)
            elif deadline < earliest:
                earliest = deadline
        expired = [self._entries.pop(opaque) for opaque in overdue]
        if earliest != float("inf"):
            self._arm(earliest)
        for waiter, _, code, timeout in expired:
            error = RemotingTimeoutError(f"no response from {self.peer} to request code {code} within {timeout:.1f}s")
            _wake(waiter, None, error)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        when = max(when, self._loop.time() + MIN_SWEEP_INTERVAL_S)
        self._sweep_at = when
        self._timer = self._loop.call_at(when, self.sweep)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sweep_at = float("inf")


def _wake(waiter: Waiter, response: RemotingCommand | None, error: BaseException | None) -> None:
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            if error is None:
                waiter.set_result(response)  # type: ignore[arg-type]
            else:
                waiter.set_exception(error)
        return
    try:
        waiter(response, error)
    except Exception:  # a faulty callback must not break the connection's reading
        log.exception("response callback failed")
