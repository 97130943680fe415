"""The remoting transport's bounds, over real loopback sockets: every request answered, limits enforced."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Awaitable

import pytest

from krocket.common.codes import ResponseCode
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand, RemotingServer
from krocket.common.remoting.command import FrameDecoder, encode
from krocket.common.remoting.limits import BufferBudget, ConnectionLimits, LogLimiter
from krocket.common.remoting.transport import expired_connections

KIB = 1024


def _handler(conn: Connection, cmd: RemotingCommand) -> RemotingCommand | Awaitable[RemotingCommand]:
    """Code 2 answers later (from a task), the others at once: 3 with an unencodable reply, 4 with a body of
    ``size`` bytes, any other echoes the remark and the fields."""
    if cmd.code == 2:
        return _later(cmd)
    if cmd.code == 3:
        reply = cmd.response(ResponseCode.SUCCESS)
        reply.ext_fields = {"bad": b"bytes are not JSON"}  # type: ignore[dict-item]
        return reply
    if cmd.code == 4:
        return cmd.response(ResponseCode.SUCCESS, None, None, b"x" * int(cmd.ext_fields["size"]))
    if cmd.code == 5:
        json.loads(cmd.body)  # a hostile body nests deeper than the recursion limit
    if cmd.code == 6:
        return _held(conn, cmd)
    return cmd.response(ResponseCode.SUCCESS, cmd.remark, cmd.ext_fields)


async def _later(cmd: RemotingCommand) -> RemotingCommand:
    await asyncio.sleep(0)
    return cmd.response(ResponseCode.SUCCESS, cmd.remark, cmd.ext_fields)


IN_FLIGHT: list[int] = []


async def _held(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    """Answered after a while, like a long-polled pull; ``IN_FLIGHT`` records how many were held at once."""
    IN_FLIGHT.append(IN_FLIGHT[-1] + 1 if IN_FLIGHT else 1)
    await asyncio.sleep(0.05)
    IN_FLIGHT.append(IN_FLIGHT[-1] - 1)
    return cmd.response(ResponseCode.SUCCESS)


async def _serve(limits: ConnectionLimits | None = None) -> RemotingServer:
    server = RemotingServer(_handler, "127.0.0.1", 0, limits=limits)
    await server.start()
    return server


async def _closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True when the server closed the connection (EOF or reset) within ``timeout``."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


async def test_replies_with_surrogates_are_answered_now_and_later() -> None:
    server = await _serve()
    pool = ConnectionPool()
    addr = f"127.0.0.1:{server.port}"
    try:
        for code in (1, 2):  # answered at once and from a task (the name server's and the broker's async path)
            cmd = RemotingCommand(code, remark="\ud800", ext_fields={"topic": "a\udfffb"})
            got = await pool.request(addr, cmd, 3.0)
            assert (got.code, got.remark, got.ext_fields) == (ResponseCode.SUCCESS, "\ud800", {"topic": "a\udfffb"})
        broken = await pool.request(addr, RemotingCommand(3), 3.0)
        assert broken.code == ResponseCode.SYSTEM_ERROR and "could not be encoded" in (broken.remark or "")
        assert (await pool.request(addr, RemotingCommand(1), 3.0)).code == ResponseCode.SUCCESS
    finally:
        await pool.close()
        await server.close()


async def test_bad_frames_close_the_connection_with_a_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    server = await _serve()
    caplog.set_level(logging.WARNING, "krocket.common.remoting.transport")
    try:
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(struct.pack(">ii", 12, 8) + b'{"code":1e400}'[:8])
            assert await _closed(reader)
            writer.close()
        lines = [r for r in caplog.records if "closing connection" in r.getMessage()]
        assert len(lines) <= 1 and not any(r.exc_info for r in caplog.records)
    finally:
        await server.close()


async def test_a_handler_that_hits_the_recursion_limit_answers_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await _serve()
    pool = ConnectionPool()
    try:
        deep = b"[" * 100_000 + b"]" * 100_000
        reply = await pool.request(f"127.0.0.1:{server.port}", RemotingCommand(5, body=deep), 3.0)
        assert (reply.code, reply.remark) == (ResponseCode.SYSTEM_ERROR, "the request nests too deeply to parse")
        assert not any(r.exc_info for r in caplog.records)
    finally:
        await pool.close()
        await server.close()


def test_log_limiter_counts_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    limiter = LogLimiter(logging.getLogger("limiter-test"), period_s=0.05)
    for i in range(100):
        limiter.warning("kind", "trouble %d", i)
    time.sleep(0.06)
    limiter.warning("kind", "trouble again")
    limiter.warning("other", "other trouble")
    assert [r.getMessage() for r in caplog.records] == [
        "trouble 0",
        "trouble again (99 more like it in the last 0s not logged)",
        "other trouble",
    ]


async def test_the_buffer_budget_closes_the_connection_that_would_exceed_it() -> None:
    server = await _serve(ConnectionLimits(buffer_budget_bytes=1024 * KIB))
    try:
        frame = encode(RemotingCommand(1, body=b"y" * (700 * KIB)))
        first_reader, first = await asyncio.open_connection("127.0.0.1", server.port)
        first.write(frame[: 600 * KIB])
        await first.drain()
        second_reader, second = await asyncio.open_connection("127.0.0.1", server.port)
        second.write(frame[: 600 * KIB])
        assert await _closed(second_reader)
        assert server.budget.used <= 1024 * KIB
        first.write(frame[600 * KIB :])  # the first completes its frame and is answered
        decoder = FrameDecoder()
        got: list[RemotingCommand] = []
        while not got:
            got = decoder.feed(await asyncio.wait_for(first_reader.read(65536), 5))
        assert got[0].code == ResponseCode.SUCCESS and len(got[0].body) == 0
        assert server.budget.used == 0
        first.close()
        second.close()
    finally:
        await server.close()


async def test_incomplete_frames_and_idle_connections_are_closed_after_their_timeouts() -> None:
    limits = ConnectionLimits(incomplete_frame_timeout_s=0.3, idle_timeout_s=0.8)
    server = await _serve(limits)
    try:
        start = time.monotonic()
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", server.port)
        slow.write(struct.pack(">i", 1000) + b"abc")
        assert await _closed(slow_reader, 3.0)
        assert 0.3 <= time.monotonic() - start < 2.5
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        assert await _closed(idle_reader, 3.0)
        assert 0.7 <= time.monotonic() - start < 3.0
        pool = ConnectionPool()  # a connection that talks more often than the idle timeout stays open
        conn = await pool.get(f"127.0.0.1:{server.port}")
        for _ in range(6):
            assert (await conn.request(RemotingCommand(1), 2.0)).code == ResponseCode.SUCCESS
            await asyncio.sleep(0.25)
        assert conn.is_open
        await pool.close()
        slow.close()
        idle.close()
    finally:
        await server.close()


def test_expiry_rules() -> None:
    class Fake:
        def __init__(self, pending_since: float | None, last_active: float) -> None:
            self.pending_since = pending_since
            self.last_active = last_active
            self.peer = "p"

    limits = ConnectionLimits(incomplete_frame_timeout_s=30, idle_timeout_s=120)
    held, idle, busy = Fake(0.0, 50.0), Fake(None, 0.0), Fake(100.0, 110.0)
    expired = expired_connections({held, idle, busy}, limits, 121.0)  # type: ignore[arg-type]
    assert {(id(c), why.split()[0]) for c, why in expired} == {(id(held), "an"), (id(idle), "idle")}


async def test_max_connections_closes_new_ones_at_once() -> None:
    server = await _serve(ConnectionLimits(max_connections=3))
    try:
        opened = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        await asyncio.sleep(0.05)
        extra_reader, extra = await asyncio.open_connection("127.0.0.1", server.port)
        assert await _closed(extra_reader, 2.0)
        assert len(server.connections) == 3
        opened[0][1].close()
        await asyncio.sleep(0.1)
        again_reader, again = await asyncio.open_connection("127.0.0.1", server.port)
        again.write(encode(RemotingCommand(1, opaque=9)))
        reply = FrameDecoder().feed(await asyncio.wait_for(again_reader.read(65536), 3))
        assert reply and reply[0].opaque == 9
        for _, writer in (*opened[1:], (extra_reader, extra), (again_reader, again)):
            writer.close()
    finally:
        await server.close()


async def test_a_peer_that_does_not_read_replies_does_not_grow_the_write_buffer() -> None:
    server = await _serve(ConnectionLimits(write_high_water_bytes=256 * KIB))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=64 * KIB)
        requests = b"".join(
            encode(RemotingCommand(4, opaque=i, ext_fields={"size": str(256 * KIB)})) for i in range(400)
        )
        writer.write(requests)  # 400 replies of 256 KiB = 100 MiB asked for, none read
        await asyncio.sleep(1.0)
        (conn,) = server.connections
        assert conn.buffered_write_bytes < 2 * 1024 * KIB
        decoder = FrameDecoder(max_frame=1024 * KIB)
        opaques: list[int] = []
        while len(opaques) < 400:  # reading them all, every request is answered in order
            opaques += [r.opaque for r in decoder.feed(await asyncio.wait_for(reader.read(1024 * KIB), 5))]
        assert opaques == list(range(400))
        writer.close()
    finally:
        await server.close()


async def test_requests_in_flight_per_connection_are_bounded() -> None:
    server = await _serve(ConnectionLimits(max_requests_in_flight=50))
    IN_FLIGHT.clear()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(encode(RemotingCommand(6, opaque=i)) for i in range(400)))  # one read, 400 held
        writer.write(encode(RemotingCommand(1, opaque=400)))
        decoder = FrameDecoder()
        opaques: set[int] = set()
        while len(opaques) < 401:
            opaques |= {r.opaque for r in decoder.feed(await asyncio.wait_for(reader.read(65536), 5))}
        assert opaques == set(range(401)) and max(IN_FLIGHT) == 50
        writer.close()
    finally:
        await server.close()


def test_budget_accounting() -> None:
    budget = BufferBudget(100)
    assert budget.charge(60) and not budget.charge(50) and budget.charge(-50) and budget.used == 60


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        ConnectionLimits(idle_timeout_s=0)
    assert ConnectionLimits().sweep_interval_s == 1.0
    assert ConnectionLimits(incomplete_frame_timeout_s=0.4).sweep_interval_s == pytest.approx(0.1)
