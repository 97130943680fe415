"""An opt-in low-latency idle strategy for asyncio servers (``idleSpinMicros``): once the loop has handled its
I/O events and runs out of work, poll without blocking for up to N microseconds before blocking in ``epoll_wait``.

On a virtual machine an idle vCPU halts and is woken by an interrupt for the next packet, several VM exits
per request; a server that keeps polling for a short while after it answered skips that for a peer that sends
again quickly (one-at-a-time request/response). It is Aeron's busy-spin-then-back-off idle strategy, or
netty's epoll busy-wait, bounded in time:

- the window opens at the first ``select(timeout > 0)`` after a select that returned events (the loop has run
  the callbacks those events caused: the request is answered) and lasts N us; within it, ``select`` polls with
  timeout 0 until an event arrives (the window opens again after it is handled), the window closes or
  ``timeout`` is up, and then blocks for what is left of ``timeout``;
- outside the window it is the wrapped selector's ``select``, unchanged: with no traffic the loop blocks as
  before (about 0 % CPU); timers end the wait when due, as without the spin; timers and signals do not open a
  window, only I/O events (the self-pipe of signals and ``call_soon_threadsafe`` included) do;
- ``select(0)`` (the loop has callbacks ready) is passed through as one poll.

The cost is CPU: each quiet gap after a burst of events burns up to N us, so the worst case is one request
every ~N us (a core kept busy for a few thousand requests a second). Measured figures: docs/idle-spin.md.
uvloop has no hook before its ``epoll_wait`` (no idle or check handle in its Python API), so the strategy
needs the asyncio loop (``idle_spin_loop``); ``check_loop_supports_spin`` refuses it under uvloop.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Mapping
from typing import Any

from krocket.common.errors import ConfigError

MAX_IDLE_SPIN_MICROS = 1_000_000  # one second: a larger window is a typo (ms for us), not a strategy


def idle_spin_micros_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a spin window (None: it is a whole number in 0..MAX_IDLE_SPIN_MICROS);
    ``value`` may be the text of a command-line flag."""
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            return f"must be a whole number of microseconds, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number of microseconds, got {value!r}"
    if not 0 <= value <= MAX_IDLE_SPIN_MICROS:
        return f"must be between 0 (off) and {MAX_IDLE_SPIN_MICROS} microseconds, got {value}"
    return None


def check_idle_spin_micros(value: int, name: str = "idleSpinMicros") -> int:
    """``value`` if it is a valid spin window; ``ConfigError`` naming ``name`` otherwise."""
    problem = idle_spin_micros_problem(value)
    if problem is not None:
        raise ConfigError(f"{name} {problem}")
    return value


class IdleSpinSelector(selectors.BaseSelector):
    """A selector that spins (polls with timeout 0) for up to ``spin_micros`` once the events it returned have
    been handled, then blocks.

    It wraps ``inner`` (by default a new ``selectors.DefaultSelector``) and owns it: ``close`` closes it.
    Counters: ``spin_polls`` (zero-timeout polls made while spinning), ``spin_hits`` (selects that an event
    answered while spinning) and ``blocking_selects`` (selects that went on to block with a timeout > 0).
    """

    def __init__(self, spin_micros: int, inner: selectors.BaseSelector | None = None) -> None:
        self.spin_micros = check_idle_spin_micros(spin_micros)
        self._spin_s = spin_micros / 1_000_000
        self._inner = inner if inner is not None else selectors.DefaultSelector()
        self._armed = False  # the last select returned events: the next idle select opens a window
        self._spin_until = float("-inf")  # time.monotonic() the open window closes at
        self.spin_polls = 0
        self.spin_hits = 0
        self.blocking_selects = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        inner = self._inner
        if timeout is not None and timeout <= 0:
            events = inner.select(0)
            if events:
                self._armed = True
            return events
        now = time.monotonic()
        if self._armed:
            self._armed = False
            self._spin_until = now + self._spin_s
        if now < self._spin_until:
            end = None if timeout is None else now + timeout
            limit = self._spin_until if end is None else min(self._spin_until, end)
            while True:
                events = inner.select(0)
                self.spin_polls += 1
                if events:
                    self._armed = True
                    self.spin_hits += 1
                    return events
                now = time.monotonic()
                if now >= limit:
                    break
            if end is not None:
                timeout = end - now
                if timeout <= 0:
                    return []
        self.blocking_selects += 1
        events = inner.select(timeout)
        if events:
            self._armed = True
        return events

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


def idle_spin_loop(spin_micros: int) -> asyncio.AbstractEventLoop:
    """A new asyncio event loop whose selector spins ``spin_micros`` after each event (0: a plain loop)."""
    check_idle_spin_micros(spin_micros)
    if spin_micros == 0:
        return asyncio.SelectorEventLoop()
    return asyncio.SelectorEventLoop(IdleSpinSelector(spin_micros))


def check_loop_supports_spin(spin_micros: int) -> None:
    """``ConfigError`` when a spin is asked for but this process's event loop policy is not asyncio's own
    (uvloop: it offers no hook before it blocks, so the spin could not be applied)."""
    if spin_micros and type(asyncio.get_event_loop_policy()) is not asyncio.DefaultEventLoopPolicy:
        raise ConfigError(
            f"idleSpinMicros {spin_micros} needs the asyncio event loop: uvloop has no hook to poll before it "
            "blocks; run with --loop asyncio, or set idleSpinMicros to 0"
        )
