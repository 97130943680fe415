"""TLS for remoting and replication, in RocketMQ's three server modes.

- ``disabled``: plain TCP only.
- ``permissive``: TLS and plain TCP on one port. Each accepted connection is peeked at: a first byte of 0x16 (a
  TLS handshake record) gets TLS, anything else is served plain; for clients that cannot do TLS (the RocketMQ
  C++ client) beside those that do.
- ``enforcing``: TLS only; a plain client fails the handshake and is closed.

Clients connect with TLS when given a client context (``client_context``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from krocket.common.errors import ConfigError

log = logging.getLogger(__name__)

TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
FIRST_BYTE_TIMEOUT_S = 10.0  # a permissive port waits this long for a new connection's first byte


class TlsMode(enum.Enum):
    DISABLED = "disabled"
    PERMISSIVE = "permissive"
    ENFORCING = "enforcing"

    @classmethod
    def parse(cls, value: str) -> TlsMode:
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"TLS mode must be one of {names}, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class TlsServerSettings:
    """A server's TLS settings: the mode, its certificate chain and key, and optionally the CA that client
    certificates must chain to (then a client certificate is required)."""

    mode: TlsMode = TlsMode.DISABLED
    cert_path: str | None = None
    key_path: str | None = None
    client_ca_path: str | None = None

    def context(self) -> ssl.SSLContext | None:
        """The server context, None when TLS is disabled. Raises ``ConfigError`` naming what is missing."""
        if self.mode is TlsMode.DISABLED:
            return None
        if not self.cert_path or not self.key_path:
            raise ConfigError(
                f"TLS mode {self.mode.value} needs a certificate and a key (tlsServerCertPath, tlsServerKeyPath)"
            )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.cert_path, self.key_path)
            if self.client_ca_path:
                ctx.load_verify_locations(self.client_ca_path)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS certificate {self.cert_path} / key {self.key_path}"
                f" (tlsServerCertPath / tlsServerKeyPath / tlsServerTrustCertPath): {exc}"
            ) from None
        return ctx


def client_context(
    ca_path: str | None = None,
    verify: bool = True,
    cert_path: str | None = None,
    key_path: str | None = None,
) -> ssl.SSLContext:
    """A client context: the server's certificate checked against ``ca_path`` (default: the system's CAs)
    unless ``verify`` is False; ``cert_path``/``key_path`` for servers that require client certificates."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_path)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_path:
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS client certificate {cert_path}: {exc}") from None
    return ctx


def _require_file(key: str, path: str) -> str:
    if not path:
        raise ConfigError(f"{key} is not set")
    if not Path(path).is_file():
        raise ConfigError(f"{key}: no such file {path}")
    return path


def server_settings(
    mode: str,
    cert_path: str = "",
    key_path: str = "",
    trust_cert_path: str = "",
    need_client_auth: bool = False,
) -> TlsServerSettings:
    """A server's TLS settings from its configuration keys (RocketMQ's names: ``tlsMode``,
    ``tlsServerCertPath``, ``tlsServerKeyPath``, ``tlsServerTrustCertPath``, ``tlsServerNeedClientAuth``);
    a ``ConfigError`` names the key that is wrong. A certificate and key are required unless the mode is
    disabled; the trust certificate (the CA of client certificates) only when client authentication is on."""
    try:
        parsed = TlsMode.parse(mode)
    except ConfigError as exc:
        raise ConfigError(f"tlsMode: {exc}") from None
    if parsed is TlsMode.DISABLED:
        return TlsServerSettings()
    cert = _require_file("tlsServerCertPath", cert_path)
    key = _require_file("tlsServerKeyPath", key_path)
    client_ca = _require_file("tlsServerTrustCertPath", trust_cert_path) if need_client_auth else None
    return TlsServerSettings(parsed, cert, key, client_ca)


def https_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """The server context of an HTTPS port (``httpTlsEnable``): the remoting port's certificate and key."""
    settings = TlsServerSettings(
        TlsMode.ENFORCING,
        _require_file("tlsServerCertPath", cert_path),
        _require_file("tlsServerKeyPath", key_path),
    )
    ctx = settings.context()
    assert ctx is not None
    return ctx


def client_settings_context(
    enable: bool, trust_cert_path: str = "", cert_path: str = "", key_path: str = ""
) -> ssl.SSLContext | None:
    """The client context a server uses for its own connections out (``tlsEnable``,
    ``tlsClientTrustCertPath``, ``tlsClientCertPath``, ``tlsClientKeyPath``), None when TLS is off. Without a
    trust certificate the system's CAs are trusted."""
    if not enable:
        return None
    ca = _require_file("tlsClientTrustCertPath", trust_cert_path) if trust_cert_path else None
    cert = _require_file("tlsClientCertPath", cert_path) if cert_path else None
    key = _require_file("tlsClientKeyPath", key_path) if key_path else None
    return client_context(ca, cert_path=cert, key_path=key)


TLS_ENABLE_ENV = "KROCKET_TLS_ENABLE"  # krocket.client connects with TLS when this is 1/true/yes/on ...
TLS_CA_ENV = "KROCKET_TLS_CA"  # ... trusting this CA file (default: the system's CAs)


def client_tls(
    tls: bool | ssl.SSLContext | None = None,
    ca_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ssl.SSLContext | None:
    """krocket.client's ``tls`` option as a client context: an ``SSLContext`` is used as it is, True connects
    with TLS trusting ``ca_path`` (default: ``KROCKET_TLS_CA``, else the system's CAs), False connects plain;
    None (the default) follows ``KROCKET_TLS_ENABLE``."""
    env = os.environ if environ is None else environ
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is None:
        tls = env.get(TLS_ENABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not tls:
        return None
    ca = ca_path or env.get(TLS_CA_ENV) or None
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"TLS CA file {ca} does not exist (tls_ca / {TLS_CA_ENV})")
    return client_context(ca)


ProtocolFactory = Callable[[], asyncio.Protocol]


class PermissiveServer:
    """A listening socket that serves TLS or plain TCP per connection, by the connection's first byte.

    Offers what callers use of ``asyncio.Server``: ``sockets``, ``close()`` and ``wait_closed()``."""

    def __init__(self, sock: socket.socket, protocol_factory: ProtocolFactory, ctx: ssl.SSLContext) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._ctx = ctx
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.sockets = [sock]

    def start(self) -> None:
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(), name="krocket-tls-accept")

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                log.warning("accept failed on %s: %s", self._sock.getsockname(), exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.wait_for(_peek_first_byte(loop, conn), FIRST_BYTE_TIMEOUT_S)
        except (TimeoutError, OSError):
            conn.close()
            return
        if first is None:  # closed before sending anything
            conn.close()
            return
        tls = first == TLS_HANDSHAKE_RECORD
        try:
            await loop.connect_accepted_socket(self._factory, conn, ssl=self._ctx if tls else None)
        except (OSError, ssl.SSLError) as exc:
            log.info("%s connection from %s failed: %s", "TLS" if tls else "plain", _peer(conn), exc)
            conn.close()

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._accepting, *self._pending) if t is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._accepting = None


async def _peek_first_byte(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> int | None:
    """The connection's first byte without consuming it; None when the peer closed first."""
    conn.setblocking(False)
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    data = conn.recv(1, socket.MSG_PEEK)
    return data[0] if data else None


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


async def start_server(
    protocol_factory: ProtocolFactory,
    host: str,
    port: int,
    mode: TlsMode,
    ctx: ssl.SSLContext | None,
    backlog: int = 1024,
) -> asyncio.Server | PermissiveServer:
    """Listen on ``host:port`` in ``mode`` (``ctx`` is required unless the mode is disabled)."""
    loop = asyncio.get_running_loop()
    if mode is TlsMode.DISABLED:
        return await loop.create_server(protocol_factory, host, port, reuse_address=True, backlog=backlog)
    if ctx is None:
        raise ConfigError(f"TLS mode {mode.value} needs a server certificate")
    if mode is TlsMode.ENFORCING:
        return await loop.create_server(protocol_factory, host, port, reuse_address=True, backlog=backlog, ssl=ctx)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    server = PermissiveServer(sock, protocol_factory, ctx)
    server.start()
    return server
