"""TLS server modes on a real loopback socket: disabled, permissive (TLS and plain on one port), enforcing."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import ConfigError, ConnectionClosedError, RemotingTimeoutError
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand, RemotingServer
from krocket.common.remoting.blocking import BlockingConnectionPool
from krocket.common.remoting.tls import TlsMode, TlsServerSettings, client_context, start_server

from tests.support.tls import Certificates, make_certificates


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


async def _echo(port: int, ctx: ssl.SSLContext | None) -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None), 3
    )
    try:
        writer.write(b"hello krocket")
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(13), 3)
    finally:
        writer.close()


async def _answers(port: int, ctx: ssl.SSLContext | None) -> bool:
    try:
        return await _echo(port, ctx) == b"hello krocket"
    except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
        return False


@pytest.mark.parametrize(
    ("mode", "plain_ok", "tls_ok"),
    [(TlsMode.DISABLED, True, False), (TlsMode.PERMISSIVE, True, True), (TlsMode.ENFORCING, False, True)],
)
async def test_each_mode_serves_what_it_says(certs, mode, plain_ok, tls_ok):
    settings = TlsServerSettings(mode, str(certs.server_pem), str(certs.server_pem))
    server = await start_server(Echo, "127.0.0.1", 0, mode, settings.context())
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _answers(port, None) is plain_ok
        assert await _answers(port, client_context(str(certs.ca_path))) is tls_ok
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_that_does_not_trust_the_ca_is_refused(certs, tmp_path):
    other = make_certificates(tmp_path / "other")
    settings = TlsServerSettings(TlsMode.ENFORCING, str(certs.server_pem), str(certs.server_pem))
    server = await start_server(Echo, "127.0.0.1", 0, TlsMode.ENFORCING, settings.context())
    port = server.sockets[0].getsockname()[1]
    try:
        assert not await _answers(port, client_context(str(other.ca_path)))
        assert await _answers(port, client_context(verify=False))
    finally:
        server.close()
        await server.wait_closed()


async def test_a_required_client_certificate(certs):
    settings = TlsServerSettings(TlsMode.ENFORCING, str(certs.server_pem), str(certs.server_pem), str(certs.ca_path))
    server = await start_server(Echo, "127.0.0.1", 0, TlsMode.ENFORCING, settings.context())
    port = server.sockets[0].getsockname()[1]
    try:
        assert not await _answers(port, client_context(str(certs.ca_path)))
        with_cert = client_context(str(certs.ca_path), cert_path=str(certs.client_pem))
        assert await _answers(port, with_cert)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_permissive_port_closes_a_connection_that_never_speaks(certs, monkeypatch):
    from krocket.common.remoting import tls

    monkeypatch.setattr(tls, "FIRST_BYTE_TIMEOUT_S", 0.2)
    settings = TlsServerSettings(TlsMode.PERMISSIVE, str(certs.server_pem), str(certs.server_pem))
    server = await start_server(Echo, "127.0.0.1", 0, TlsMode.PERMISSIVE, settings.context())
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(1), 3) == b""  # closed by the server
        writer.close()
        assert await _answers(port, None)
    finally:
        server.close()
        await server.wait_closed()


def test_settings_name_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="needs a certificate and a key"):
        TlsServerSettings(TlsMode.ENFORCING).context()
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        TlsServerSettings(TlsMode.ENFORCING, str(tmp_path / "none.pem"), str(tmp_path / "none.pem")).context()
    with pytest.raises(ConfigError, match="one of disabled, permissive, enforcing"):
        TlsMode.parse("strict")
    assert TlsMode.parse(" Permissive ") is TlsMode.PERMISSIVE
    assert TlsServerSettings().context() is None


def _ping() -> RemotingCommand:
    return RemotingCommand(RequestCode.HEART_BEAT)


def _answer(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    return cmd.response(ResponseCode.SUCCESS, remark="pong")


async def _remoting_answers(pool: ConnectionPool, addr: str) -> bool:
    try:
        return (await pool.request(addr, _ping(), timeout=3)).remark == "pong"
    except ConnectionClosedError:
        return False


@pytest.mark.parametrize(
    ("mode", "plain_ok", "tls_ok"),
    [(TlsMode.DISABLED, True, False), (TlsMode.PERMISSIVE, True, True), (TlsMode.ENFORCING, False, True)],
)
async def test_remoting_server_and_pools_in_each_mode(certs, mode, plain_ok, tls_ok):
    settings = TlsServerSettings(mode, str(certs.server_pem), str(certs.server_pem))
    server = RemotingServer(_answer, "127.0.0.1", 0, tls_mode=mode, ssl_context=settings.context())
    addr = f"127.0.0.1:{await server.start()}"
    plain, tls = (
        ConnectionPool(connect_timeout=2),
        ConnectionPool(connect_timeout=2, ssl_context=client_context(str(certs.ca_path))),
    )
    blocking_plain = BlockingConnectionPool(2)
    blocking_tls = BlockingConnectionPool(2, ssl_context=client_context(str(certs.ca_path)))
    try:
        assert await _remoting_answers(plain, addr) is plain_ok
        assert await _remoting_answers(tls, addr) is tls_ok

        def blocking(pool: BlockingConnectionPool) -> bool:
            try:
                return pool.request(addr, _ping(), 3).remark == "pong"
            except (ConnectionClosedError, RemotingTimeoutError):
                return False

        assert await asyncio.to_thread(blocking, blocking_plain) is plain_ok
        assert await asyncio.to_thread(blocking, blocking_tls) is tls_ok
    finally:
        blocking_plain.close()
        blocking_tls.close()
        await plain.close()
        await tls.close()
        await server.close()


async def test_a_tls_client_names_tls_when_the_handshake_fails(certs):
    server = RemotingServer(_answer, "127.0.0.1", 0)
    addr = f"127.0.0.1:{await server.start()}"
    pool = ConnectionPool(connect_timeout=2, ssl_context=client_context(str(certs.ca_path)))
    try:
        with pytest.raises(ConnectionClosedError, match="cannot TLS connect"):
            await pool.request(addr, _ping(), timeout=3)
    finally:
        await pool.close()
        await server.close()
