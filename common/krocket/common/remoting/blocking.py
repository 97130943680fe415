"""Blocking-socket remoting for synchronous callers: one request at a time per connection, no event loop.

The blocking clients (``SyncProducer``) run their event loop in a thread of their own; handing every request
to that thread and back costs more than the request itself. For the hot path they send over these
connections instead, on the caller's thread: a connection per thread and broker address, created on first
use, a frame written with one ``sendmsg`` and frames read until the answer with the request's opaque comes.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable

from krocket.common.errors import ConnectionClosedError, FrameError, RemotingTimeoutError

from .command import MAX_FRAME_BYTES, FrameDecoder, RemotingCommand, encode_parts

_opaques = itertools.count(1)


class BlockingConnection:
    """One TCP connection to ``addr`` (``host:port``), used by one thread at a time; TLS with ``ssl_context``."""

    def __init__(
        self,
        addr: str,
        connect_timeout: float = 3.0,
        max_frame: int = MAX_FRAME_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ConnectionClosedError(f"bad broker address {addr!r}: expected host:port")
        self.addr = addr
        try:
            sock = socket.create_connection((host, int(port)), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectionClosedError(f"cannot connect to {addr}: {exc}") from None
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            except OSError as exc:  # ssl.SSLError included; the handshake runs within connect_timeout
                sock.close()
                raise ConnectionClosedError(f"cannot TLS connect to {addr}: {exc}") from None
        self._sock = sock
        self._tls = ssl_context is not None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder(max_frame)
        self._ready: list[RemotingCommand] = []

    def request(self, cmd: RemotingCommand, timeout: float) -> RemotingCommand:
        """Send ``cmd`` and return its response; raises ``RemotingTimeoutError`` or ``ConnectionClosedError``
        (after which the connection must not be used again)."""
        opaque = cmd.opaque = next(_opaques)
        head, body = encode_parts(cmd)
        deadline = time.monotonic() + timeout
        sock = self._sock
        try:
            sock.settimeout(timeout)
            if body and self._tls:  # an SSL socket has no sendmsg
                sock.sendall(head + body)
            elif body:
                sent = sock.sendmsg((head, body))
                if sent < len(head) + len(body):
                    sock.sendall((head + body)[sent:])
            else:
                sock.sendall(head)
            while True:
                for i, got in enumerate(self._ready):
                    if got.is_response and got.opaque == opaque:
                        del self._ready[: i + 1]  # older answers belong to requests that gave up waiting
                        return got
                self._ready.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(262144)
                if not data:
                    raise ConnectionClosedError(f"{self.addr} closed the connection")
                self._ready.extend(self._decoder.feed(data))
        except TimeoutError:
            raise RemotingTimeoutError(
                f"no response from {self.addr} to request code {cmd.code} within {timeout:.1f}s"
            ) from None
        except FrameError as exc:
            raise ConnectionClosedError(f"bad frame from {self.addr}: {exc}") from None
        except OSError as exc:
            raise ConnectionClosedError(f"connection to {self.addr} failed: {exc}") from None

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class BlockingConnectionPool:
    """Blocking connections per calling thread and address; a connection that failed is dropped, so the next
    request opens a new one."""

    # Called on every request before it is sent: ACL credentials sign it (krocket.common.acl).
    request_hook: Callable[[RemotingCommand], None] | None = None

    def __init__(self, connect_timeout: float = 3.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self._local = threading.local()
        self._all: set[BlockingConnection] = set()
        self._lock = threading.Lock()
        self._closed = False

    def request(self, addr: str, cmd: RemotingCommand, timeout: float) -> RemotingCommand:
        conns: dict[str, BlockingConnection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(addr)
        if conn is None:
            if self._closed:
                raise ConnectionClosedError("the blocking connection pool is closed")
            conn = conns[addr] = BlockingConnection(addr, self.connect_timeout, ssl_context=self.ssl_context)
            with self._lock:
                self._all.add(conn)
        if self.request_hook is not None:
            self.request_hook(cmd)
        try:
            return conn.request(cmd, timeout)
        except (ConnectionClosedError, RemotingTimeoutError):
            # A timed-out connection may still deliver the late answer; a fresh one is simpler than telling.
            conns.pop(addr, None)
            with self._lock:
                self._all.discard(conn)
            conn.close()
            raise

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()
