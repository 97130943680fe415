"""Remoting transport on ``asyncio.Protocol``: many requests in flight per connection, matched by opaque.

Both ends of a connection can send requests: brokers send NOTIFY_CONSUMER_IDS_CHANGED to clients on the
connection the client opened. A malformed or oversize frame closes that one connection and is logged (at
most one line per kind of trouble per 10 s, see ``LogLimiter``). A reply that cannot be encoded is answered
with SYSTEM_ERROR instead: no request is left unanswered. A server's connections live within its
``ConnectionLimits`` (connections, buffered bytes, timeouts, reading paused while replies are not read).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from krocket.common.codes import FLAG_ONEWAY, FLAG_RESPONSE, ResponseCode
from krocket.common.errors import (
    ConnectionClosedError,
    FrameError,
    KrocketError,
)
from krocket.common.remoting.command import MAX_FRAME_BYTES, FrameDecoder, RemotingCommand, encode_parts
from krocket.common.remoting.inflight import InFlight, Waiter
from krocket.common.remoting.limits import BufferBudget, ConnectionLimits, LogLimiter
from krocket.common.remoting.response_path import AVAILABLE as RESPONSE_FAST_PATH_AVAILABLE
from krocket.common.remoting.response_path import serve_responses
from krocket.common.remoting.tls import PermissiveServer, TlsMode, start_server

log = logging.getLogger(__name__)
limited_log = LogLimiter(log)

# A handler answers a request right away (a RemotingCommand, or None for no answer) or later (an awaitable,
# run as a task). Answering right away is the fast path: no task, replies written together.
RequestHandler = Callable[["Connection", RemotingCommand], "RemotingCommand | None | Awaitable[RemotingCommand | None]"]
CloseCallback = Callable[["Connection"], None]
# A per-read fast path (server side): given the connection and its receive buffer (what earlier reads left plus
# this read), it serves whole frames from the front of the buffer in place, writes their replies itself
# (``write_raw``) and returns how many bytes it consumed; what it leaves is decoded and served as usual. It
# raises nothing on bad input: a frame it does not understand is left for the decoder.
FastPath = Callable[["Connection", bytearray], int]

_WRITE_HIGH_WATER = 4 * 1024 * 1024


class Connection(asyncio.Protocol):
    """One remoting connection. ``handler`` answers requests from the peer."""

    def __init__(
        self,
        handler: RequestHandler | None = None,
        max_frame: int = MAX_FRAME_BYTES,
        before_reply: Callable[[], None] | None = None,
        budget: BufferBudget | None = None,
        write_high_water: int = _WRITE_HIGH_WATER,
        pause_reading_on_backlog: bool = False,
        max_in_flight: int = 0,
        fast_path: FastPath | None = None,
    ) -> None:
        self._handler = handler
        self._fast_path = fast_path
        # Called after each batch of requests one read brought (before their replies are written) and before
        # each later reply: the broker writes its buffered appends to the files there, so that no
        # acknowledgement leaves before the data it acknowledges.
        self._before_reply = before_reply
        self._decoder = FrameDecoder(max_frame)
        loop = asyncio.get_running_loop()
        self._loop = loop
        # Requests sent, waiting for their responses (one sweep timer for their timeouts, no timer each).
        self._inflight = InFlight(loop)
        self._opaque = itertools.count(1)
        # Frames to write at the end of this loop pass (``send_corked``): one writelines for all of them.
        self._cork: list[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed = loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._close_callbacks: list[CloseCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.peer = "?"
        self.attributes: dict[str, Any] = {}
        # Resource accounting (server side): bytes charged to the server's budget, since when an incomplete
        # frame has been held, when bytes last moved either way (loop time).
        self._budget = budget
        self._charged = 0
        self._write_high_water = write_high_water
        self._pause_reading_on_backlog = pause_reading_on_backlog
        self._loop_time = loop.time
        self.pending_since: float | None = None
        self.last_active = self._loop_time()
        # Requests read but not served yet (server side): the peer reads no replies, or ``max_in_flight`` of its
        # requests are being answered later (tasks) already. Reading is paused meanwhile.
        self._backlog: list[RemotingCommand] | None = None
        self._max_in_flight = max_in_flight
        self._reading_held = False  # ``hold_reading``: a service holds too much for this peer already

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = self._inflight.peer = f"{peer[0]}:{peer[1]}"
        self._transport.set_write_buffer_limits(high=self._write_high_water)

    def data_received(self, data: bytes) -> None:
        now = self.last_active = self._loop_time()
        decoder = self._decoder
        fast_path = self._fast_path
        try:
            if fast_path is not None and self._backlog is None:
                commands = self._feed_fast(fast_path, decoder, data)
            else:
                commands = decoder.feed(data)
        except FrameError as exc:
            limited_log.warning("bad frame", "closing connection from %s: %s", self.peer, exc)
            self._drop()
            return
        pending = decoder.pending_bytes
        if pending:
            if commands or self.pending_since is None:
                self.pending_since = now
            if self._budget is not None and pending != self._charged and not self._charge(pending):
                return
        elif self.pending_since is not None:
            self.pending_since = None
            if self._charged:
                self._charge(0)
        if commands:
            if self._backlog is not None:  # still waiting for the peer to read: keep the order
                self._backlog.extend(commands)
            else:
                self._serve_commands(commands)

    def _feed_fast(self, fast_path: FastPath, decoder: FrameDecoder, data: bytes) -> list[RemotingCommand]:
        """The fast path serves what it can from the front of the buffer; the next frame is decoded and served the
        usual way, then the fast path goes on after it. Returns the commands left to serve (the last frame of the
        read, or all the rest once serving them holds a backlog)."""
        buf = decoder.buffer
        buf += data
        while True:
            if self._pause_reading_on_backlog and not self._writable.is_set():
                rest = decoder.feed(b"")  # the peer reads no replies: the rest waits, reading pauses
                if rest:
                    self._hold(rest)
                return []
            consumed = fast_path(self, buf)
            if consumed:
                del buf[:consumed]
            cmd = decoder.next_command()
            if cmd is None:
                return []
            if not buf:
                return [cmd]
            self._serve_commands([cmd])
            if self._backlog is not None:
                return decoder.feed(b"")

    def _serve_commands(self, commands: list[RemotingCommand]) -> None:
        """Serve one read's commands. Server side, once this batch's replies fill the write buffer past the
        high-water mark, the rest waits in ``_backlog`` until the peer reads (``resume_writing``); so it does
        while ``max_in_flight`` requests are answered later (until one of them is done)."""
        replies: list[RemotingCommand] | None = None
        served = False
        reply_bytes = 0
        limit_backlog = self._pause_reading_on_backlog
        max_in_flight = self._max_in_flight
        for index, cmd in enumerate(commands):
            if cmd.is_response:
                self._inflight.resolve(cmd)
                continue
            if max_in_flight and len(self._tasks) >= max_in_flight:
                if replies:
                    self._send_replies(replies)
                elif served and self._before_reply is not None:
                    self._before_reply()
                self._hold(commands[index:])
                return
            served = True
            reply = self._dispatch(cmd)
            if reply is not None:
                if replies is None:
                    replies = [reply]
                else:
                    replies.append(reply)
                if limit_backlog:
                    reply_bytes += len(reply.body)
                    if reply_bytes > self._write_high_water:
                        self._send_replies(replies)
                        replies, served, reply_bytes = None, False, 0
                        if not self._writable.is_set() and index + 1 < len(commands):
                            self._hold(commands[index + 1 :])
                            return
        if replies:
            self._send_replies(replies)
        elif served and self._before_reply is not None:
            self._before_reply()  # oneway or later-answered requests: the hook still runs once per batch

    def _charge(self, pending: int) -> bool:
        """Account the decoder's ``pending`` bytes to the server's budget; over it, close this connection."""
        budget = self._budget
        assert budget is not None
        delta = pending - self._charged
        self._charged = pending
        if budget.charge(delta):
            return True
        limited_log.warning(
            "buffer budget",
            "closing connection from %s: its incomplete frame (%d bytes) takes the server's buffered bytes over "
            "the budget of %d",
            self.peer,
            pending,
            budget.limit,
        )
        self._drop()
        return False

    def _drop(self) -> None:
        """Close after a protocol or resource violation: buffered bytes are released now, not at close."""
        if self._budget is not None and self._charged:
            self._budget.charge(-self._charged)
            self._charged = 0
        self._decoder = FrameDecoder(self._decoder.max_frame)
        self.pending_since = None
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._budget is not None and self._charged:
            self._budget.charge(-self._charged)
            self._charged = 0
        self._cork = None
        self._inflight.fail_all(ConnectionClosedError(f"connection to {self.peer} closed"))
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
        if self._pause_reading_on_backlog and self._transport is not None:
            self._transport.pause_reading()  # a peer that does not read replies gets no more requests served

    def resume_writing(self) -> None:
        self._writable.set()
        self._release()

    def _hold(self, commands: list[RemotingCommand]) -> None:
        self._backlog = commands
        if self._transport is not None:
            self._transport.pause_reading()

    def _release(self) -> None:
        """Serve the held requests once the peer reads and fewer than ``max_in_flight`` are in flight; then
        read again."""
        if not self._writable.is_set() or (self._max_in_flight and len(self._tasks) >= self._max_in_flight):
            return
        backlog = self._backlog
        if backlog is not None:
            self._backlog = None
            self._serve_commands(backlog)
        transport = self._transport
        if (
            self._backlog is not None
            or not self._writable.is_set()
            or not self._pause_reading_on_backlog
            or self._reading_held
        ):
            return
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def hold_reading(self, held: bool) -> None:
        """Stop (True) or resume (False) reading requests for a service that holds too much for this peer (the
        broker's parked replies); the connection's own pauses (unread replies, requests in flight) still apply."""
        self._reading_held = held
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if held:
            transport.pause_reading()
        elif self._backlog is None and self._writable.is_set():
            transport.resume_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._backlog is not None:
            self._release()

    @property
    def buffered_write_bytes(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

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
            except RecursionError:
                result = self._too_deep(cmd)
            except Exception as exc:
                limited_log.exception("handler failure", "request code %s from %s failed", cmd.code, self.peer)
                result = cmd.response(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")
            if result is not None and not isinstance(result, RemotingCommand):
                task = asyncio.get_running_loop().create_task(self._serve(cmd, result))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
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
        except RecursionError:
            response = self._too_deep(cmd)
        except Exception as exc:
            limited_log.exception("handler failure", "request code %s from %s failed", cmd.code, self.peer)
            response = cmd.response(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")
        if response is not None and not cmd.is_oneway:
            if not isinstance(response, RemotingCommand):
                limited_log.warning("handler result", "request code %s: handler returned %r", cmd.code, response)
                response = cmd.response(ResponseCode.SYSTEM_ERROR, "the handler gave no response")
            response.opaque = cmd.opaque
            self._send_replies([response])

    def _too_deep(self, cmd: RemotingCommand) -> RemotingCommand:
        """A handler hit the recursion limit: a body nested too deeply (hostile input, not a bug to trace)."""
        limited_log.warning("too deep", "request code %s from %s nests too deeply to parse", cmd.code, self.peer)
        return cmd.response(ResponseCode.SYSTEM_ERROR, "the request nests too deeply to parse")

    def _send_replies(self, replies: list[RemotingCommand]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            log.debug("%s closed before %d replies were written", self.peer, len(replies))
            return
        if self._before_reply is not None:
            self._before_reply()
        parts: list[bytes] = []
        for reply in replies:
            try:
                head, body = encode_parts(reply)
            except Exception as exc:  # a handler's bug must not leave the request unanswered
                limited_log.warning("unencodable reply", "reply to %s cannot be encoded: %r", self.peer, exc)
                head, body = encode_parts(_encode_failure(reply, exc))
            parts.append(head)
            if body:
                parts.append(body)
        transport.writelines(parts)
        self.last_active = self._loop_time()

    def write_raw(self, data: bytes | bytearray) -> None:
        """Write encoded reply frames as they are (a fast path's or parked replies); dropped once closed."""
        transport = self._transport
        if transport is None or transport.is_closing():
            log.debug("%s closed before %d reply bytes were written", self.peer, len(data))
            return
        transport.write(data)
        self.last_active = self._loop_time()

    # -- sending ------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def is_writable(self) -> bool:
        """Whether the peer reads fast enough: False while the write buffer is over its high-water mark."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    @property
    def requests_in_flight(self) -> int:
        return len(self._inflight)

    def send(self, cmd: RemotingCommand) -> None:
        """Write one command now (no waiting for buffer space); after the corked frames, when there are some."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError(f"connection to {self.peer} is closed")
        head, body = encode_parts(cmd)
        cork = self._cork
        if cork is not None:  # keep the order of what was sent
            cork.append(head)
            if body:
                cork.append(body)
        elif body:
            transport.writelines((head, body))
        else:
            transport.write(head)
        self.last_active = self._loop_time()

    def send_corked(self, head: bytes, body: bytes) -> None:
        """Queue an encoded frame (``head`` then ``body``); every frame queued in one loop pass goes out with one
        ``writelines`` at its end."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError(f"connection to {self.peer} is closed")
        cork = self._cork
        if cork is None:
            self._cork = [head, body] if body else [head]
            self._loop.call_soon(self._flush_cork)
        else:
            cork.append(head)
            if body:
                cork.append(body)

    def _flush_cork(self) -> None:
        parts, self._cork = self._cork, None
        transport = self._transport
        if parts and transport is not None and not transport.is_closing():
            transport.writelines(parts)
            self.last_active = self._loop_time()

    def new_opaque(self) -> int:
        return next(self._opaque)

    @property
    def max_frame(self) -> int:
        """The largest frame this connection reads."""
        return self._decoder.max_frame

    def resolve(self, response: RemotingCommand) -> None:
        """Hand a response to the request waiting for it (a client-side fast path decoded it)."""
        self._inflight.resolve(response)

    def start_request(
        self, opaque: int, head: bytes, body: bytes, code: int, timeout: float, waiter: Waiter, cork: bool = True
    ) -> None:
        """Send an encoded request frame whose header carries ``opaque`` (from ``new_opaque``); its response (or
        ``RemotingTimeoutError`` after ``timeout`` seconds, or ``ConnectionClosedError``) goes to ``waiter``: a
        future, or a callback called as ``waiter(response, None)`` / ``waiter(None, error)``. No task, coroutine
        or timer per request; with ``cork`` the frame is written at the end of this loop pass with the others.
        Raises ``ConnectionClosedError`` (and registers nothing) when the connection is closed."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError(f"connection to {self.peer} is closed")
        self._inflight.add(opaque, waiter, code, timeout)
        if cork or self._cork is not None:
            self.send_corked(head, body)
        else:
            if body:
                transport.writelines((head, body))
            else:
                transport.write(head)
            self.last_active = self._loop_time()

    async def request(self, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
        """Send a request and wait for its response."""
        if not self._writable.is_set():
            await self._writable.wait()
        opaque = cmd.opaque = next(self._opaque)
        fut: asyncio.Future[RemotingCommand] = self._loop.create_future()
        self.send(cmd)
        self._inflight.add(opaque, fut, cmd.code, timeout)
        try:
            return await fut
        finally:
            self._inflight.discard(opaque)

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


def _encode_failure(reply: RemotingCommand, exc: Exception) -> RemotingCommand:
    """SYSTEM_ERROR in place of a reply that could not be encoded, in JSON (always encodable: ASCII remark)."""
    remark = f"the reply could not be encoded: {type(exc).__name__}".encode("ascii", "backslashreplace").decode()
    return RemotingCommand(ResponseCode.SYSTEM_ERROR, reply.opaque, FLAG_RESPONSE, {}, remark)


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
        limits: ConnectionLimits | None = None,
        fast_path: FastPath | None = None,
    ) -> None:
        self._handler = handler
        self._before_reply = before_reply
        self.fast_path = fast_path
        self.limits = limits or ConnectionLimits()
        self.budget = BufferBudget(self.limits.buffer_budget_bytes)
        self._sweeper: asyncio.TimerHandle | None = None
        self.host = host
        self.port = port
        self._on_connect = on_connect
        self.tls_mode = tls_mode
        self._ssl_context = ssl_context
        self._server: asyncio.Server | PermissiveServer | None = None
        self.connections: set[Connection] = set()

    def _make_connection(self) -> asyncio.Protocol:
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            limited_log.warning(
                "max connections", "refusing a connection: already %d, the maximum", len(self.connections)
            )
            return _Refused()
        conn = Connection(
            self._handler,
            limits.max_pending_frame_bytes,
            self._before_reply,
            self.budget,
            limits.write_high_water_bytes,
            pause_reading_on_backlog=True,
            max_in_flight=limits.max_requests_in_flight,
            fast_path=self.fast_path,
        )
        self.connections.add(conn)
        conn.on_close(self.connections.discard)
        if self._on_connect is not None:
            self._on_connect(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(limits.sweep_interval_s, self._sweep)
        return conn

    def _sweep(self) -> None:
        """Close connections past a timeout; runs while there are connections."""
        self._sweeper = None
        if not self.connections:
            return
        loop = asyncio.get_running_loop()
        for conn, reason in expired_connections(self.connections, self.limits, loop.time()):
            limited_log.warning("timeout", "closing connection from %s: %s", conn.peer, reason)
            conn.abort()
        self._sweeper = loop.call_later(self.limits.sweep_interval_s, self._sweep)

    async def start(self) -> int:
        self._server = await start_server(
            self._make_connection, self.host, self.port, self.tls_mode, self._ssl_context, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
            self._server = None


def expired_connections(
    connections: set[Connection], limits: ConnectionLimits, now: float
) -> list[tuple[Connection, str]]:
    """The connections to close at ``now`` (loop time), each with why."""
    out: list[tuple[Connection, str]] = []
    incomplete_s = limits.incomplete_frame_timeout_s
    idle_s = limits.idle_timeout_s
    for conn in connections:
        since = conn.pending_since
        if since is not None and now - since > incomplete_s:
            out.append((conn, f"an incomplete frame held for over {incomplete_s:g}s"))
        elif now - conn.last_active > idle_s:
            out.append((conn, f"idle for over {idle_s:g}s"))
    return out


class _Refused(asyncio.Protocol):
    """A connection over the maximum: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


# Client connections decode responses with orjson when it is installed (``response_path``), else as usual.
_RESPONSE_FAST_PATH: FastPath | None = serve_responses if RESPONSE_FAST_PATH_AVAILABLE else None


class ConnectionPool:
    """Client side: one connection per address, opened on first use and re-opened after a close; over TLS
    when given a client ``ssl_context`` (``krocket.common.remoting.tls.client_context``)."""

    # Called on every outgoing request before it is sent: ACL credentials sign it (krocket.common.acl).
    request_hook: Callable[[RemotingCommand], None] | None = None

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

    def cached(self, addr: str) -> Connection | None:
        """The open connection to ``addr``, None when there is none yet (``get`` opens one)."""
        conn = self._connections.get(addr)
        return conn if conn is not None and conn.is_open else None

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
                        lambda: Connection(self._handler, fast_path=_RESPONSE_FAST_PATH),
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
        if self.request_hook is not None:
            self.request_hook(cmd)
        conn = await self.get(addr)
        return await conn.request(cmd, timeout)

    async def oneway(self, addr: str, cmd: RemotingCommand) -> None:
        if self.request_hook is not None:
            self.request_hook(cmd)
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
