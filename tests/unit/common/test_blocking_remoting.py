"""Blocking-socket remoting against small real TCP servers on 127.0.0.1: answers matched by opaque, stale
answers skipped, timeouts, closed and garbled connections dropped from the pool."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from krocket.common.codes import FLAG_RESPONSE
from krocket.common.errors import ConnectionClosedError, RemotingTimeoutError
from krocket.common.remoting import RemotingCommand
from krocket.common.remoting.blocking import BlockingConnectionPool
from krocket.common.remoting.command import FrameDecoder, encode

Behaviour = Callable[[socket.socket, RemotingCommand], None]


def answer(conn: socket.socket, req: RemotingCommand, opaque: int | None = None, code: int = 0) -> None:
    fields = {"echo": req.ext_fields.get("n", "")}
    reply = RemotingCommand(code, req.opaque if opaque is None else opaque, FLAG_RESPONSE, fields)
    conn.sendall(encode(reply))


@pytest.fixture
def server() -> Iterator[Callable[[Behaviour], str]]:
    """Start a server whose connections hand each decoded request to a behaviour; yields a starter."""
    socks: list[socket.socket] = []

    def start(behaviour: Behaviour) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        socks.append(listener)

        def serve_conn(conn: socket.socket) -> None:
            decoder = FrameDecoder()
            with conn:
                while True:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    for req in decoder.feed(data):
                        behaviour(conn, req)

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                socks.append(conn)
                threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return f"127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for s in socks:
        s.close()


def request(n: int) -> RemotingCommand:
    return RemotingCommand(310, ext_fields={"n": str(n)}, body=b"x" * 100)


def test_answers_are_matched_by_opaque_and_stale_ones_skipped(server: Callable[[Behaviour], str]) -> None:
    def stale_first(conn: socket.socket, req: RemotingCommand) -> None:
        answer(conn, req, opaque=req.opaque - 1)  # an answer to an earlier request that gave up
        conn.sendall(encode(RemotingCommand(40, 7, 0)))  # a request from the server: not an answer
        answer(conn, req)

    addr = server(stale_first)
    pool = BlockingConnectionPool()
    try:
        for n in range(3):
            assert pool.request(addr, request(n), 2.0).ext_fields == {"echo": str(n)}
        assert len(pool._all) == 1  # one connection, reused
    finally:
        pool.close()


def test_a_silent_server_times_out_and_the_connection_is_replaced(server: Callable[[Behaviour], str]) -> None:
    calls: list[int] = []

    def silent_once(conn: socket.socket, req: RemotingCommand) -> None:
        calls.append(req.opaque)
        if len(calls) > 1:
            answer(conn, req)

    addr = server(silent_once)
    pool = BlockingConnectionPool()
    try:
        t0 = time.monotonic()
        with pytest.raises(RemotingTimeoutError, match="within 0.2s"):
            pool.request(addr, request(1), 0.2)
        assert 0.15 < time.monotonic() - t0 < 2.0
        assert pool._all == set()  # dropped
        assert pool.request(addr, request(2), 2.0).ext_fields == {"echo": "2"}
    finally:
        pool.close()


def test_closed_and_garbled_connections_raise_connection_closed(server: Callable[[Behaviour], str]) -> None:
    def hang_up(conn: socket.socket, req: RemotingCommand) -> None:
        conn.shutdown(socket.SHUT_RDWR)

    def garble(conn: socket.socket, req: RemotingCommand) -> None:
        conn.sendall(b"\x7f\xff\xff\xff garbage")

    pool = BlockingConnectionPool()
    try:
        with pytest.raises(ConnectionClosedError, match="closed the connection"):
            pool.request(server(hang_up), request(1), 2.0)
        with pytest.raises(ConnectionClosedError, match="bad frame"):
            pool.request(server(garble), request(1), 2.0)
        assert pool._all == set()
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        with pytest.raises(ConnectionClosedError, match="cannot connect"):
            pool.request(f"127.0.0.1:{free}", request(1), 1.0)
        with pytest.raises(ConnectionClosedError, match="bad broker address"):
            pool.request("no-port", request(1), 1.0)
    finally:
        pool.close()


def test_each_thread_gets_its_own_connection(server: Callable[[Behaviour], str]) -> None:
    addr = server(answer)
    pool = BlockingConnectionPool()
    results: list[str] = []

    def worker(k: int) -> None:
        for n in range(20):
            results.append(pool.request(addr, request(k * 100 + n), 2.0).ext_fields["echo"])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert sorted(results) == sorted(str(k * 100 + n) for k in range(3) for n in range(20))
        assert len(pool._all) == 3
    finally:
        pool.close()
    with pytest.raises(ConnectionClosedError, match="closed"):
        pool.request(addr, request(1), 1.0)
