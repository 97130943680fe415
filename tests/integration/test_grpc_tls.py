"""The gRPC port over TLS (``grpcTlsEnable``, ``--grpc-tls``) with real processes: TLS clients that trust the CA
send and receive, a plaintext client gets nowhere, client certificates are required when the broker asks for them,
and the official 5.x Python SDK works with ``tls_enable=True`` (trusting the CA via gRPC's
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc

from tests.integration.test_grpc_consume import receive, seconds, send
from tests.integration.test_grpc_service import CLIENT
from tests.support.cluster import LocalCluster, create_topic, start_cluster
from tests.support.rmq5 import run_sdk
from tests.support.tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("grpc-certs"))


def grpc_tls_cluster(data: Path, certs: Certificates, client_auth: bool) -> LocalCluster:
    """One name server and one broker whose gRPC port serves TLS only (remoting stays plain)."""
    pem = str(certs.server_pem)
    args = ["--grpc-tls", "--tls-cert", pem, "--tls-key", pem]
    if client_auth:
        args += ["--tls-need-client-auth", "--tls-trust-cert", str(certs.ca_path)]
    return start_cluster(data, namesrvs=1, groups=1, auto_create=False, extra_broker_args=args)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[LocalCluster]:
    cluster = grpc_tls_cluster(tmp_path_factory.mktemp("grpc-tls"), certs, client_auth=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def endpoint(cluster: LocalCluster) -> str:
    return f"127.0.0.1:{cluster.brokers[0].grpc_port}"


@contextlib.asynccontextmanager
async def tls_stub(
    cluster: LocalCluster, certs: Certificates, client_pem: Path | None = None
) -> AsyncIterator[rpc_grpc.MessagingServiceStub]:
    pem = client_pem.read_bytes() if client_pem is not None else None
    credentials = grpc.ssl_channel_credentials(certs.ca_path.read_bytes(), private_key=pem, certificate_chain=pem)
    async with grpc.aio.secure_channel(endpoint(cluster), credentials) as channel:
        yield rpc_grpc.MessagingServiceStub(channel)


async def route_status(s: rpc_grpc.MessagingServiceStub, topic: str) -> rpc.QueryRouteResponse:
    request = rpc.QueryRouteRequest(topic=pb.Resource(name=topic))
    return await s.QueryRoute(request, metadata=CLIENT, timeout=5)


async def test_tls_clients_send_and_receive_and_plaintext_ones_get_nowhere(
    tls_cluster: LocalCluster, certs: Certificates
) -> None:
    topic, group = "TlsOrders", "tls-readers"
    await create_topic(tls_cluster, topic, queues=2)
    async with tls_stub(tls_cluster, certs) as s:
        route = await route_status(s, topic)
        assert route.status.code == pb.OK, route.status
        assert {q.broker.endpoints.addresses[0].port for q in route.message_queues} == {
            tls_cluster.brokers[0].grpc_port
        }
        await send(s, topic, b"over-tls-1", b"over-tls-2")
        status, messages = await receive(s, topic, group, long_polling_timeout=seconds(2))
        assert status.code == pb.OK, status
        assert sorted(m.body for m in messages) == [b"over-tls-1", b"over-tls-2"]
    async with grpc.aio.insecure_channel(endpoint(tls_cluster)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await route_status(rpc_grpc.MessagingServiceStub(channel), topic)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_cluster: LocalCluster, certs: Certificates, tmp_path: Path
) -> None:
    stranger = make_certificates(tmp_path / "stranger")  # another CA: the broker's certificate does not chain to it
    async with tls_stub(tls_cluster, stranger) as s:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await route_status(s, "TlsOrders")
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_client_certificates_are_required_when_the_broker_asks(certs: Certificates, tmp_path: Path) -> None:
    cluster = await asyncio.to_thread(grpc_tls_cluster, tmp_path / "mutual", certs, True)
    try:
        topic = "MutualTls"
        await create_topic(cluster, topic, queues=1)
        async with tls_stub(cluster, certs) as s:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await route_status(s, topic)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        async with tls_stub(cluster, certs, client_pem=certs.client_pem) as s:
            route = await route_status(s, topic)
            assert route.status.code == pb.OK, route.status
            await send(s, topic, b"with-a-client-certificate")
    finally:
        await asyncio.to_thread(cluster.stop)


def test_the_python_sdk_with_tls_enable_produces_and_consumes(
    tls_cluster: LocalCluster, certs: Certificates, tmp_path: Path
) -> None:
    topic, group = "TlsSdk", "tls-sdk-readers"
    asyncio.run(create_topic(tls_cluster, topic, queues=2))
    trust = {"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certs.ca_path)}
    common = ("--endpoints", endpoint(tls_cluster), "--tls")
    sent = run_sdk(tmp_path / "p", *common, "produce", "--topic", topic, "--count", "3", env=trust)
    assert [line["sent"] for line in sent if "sent" in line] == ["v5-0", "v5-1", "v5-2"], sent
    got = run_sdk(
        tmp_path / "c", *common, "simple", "--topic", topic, "--group", group, "--expect", "3", env=trust, timeout=90
    )
    assert sorted(line["got"] for line in got if "got" in line) == ["v5-0", "v5-1", "v5-2"], got
