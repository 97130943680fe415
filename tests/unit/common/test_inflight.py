"""Requests in flight: the per-connection table (futures and callbacks, one timeout sweep) and the callback-driven
request path of ``Connection`` (``start_request``, corked writes) over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging

import pytest

from krocket.common.codes import FLAG_RESPONSE
from krocket.common.errors import ConnectionClosedError, RemotingTimeoutError
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand, RemotingServer
from krocket.common.remoting.command import encode_parts
from krocket.common.remoting.inflight import InFlight

Outcome = tuple[RemotingCommand | None, BaseException | None]


def response(opaque: int, code: int = 0) -> RemotingCommand:
    return RemotingCommand(code, opaque, FLAG_RESPONSE)


class Recorder:
    """A response callback that keeps what it was given, and an event once it got ``expect`` outcomes."""

    def __init__(self, expect: int = 1) -> None:
        self.outcomes: list[Outcome] = []
        self.expect = expect
        self.done = asyncio.Event()

    def __call__(self, resp: RemotingCommand | None, error: BaseException | None) -> None:
        self.outcomes.append((resp, error))
        if len(self.outcomes) >= self.expect:
            self.done.set()


async def test_a_response_resolves_its_future_or_calls_its_callback_at_once() -> None:
    table = InFlight(asyncio.get_running_loop(), "peer:1")
    fut: asyncio.Future[RemotingCommand] = asyncio.get_running_loop().create_future()
    got = Recorder()
    table.add(1, fut, 310, 3.0)
    table.add(2, got, 310, 3.0)
    assert len(table) == 2
    table.resolve(response(2, 17))
    assert got.outcomes[0][0] is not None and got.outcomes[0][0].code == 17 and got.outcomes[0][1] is None
    table.resolve(response(1))
    assert fut.result().opaque == 1
    table.resolve(response(1))  # a second (or unknown) response is dropped
    table.resolve(response(42))
    assert len(table) == 0 and len(got.outcomes) == 1


async def test_a_discarded_request_ignores_its_late_response() -> None:
    table = InFlight(asyncio.get_running_loop())
    got = Recorder()
    table.add(5, got, 11, 3.0)
    table.discard(5)
    table.resolve(response(5))
    assert got.outcomes == [] and 5 not in table


async def test_the_sweep_fails_a_request_without_reply_within_its_timeout() -> None:
    loop = asyncio.get_running_loop()
    table = InFlight(loop, "127.0.0.1:10911")
    fut: asyncio.Future[RemotingCommand] = loop.create_future()
    late = Recorder()
    answered = Recorder()
    t0 = loop.time()
    table.add(1, fut, 310, 0.05)
    table.add(2, late, 11, 0.2)
    table.add(3, answered, 11, 0.05)
    table.resolve(response(3))
    with pytest.raises(RemotingTimeoutError, match=r"no response from 127.0.0.1:10911 to request code 310 within"):
        await asyncio.wait_for(fut, 5.0)
    assert loop.time() - t0 >= 0.05  # not before its deadline
    assert 2 in table and late.outcomes == []  # the longer timeout is still waiting
    await asyncio.wait_for(late.done.wait(), 5.0)
    error = late.outcomes[0][1]
    assert late.outcomes[0][0] is None and isinstance(error, RemotingTimeoutError) and "code 11" in str(error)
    assert len(answered.outcomes) == 1 and answered.outcomes[0][1] is None
    assert len(table) == 0


async def test_a_sooner_deadline_re_arms_the_sweep() -> None:
    loop = asyncio.get_running_loop()
    table = InFlight(loop)
    slow: asyncio.Future[RemotingCommand] = loop.create_future()
    quick: asyncio.Future[RemotingCommand] = loop.create_future()
    table.add(1, slow, 11, 30.0)  # a long poll first: the sweep is armed 30 s ahead
    table.add(2, quick, 310, 0.05)  # then a send that must time out long before
    with pytest.raises(RemotingTimeoutError):
        await asyncio.wait_for(quick, 5.0)
    assert not slow.done() and 1 in table
    table.fail_all(ConnectionClosedError("closed"))
    assert isinstance(slow.exception(), ConnectionClosedError)


async def test_fail_all_fails_futures_and_callbacks_and_a_faulty_callback_harms_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    table = InFlight(loop)
    fut: asyncio.Future[RemotingCommand] = loop.create_future()
    got = Recorder()

    def faulty(resp: RemotingCommand | None, error: BaseException | None) -> None:
        raise RuntimeError("listener bug")

    table.add(1, faulty, 310, 3.0)
    table.add(2, fut, 310, 3.0)
    table.add(3, got, 310, 3.0)
    with caplog.at_level(logging.ERROR):
        table.fail_all(ConnectionClosedError("connection to x closed"))
    assert isinstance(fut.exception(), ConnectionClosedError)
    assert got.outcomes[0][0] is None and isinstance(got.outcomes[0][1], ConnectionClosedError)
    assert "response callback failed" in caplog.text
    assert len(table) == 0


# -- over real sockets ---------------------------------------------------------------------------------------
async def _echo(conn: Connection, cmd: RemotingCommand) -> RemotingCommand | None:
    if cmd.code == 99:
        return None  # never answers
    return cmd.response(0, None, {"n": cmd.ext_fields.get("n", "")}, cmd.body)


@pytest.fixture
async def server():
    srv = RemotingServer(_echo, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.close()


def encoded(conn: Connection, code: int, n: int, body: bytes = b"") -> tuple[int, bytes, bytes]:
    opaque = conn.new_opaque()
    head, tail = encode_parts(RemotingCommand(code, opaque, ext_fields={"n": str(n)}, body=body))
    return opaque, head, tail


async def test_corked_callback_requests_are_written_in_order_and_answered(server: RemotingServer) -> None:
    pool = ConnectionPool()
    try:
        conn = await pool.get(f"127.0.0.1:{server.port}")
        assert pool.cached(f"127.0.0.1:{server.port}") is conn
        got = Recorder(expect=300)
        for i in range(300):  # one loop pass: one writelines carries them all
            opaque, head, body = encoded(conn, 1, i, bytes([i % 256]) * (i % 7))
            conn.start_request(opaque, head, body, 1, 5.0, got)
        assert conn.requests_in_flight == 300
        await asyncio.wait_for(got.done.wait(), 10.0)
        responses = [r for r, e in got.outcomes if e is None and r is not None]
        assert [r.ext_fields["n"] for r in responses] == [str(i) for i in range(300)]  # the server saw them in order
        assert [r.body for r in responses] == [bytes([i % 256]) * (i % 7) for i in range(300)]
        assert conn.requests_in_flight == 0
        # an awaited request after corked ones keeps its place behind them
        opaque, head, body = encoded(conn, 1, 1000)
        later = Recorder()
        conn.start_request(opaque, head, body, 1, 5.0, later)
        awaited = await conn.request(RemotingCommand(1, ext_fields={"n": "1001"}))
        assert awaited.ext_fields["n"] == "1001" and later.outcomes[0][0] is not None
    finally:
        await pool.close()


async def test_a_callback_request_without_reply_times_out(server: RemotingServer) -> None:
    pool = ConnectionPool()
    try:
        conn = await pool.get(f"127.0.0.1:{server.port}")
        got = Recorder()
        opaque, head, body = encoded(conn, 99, 0)
        conn.start_request(opaque, head, body, 99, 0.1, got, cork=False)
        await asyncio.wait_for(got.done.wait(), 5.0)
        resp, error = got.outcomes[0]
        assert resp is None and isinstance(error, RemotingTimeoutError) and "request code 99 within 0.1s" in str(error)
        assert conn.is_open and conn.requests_in_flight == 0
    finally:
        await pool.close()


async def test_a_closed_connection_fails_every_request_in_flight(server: RemotingServer) -> None:
    pool = ConnectionPool()
    addr = f"127.0.0.1:{server.port}"
    try:
        conn = await pool.get(addr)
        got = Recorder(expect=20)
        for i in range(20):
            opaque, head, body = encoded(conn, 99, i)
            conn.start_request(opaque, head, body, 99, 30.0, got)
        awaited = asyncio.create_task(conn.request(RemotingCommand(99), timeout=30.0))
        await asyncio.sleep(0.1)
        for peer in list(server.connections):
            peer.close()
        await asyncio.wait_for(got.done.wait(), 5.0)
        assert all(r is None and isinstance(e, ConnectionClosedError) for r, e in got.outcomes)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(awaited, 5.0)
        assert pool.cached(addr) is None
        opaque, head, body = encoded(conn, 1, 0)
        with pytest.raises(ConnectionClosedError):
            conn.start_request(opaque, head, body, 1, 1.0, got)
    finally:
        await pool.close()
