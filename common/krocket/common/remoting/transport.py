"""Remoting transport on ``asyncio.Protocol``: many requests in flight per connection, matched by opaque.

Both ends of a connection can send requests: brokers send NOTIFY_CONSUMER_IDS_CHANGED to clients on the
connection the client opened. A malformed or oversize frame closes that one connection and is logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from krocket.common.codes import FLAG_ONEWAY, ResponseCode
from krocket.common.errors import (
    ConnectionClosedError,
    FrameError,
    KrocketError,
    RemotingTimeoutError,
)
from krocket.common.remoting.command import MAX_FRAME_BYTES, FrameDecoder, RemotingCommand, encode_parts
from krocket.common.remoting.tls import PermissiveServer, TlsMode, start_server

log = logging.getLogger(__name__)

# A handler answers a request right away (a RemotingCommand, or None for no answer) or later (an awaitable,
# run as a task). Answering right away is the fast path: no task, replies written together.
RequestHandler = Callable[["Connection", RemotingCommand], "RemotingCommand | None | Awaitable[RemotingCommand | None]"]
CloseCallback = Callable[["Connection"], None]

_WRITE_HIGH_WATER = 4 * 1024 * 1024


class Connection(asyncio.Protocol):
    """One remoting connection. ``handler`` answers requests from the peer."""

    def __init__(
        self,
        handler: RequestHandler | None = None,
        max_frame: int = MAX_FRAME_BYTES,
        before_reply: Callable[[], None] | None = None,
    ) -> None:
        self._handler = handler
        # Called after each batch of requests one read brought (before their replies are written) and before
        # each later reply: the broker writes its buffered appends to the files there, so that no
        # acknowledgement leaves before the data it acknowledges.
        self._before_reply = before_reply
        self._decoder = FrameDecoder(max_frame)
        self._pending: dict[int, asyncio.Future[RemotingCommand]] = {}
        self._opaque = itertools.count(1)
        self._transport: asyncio.Transport | None = None
        self._closed = asyncio.get_running_loop().create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._close_callbacks: list[CloseCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.peer = "?"
        self.attributes: dict[str, Any] = {}

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self._transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        try:
            commands = self._decoder.feed(data)
        except FrameError as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self.close()
            return
        replies: list[RemotingCommand] | None = None
        served = False
        for cmd in commands:
            if cmd.is_response:
                fut = self._pending.pop(cmd.opaque, None)
                if fut is not None and not fut.done():
                    fut.set_result(cmd)
                continue
            served = True
            reply = self._dispatch(cmd)
            if reply is not None:
                if replies is None:
                    replies = [reply]
                else:
                    replies.append(reply)
        if replies:
            self._send_replies(replies)
        elif served and self._before_reply is not None:
            self._before_reply()  # oneway or later-answered requests: the hook still runs once per batch

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        error = ConnectionClosedError(f"connection to {self.peer} closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        self._writable.set()
        if not self._closed.done():
            self._closed.set_result(None)
        for callback in self._close_callbacks:
            try:
                callback(self)
            except Exception:  # a faulty callback must not stop the others
                log.exception("close callback failed for %s", self.peer)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- serving requests ----------------------------------------------------------------------------
    def _dispatch(self, cmd: RemotingCommand) -> RemotingCommand | None:
        """Answer now (returns the reply) or start a task that answers later (returns None)."""
        if self._handler is None:
            result: Any = cmd.response(
                ResponseCode.REQUEST_CODE_NOT_SUPPORTED, f"request code {cmd.code} is not served here"
            )
        else:
            try:
                result = self._handler(self, cmd)
            except KrocketError as exc:
                result = cmd.response(exc.code, exc.message)
            except Exception as exc:
                log.exception("request code %s from %s failed", cmd.code, self.peer)
                result = cmd.response(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")
            if result is not None and not isinstance(result, RemotingCommand):
                task = asyncio.get_running_loop().create_task(self._serve(cmd, result))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return None
        if result is None or cmd.is_oneway:
            return None
        result.opaque = cmd.opaque
        return result

    async def _serve(self, cmd: RemotingCommand, pending: Awaitable[RemotingCommand | None]) -> None:
        try:
            response = await pending
        except KrocketError as exc:
            response = cmd.response(exc.code, exc.message)
        except Exception as exc:
            log.exception("request code %s from %s failed", cmd.code, self.peer)
            response = cmd.response(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")
        if response is not None and not cmd.is_oneway:
            response.opaque = cmd.opaque
            self._send_replies([response])

    def _send_replies(self, replies: list[RemotingCommand]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            log.debug("%s closed before %d replies were written", self.peer, len(replies))
            return
        if self._before_reply is not None:
            self._before_reply()
        parts: list[bytes] = []
        for reply in replies:
            head, body = encode_parts(reply)
            parts.append(head)
            if body:
                parts.append(body)
        transport.writelines(parts)

    # -- sending ------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, cmd: RemotingCommand) -> None:
        """Write one command now (no waiting for buffer space)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError(f"connection to {self.peer} is closed")
        head, body = encode_parts(cmd)
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)

    async def request(self, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
        """Send a request and wait for its response."""
        if not self._writable.is_set():
            await self._writable.wait()
        opaque = cmd.opaque = next(self._opaque)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[RemotingCommand] = loop.create_future()
        self._pending[opaque] = fut
        # A timer instead of asyncio.wait_for: one call_later per request is much cheaper on the hot path.
        timer = loop.call_later(timeout, _expire, fut)
        try:
            self.send(cmd)
            return await fut
        except RemotingTimeoutError:
            raise RemotingTimeoutError(
                f"no response from {self.peer} to request code {cmd.code} within {timeout:.1f}s"
            ) from None
        finally:
            timer.cancel()
            self._pending.pop(opaque, None)

    async def oneway(self, cmd: RemotingCommand) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        cmd.opaque = next(self._opaque)
        cmd.flag |= FLAG_ONEWAY
        self.send(cmd)

    # -- lifecycle -------------------------------------------------------------------------------------
    def on_close(self, callback: CloseCallback) -> None:
        self._close_callbacks.append(callback)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


def _expire(fut: asyncio.Future[RemotingCommand]) -> None:
    if not fut.done():
        fut.set_exception(RemotingTimeoutError("request timed out"))


class RemotingServer:
    """A TCP server whose connections answer requests through ``handler``; TLS in ``tls_mode`` with
    ``ssl_context`` (required unless the mode is disabled, see ``krocket.common.remoting.tls``)."""

    def __init__(
        self,
        handler: RequestHandler,
        host: str = "0.0.0.0",
        port: int = 0,
        on_connect: Callable[[Connection], None] | None = None,
        before_reply: Callable[[], None] | None = None,
        tls_mode: TlsMode = TlsMode.DISABLED,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self._before_reply = before_reply
        self.host = host
        self.port = port
        self._on_connect = on_connect
        self.tls_mode = tls_mode
        self._ssl_context = ssl_context
        self._server: asyncio.Server | PermissiveServer | None = None
        self.connections: set[Connection] = set()

    def _make_connection(self) -> Connection:
        conn = Connection(self._handler, before_reply=self._before_reply)
        self.connections.add(conn)
        conn.on_close(self.connections.discard)
        if self._on_connect is not None:
            self._on_connect(conn)
        return conn

    async def start(self) -> int:
        self._server = await start_server(
            self._make_connection, self.host, self.port, self.tls_mode, self._ssl_context, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
            self._server = None


class ConnectionPool:
    """Client side: one connection per address, opened on first use and re-opened after a close; over TLS
    when given a client ``ssl_context`` (``krocket.common.remoting.tls.client_context``)."""

    def __init__(
        self,
        handler: RequestHandler | None = None,
        connect_timeout: float = 3.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self._connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, addr: str) -> Connection:
        conn = self._connections.get(addr)
        if conn is not None and conn.is_open:
            return conn
        lock = self._locks.setdefault(addr, asyncio.Lock())
        async with lock:
            conn = self._connections.get(addr)
            if conn is not None and conn.is_open:
                return conn
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise KrocketError(f"address {addr!r} is not host:port")
            loop = asyncio.get_running_loop()
            try:
                tls = self.ssl_context
                _, opened = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Connection(self._handler),
                        host,
                        int(port),
                        ssl=tls,
                        server_hostname=host if tls is not None else None,
                        ssl_handshake_timeout=self._connect_timeout if tls is not None else None,
                    ),
                    self._connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                what = "TLS " if self.ssl_context is not None else ""
                raise ConnectionClosedError(f"cannot {what}connect to {addr}: {exc or 'timed out'}") from None
            self._connections[addr] = opened
            return opened

    async def request(self, addr: str, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
        conn = await self.get(addr)
        return await conn.request(cmd, timeout)

    async def oneway(self, addr: str, cmd: RemotingCommand) -> None:
        conn = await self.get(addr)
        await conn.oneway(cmd)

    def drop(self, addr: str) -> None:
        conn = self._connections.pop(addr, None)
        if conn is not None:
            conn.close()

    def addresses(self) -> list[str]:
        return [a for a, c in self._connections.items() if c.is_open]

    async def close(self) -> None:
        conns = list(self._connections.values())
        self._connections.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.wait_closed(), 1.0)
            except TimeoutError:
                conn.abort()
