"""TLS server modes on a real loopback socket: disabled, permissive (TLS and plain on one port), enforcing."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import ConfigError, ConnectionClosedError, RemotingTimeoutError
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand, RemotingServer
from krocket.common.remoting.blocking import BlockingConnectionPool
from krocket.common.remoting.tls import (
    TLS_CA_ENV,
    TLS_ENABLE_ENV,
    TlsMode,
    TlsServerSettings,
    client_context,
    client_settings_context,
    client_tls,
    https_context,
    server_settings,
    start_server,
)

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


def test_server_settings_name_the_key_that_is_wrong(certs, tmp_path):
    pem = str(certs.server_pem)
    with pytest.raises(ConfigError, match="tlsMode: TLS mode must be one of"):
        server_settings("strict")
    with pytest.raises(ConfigError, match="tlsServerCertPath is not set"):
        server_settings("enforcing", "", pem)
    with pytest.raises(ConfigError, match=f"tlsServerKeyPath: no such file {tmp_path}/missing.key"):
        server_settings("permissive", pem, str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="tlsServerTrustCertPath is not set"):
        server_settings("enforcing", pem, pem, need_client_auth=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="tlsServerCertPath"):
        server_settings("enforcing", str(garbage), str(garbage)).context()
    assert server_settings("disabled", "", "").context() is None
    settings = server_settings("enforcing", pem, pem, str(certs.ca_path), need_client_auth=True)
    assert settings.client_ca_path == str(certs.ca_path)
    ctx = settings.context()
    assert ctx is not None and ctx.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="tlsClientTrustCertPath: no such file"):
        client_settings_context(True, str(tmp_path / "none.pem"))
    assert client_settings_context(False, str(tmp_path / "none.pem")) is None
    with pytest.raises(ConfigError, match="tlsServerKeyPath is not set"):
        https_context(pem, "")


def test_client_tls_option_and_environment(certs, tmp_path):
    ca = str(certs.ca_path)
    assert client_tls(environ={}) is None
    assert client_tls(False, ca, environ={TLS_ENABLE_ENV: "1"}) is None
    own = client_context(ca)
    assert client_tls(own, environ={}) is own
    assert client_tls(True, ca, environ={}) is not None
    from_env = client_tls(environ={TLS_ENABLE_ENV: "true", TLS_CA_ENV: ca})
    assert from_env is not None and from_env.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="KROCKET_TLS_CA"):
        client_tls(environ={TLS_ENABLE_ENV: "yes", TLS_CA_ENV: str(tmp_path / "none.pem")})


def test_broker_config_tls_and_bind_keys(certs, tmp_path):
    from krocket.broker.config import BrokerConfig, load_broker_config

    pem = str(certs.server_pem)
    config = load_broker_config(
        None,
        {
            "listenHost": "127.0.0.1",
            "httpListenHost": "0.0.0.0",
            "tlsMode": "permissive",
            "tlsServerCertPath": pem,
            "tlsServerKeyPath": pem,
            "tlsEnable": True,
            "tlsClientTrustCertPath": str(certs.ca_path),
            "httpTlsEnable": True,
        },
    )
    assert (config.ha_bind_host, config.http_bind_host) == ("127.0.0.1", "0.0.0.0")
    assert config.tls_server_settings().mode is TlsMode.PERMISSIVE
    assert config.tls_client_context() is not None and config.http_ssl_context() is not None
    assert BrokerConfig().tls_client_context() is None and BrokerConfig().http_ssl_context() is None
    with pytest.raises(ConfigError, match="tlsServerCertPath: no such file"):
        load_broker_config(
            None, {"tlsMode": "enforcing", "tlsServerCertPath": str(tmp_path / "x"), "tlsServerKeyPath": pem}
        )
    with pytest.raises(ConfigError, match="tlsMode"):
        load_broker_config(None, {"tlsMode": "on"})


def test_broker_config_grpc_tls(certs, tmp_path):
    """grpcTlsEnable: TLS only on the gRPC port with the remoting certificate, whatever tlsMode says; a missing
    certificate stops the broker at start naming the key; client authentication takes the trust certificate."""
    from krocket.broker.config import BrokerConfig, load_broker_config

    pem = str(certs.server_pem)
    assert BrokerConfig().grpc_tls_settings() is None
    config = load_broker_config(None, {"grpcTlsEnable": True, "tlsServerCertPath": pem, "tlsServerKeyPath": pem})
    tls = config.grpc_tls_settings()
    assert tls is not None and tls.mode is TlsMode.ENFORCING and tls.client_ca_path is None
    assert config.tls_server_settings().mode is TlsMode.DISABLED  # remoting stays as tlsMode says
    with pytest.raises(ConfigError, match="tlsServerCertPath is not set"):
        load_broker_config(None, {"grpcTlsEnable": True})
    with pytest.raises(ConfigError, match="tlsServerTrustCertPath"):
        load_broker_config(
            None,
            {"grpcTlsEnable": True, "tlsServerCertPath": pem, "tlsServerKeyPath": pem, "tlsServerNeedClientAuth": True},
        )
    mutual = load_broker_config(
        None,
        {
            "grpcTlsEnable": True,
            "tlsServerCertPath": pem,
            "tlsServerKeyPath": pem,
            "tlsServerNeedClientAuth": True,
            "tlsServerTrustCertPath": str(certs.ca_path),
        },
    ).grpc_tls_settings()
    assert mutual is not None and mutual.client_ca_path == str(certs.ca_path)


def test_permissive_and_enforcing_ports_on_uvloop(certs):
    uvloop = pytest.importorskip("uvloop")

    async def check() -> list[bool]:
        seen = []
        for mode in (TlsMode.PERMISSIVE, TlsMode.ENFORCING):
            settings = TlsServerSettings(mode, str(certs.server_pem), str(certs.server_pem))
            server = RemotingServer(_answer, "127.0.0.1", 0, tls_mode=mode, ssl_context=settings.context())
            addr = f"127.0.0.1:{await server.start()}"
            for ctx in (None, client_context(str(certs.ca_path))):
                pool = ConnectionPool(connect_timeout=2, ssl_context=ctx)
                try:
                    seen.append(await _remoting_answers(pool, addr))
                finally:
                    await pool.close()
            await server.close()
        return seen

    assert uvloop.run(check()) == [True, True, False, True]
