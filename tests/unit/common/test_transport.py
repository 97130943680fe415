"""The asyncio remoting transport over real loopback sockets."""

from __future__ import annotations

import asyncio

import pytest

from krocket.common.errors import ConnectionClosedError, RemotingTimeoutError
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand, RemotingServer


async def _echo_with_delay(conn: Connection, cmd: RemotingCommand) -> RemotingCommand | None:
    delay = float(cmd.ext_fields.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay)
    if cmd.code == 99:
        return None  # never answers
    return cmd.response(0, None, {"echo": cmd.ext_fields.get("n", "")}, cmd.body)


@pytest.fixture
async def server():
    srv = RemotingServer(_echo_with_delay, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.close()


async def test_many_requests_in_flight_are_matched_by_opaque(server):
    pool = ConnectionPool()
    addr = f"127.0.0.1:{server.port}"
    try:
        # Later requests answer first: responses arrive out of order and still reach their callers.
        calls = [
            pool.request(
                addr, RemotingCommand(1, ext_fields={"n": str(i), "delay": str((50 - i) / 1000)}, body=bytes([i]))
            )
            for i in range(50)
        ]
        responses = await asyncio.gather(*calls)
        assert [r.ext_fields["echo"] for r in responses] == [str(i) for i in range(50)]
        assert [r.body for r in responses] == [bytes([i]) for i in range(50)]
        assert len(pool.addresses()) == 1  # one connection carried them all
    finally:
        await pool.close()


async def test_timeout_and_late_response_are_harmless(server):
    pool = ConnectionPool()
    addr = f"127.0.0.1:{server.port}"
    try:
        with pytest.raises(RemotingTimeoutError, match="within 0.1s"):
            await pool.request(addr, RemotingCommand(1, ext_fields={"delay": "0.3"}), timeout=0.1)
        await asyncio.sleep(0.3)  # the late response arrives and is dropped
        ok = await pool.request(addr, RemotingCommand(1, ext_fields={"n": "after"}))
        assert ok.ext_fields["echo"] == "after"
    finally:
        await pool.close()


async def test_server_can_call_the_client_on_its_connection(server):
    got: list[RemotingCommand] = []

    async def client_handler(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        got.append(cmd)
        return cmd.response(0, "client says hi")

    pool = ConnectionPool(client_handler)
    addr = f"127.0.0.1:{server.port}"
    try:
        await pool.request(addr, RemotingCommand(1))
        (server_side,) = server.connections
        response = await server_side.request(RemotingCommand(40, ext_fields={"consumerGroup": "g"}))
        assert response.remark == "client says hi" and got[0].code == 40
        await server_side.oneway(RemotingCommand(40))
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 2 and got[1].is_oneway
    finally:
        await pool.close()


async def test_closing_fails_requests_in_flight(server):
    pool = ConnectionPool()
    addr = f"127.0.0.1:{server.port}"
    try:
        pending = asyncio.create_task(pool.request(addr, RemotingCommand(99), timeout=5))
        await asyncio.sleep(0.1)
        for conn in list(server.connections):
            conn.close()
        with pytest.raises(ConnectionClosedError):
            await pending
        # The pool opens a new connection on the next request.
        assert (await pool.request(addr, RemotingCommand(1, ext_fields={"n": "1"}))).ext_fields["echo"] == "1"
    finally:
        await pool.close()


async def test_connect_to_nothing_is_a_clear_error():
    pool = ConnectionPool(connect_timeout=1)
    with pytest.raises(ConnectionClosedError, match="cannot connect to 127.0.0.1:1"):
        await pool.request("127.0.0.1:1", RemotingCommand(1))
    await pool.close()
