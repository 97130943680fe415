"""The idle-spin selector (idleSpinMicros) on real sockets: it answers as select does, passes zero-timeout
selects through, blocks once its window after the last event is over, and keeps timers and signals working."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from krocket.common.errors import ConfigError
from krocket.common.remoting.idle_spin import (
    MAX_IDLE_SPIN_MICROS,
    IdleSpinSelector,
    check_idle_spin_micros,
    check_loop_supports_spin,
    idle_spin_loop,
    idle_spin_micros_problem,
)


class RecordingSelector(selectors.DefaultSelector):
    """The platform's selector, recording the timeout of every select it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        return super().select(timeout)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _spin_selector(spin_micros: int, sock: socket.socket) -> tuple[IdleSpinSelector, RecordingSelector]:
    inner = RecordingSelector()
    sel = IdleSpinSelector(spin_micros, inner)
    sel.register(sock, selectors.EVENT_READ, "data")
    return sel, inner


def _event_then_drain(sel: IdleSpinSelector, reader: socket.socket, writer: socket.socket) -> None:
    """One event through ``sel``: its spin window starts now."""
    writer.send(b"x")
    assert [(k.fileobj, ev) for k, ev in sel.select(5)] == [(reader, selectors.EVENT_READ)]
    reader.recv(16)


def test_it_returns_the_events_select_returns(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    plain = selectors.DefaultSelector()
    plain.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "data")
    sel = IdleSpinSelector(200)
    sel.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "data")
    try:
        b.send(b"hello")
        expected = [(k.fileobj, k.events, k.data, ev) for k, ev in plain.select(1)]
        got = [(k.fileobj, k.events, k.data, ev) for k, ev in sel.select(1)]
        assert got == expected == [(a, 3, "data", selectors.EVENT_READ | selectors.EVENT_WRITE)]
        assert sel.get_key(a).data == "data" and [k.fileobj for k in sel.get_map().values()] == [a]
        sel.modify(a, selectors.EVENT_READ, "read only")
        assert [(k.data, ev) for k, ev in sel.select(0)] == [("read only", selectors.EVENT_READ)]
        a.recv(16)
        assert sel.select(0) == [] and plain.select(0) == [(plain.get_key(a), selectors.EVENT_WRITE)]
        sel.unregister(a)
        assert len(sel.get_map()) == 0
    finally:
        plain.close()
        sel.close()


def test_an_event_during_the_spin_is_answered_by_a_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel, inner = _spin_selector(MAX_IDLE_SPIN_MICROS, a)  # a one-second window: the writer lands inside it
    try:
        _event_then_drain(sel, a, b)
        inner.timeouts.clear()
        threading.Timer(0.02, b.send, (b"y",)).start()
        events = sel.select(None)
        assert [(k.fileobj, ev) for k, ev in events] == [(a, selectors.EVENT_READ)]
        assert sel.spin_hits == 1 and sel.spin_polls == len(inner.timeouts) > 1
        assert set(inner.timeouts) == {0}, "within the window it only polls"
    finally:
        sel.close()


def test_zero_timeout_selects_pass_through(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel, inner = _spin_selector(MAX_IDLE_SPIN_MICROS, a)
    try:
        _event_then_drain(sel, a, b)  # inside the window from here on
        inner.timeouts.clear()
        blocking_before = sel.blocking_selects
        assert sel.select(0) == []
        assert sel.select(-1) == []
        b.send(b"z")
        assert [k.fileobj for k, _ev in sel.select(0)] == [a]
        assert inner.timeouts == [0, 0, 0], "one poll each, no spin"
        assert sel.spin_polls == 0 and sel.blocking_selects == blocking_before
    finally:
        sel.close()


def test_it_blocks_for_the_rest_of_the_timeout_after_the_window(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel, inner = _spin_selector(2000, a)  # 2 ms window, 0.5 s timeout
    try:
        _event_then_drain(sel, a, b)
        inner.timeouts.clear()
        assert sel.select(0.5) == []
        *polls, blocking = inner.timeouts
        assert polls and set(polls) == {0}, "it spun first"
        assert blocking is not None and 0 < blocking < 0.5, "then blocked for what was left of the timeout"
        assert sel.blocking_selects == 2  # the first select of _event_then_drain blocked too: no event before it
    finally:
        sel.close()


def test_once_the_window_is_spent_it_blocks_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel, inner = _spin_selector(1000, a)
    try:
        assert sel.select(0.01) == [] and inner.timeouts == [0.01], "no event yet: no window"
        _event_then_drain(sel, a, b)
        assert sel.select(0.05) == [], "spends the 1 ms window, then blocks the rest"
        inner.timeouts.clear()
        polls_before = sel.spin_polls
        assert sel.select(0.02) == []
        assert inner.timeouts == [0.02] and sel.spin_polls == polls_before, "no event since: no new window"
    finally:
        sel.close()


def test_the_window_opens_when_the_loop_is_idle_not_when_the_event_came(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    sel, inner = _spin_selector(1000, a)
    try:
        _event_then_drain(sel, a, b)
        time.sleep(0.01)  # the event's callbacks take ten times the window
        inner.timeouts.clear()
        assert sel.select(0.05) == []
        *polls, blocking = inner.timeouts
        assert polls and set(polls) == {0}, "the first idle select after the event spins"
        assert blocking is not None and 0 < blocking < 0.05
    finally:
        sel.close()


def test_with_no_timeout_it_blocks_without_one_after_the_window(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel, inner = _spin_selector(1000, a)
    try:
        _event_then_drain(sel, a, b)
        inner.timeouts.clear()
        threading.Timer(0.3, b.send, (b"late",)).start()
        assert [k.fileobj for k, _ev in sel.select(None)] == [a]
        assert set(inner.timeouts[:-1]) <= {0} and inner.timeouts[-1] in (None, 0)
    finally:
        sel.close()


def test_a_timeout_shorter_than_the_window_ends_the_spin(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel, inner = _spin_selector(MAX_IDLE_SPIN_MICROS, a)
    try:
        _event_then_drain(sel, a, b)
        inner.timeouts.clear()
        blocking_before = sel.blocking_selects
        assert sel.select(0.01) == []
        assert set(inner.timeouts) == {0}, "the timeout ran out while it spun: no blocking select after it"
        assert sel.blocking_selects == blocking_before
    finally:
        sel.close()


LIMIT = 1_000_000  # round trips a test's traffic stops at if its timer or signal never comes


def _echo(sock: socket.socket) -> None:
    """A blocking echo peer on its own thread, until the other end closes."""
    with sock:
        while data := sock.recv(64):
            sock.sendall(data)


async def _ping_pong_until(stop: asyncio.Event, limit: int) -> int:
    """Round trips with an echo thread until ``stop`` is set (at most ``limit``): each reply is waited for in
    the selector, and steady traffic keeps the selector inside its spin window."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    peer = threading.Thread(target=_echo, args=(b,), daemon=True)
    peer.start()
    try:
        trips = 0
        while not stop.is_set() and trips < limit:
            await loop.sock_sendall(a, b"p")
            await loop.sock_recv(a, 1)
            trips += 1
        return trips
    finally:
        a.close()
        peer.join(5)


def test_timers_fire_on_time_while_traffic_keeps_it_spinning() -> None:
    loop = idle_spin_loop(MAX_IDLE_SPIN_MICROS)
    try:

        async def scenario() -> tuple[float, float, int]:
            fired = asyncio.Event()
            due = loop.time() + 0.05
            fired_at: list[float] = []

            def on_timer() -> None:
                fired_at.append(loop.time())
                fired.set()

            loop.call_at(due, on_timer)
            trips = await _ping_pong_until(fired, limit=LIMIT)
            return due, fired_at[0], trips

        due, fired_at, trips = loop.run_until_complete(scenario())
        assert fired_at >= due - loop._clock_resolution, "not early"
        assert trips < LIMIT, "the timer fired while round trips kept the loop spinning"
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert isinstance(loop._selector, IdleSpinSelector) and loop._selector.spin_hits > 0  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_timers_and_sleeps_fire_when_idle_with_spin_on() -> None:
    loop = idle_spin_loop(500)
    try:

        async def scenario() -> list[str]:
            order: list[str] = []
            loop.call_later(0.03, order.append, "later")
            loop.call_soon(order.append, "soon")
            await asyncio.sleep(0.06)
            order.append("slept")
            return order

        assert loop.run_until_complete(scenario()) == ["soon", "later", "slept"]
    finally:
        loop.close()


def test_signals_are_handled_while_spinning_and_while_blocked() -> None:
    loop = idle_spin_loop(20_000)
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, got.set)
    try:
        selector = loop._selector  # type: ignore[attr-defined]

        async def scenario() -> None:
            loop.call_later(0.02, os.kill, os.getpid(), signal.SIGUSR1)  # arrives amid traffic: spinning
            await asyncio.gather(asyncio.wait_for(got.wait(), 10), _ping_pong_until(got, limit=LIMIT))
            got.clear()
            blocking_before = selector.blocking_selects
            await asyncio.sleep(0.1)  # past the 20 ms window: the selector blocks
            assert selector.blocking_selects > blocking_before
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            await asyncio.wait_for(got.wait(), 10)

        loop.run_until_complete(scenario())
        assert got.is_set()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.close()


def test_zero_means_a_plain_asyncio_loop() -> None:
    loop = idle_spin_loop(0)
    try:
        assert not isinstance(loop._selector, IdleSpinSelector)  # type: ignore[attr-defined]
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()


@pytest.mark.parametrize(
    "value, problem",
    [
        (-1, "must be between 0 (off) and 1000000 microseconds, got -1"),
        ("-5", "must be between 0 (off) and 1000000 microseconds, got -5"),
        (MAX_IDLE_SPIN_MICROS + 1, "must be between 0 (off)"),
        ("1.5", "must be a whole number of microseconds, got '1.5'"),
        ("fifty", "must be a whole number of microseconds, got 'fifty'"),
        (True, "must be a whole number of microseconds"),
        (2.0, "must be a whole number of microseconds"),
    ],
)
def test_bad_spin_windows_are_named(value: object, problem: str) -> None:
    found = idle_spin_micros_problem(value)
    assert found is not None and problem in found
    with pytest.raises(ConfigError, match=r"^idleSpinMicros must be"):
        check_idle_spin_micros(value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        IdleSpinSelector(value)  # type: ignore[arg-type]


def test_good_spin_windows_pass() -> None:
    assert [idle_spin_micros_problem(v) for v in (0, 50, "200", MAX_IDLE_SPIN_MICROS)] == [None] * 4
    assert check_idle_spin_micros(200) == 200


def test_uvloop_is_refused_with_a_spin_and_accepted_without() -> None:
    uvloop = pytest.importorskip("uvloop")
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        check_loop_supports_spin(0)
        with pytest.raises(ConfigError, match="needs the asyncio event loop: uvloop has no hook"):
            check_loop_supports_spin(50)
    finally:
        asyncio.set_event_loop_policy(before)
    check_loop_supports_spin(50)
