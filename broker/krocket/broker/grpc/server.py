"""grpc.aio in the broker's event loop: the 5.x MessagingService on ``grpcListenPort``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc
from krocket.broker.grpc.route import RouteLookup
from krocket.broker.grpc.service import MessagingService
from krocket.broker.service import BrokerService
from krocket.common.acl import PlainAcl
from krocket.common.errors import ConfigError
from krocket.common.remoting import ConnectionPool
from krocket.common.remoting.tls import TlsServerSettings

log = logging.getLogger(__name__)

FRAME_OVERHEAD_BYTES = 1024 * 1024
"""Room above maxMessageSize for a message's properties and the request around it (gRPC refuses a larger one)."""
MAX_CONCURRENT_STREAMS = 1024
"""Per connection: streams (calls) open at once; long-polling receives each hold one."""


def server_credentials(tls: TlsServerSettings | None) -> grpc.ServerCredentials | None:
    """The gRPC port's TLS credentials (grpcTlsEnable): the certificate chain and key (one PEM file may hold both),
    and the CA that client certificates must chain to when client authentication is on; None for plaintext."""
    if tls is None:
        return None
    assert tls.cert_path and tls.key_path
    try:
        chain, key = Path(tls.cert_path).read_bytes(), Path(tls.key_path).read_bytes()
        client_ca = Path(tls.client_ca_path).read_bytes() if tls.client_ca_path else None
    except OSError as exc:
        raise ConfigError(f"cannot read the gRPC port's TLS files (grpcTlsEnable): {exc}") from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=bool(client_ca))


class GrpcServer:
    """The gRPC port of one broker; ``start`` returns the bound port."""

    def __init__(self, service: BrokerService, pool: ConnectionPool, acl: Callable[[], PlainAcl] | None = None) -> None:
        """``acl``: the current ACL rules, when the ACL is on (every call is then signed and checked)."""
        self._service = service
        config = service.config
        self.messaging = MessagingService(service, RouteLookup(config.namesrv_addr, pool), acl)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        config = self._service.config
        limit = config.max_message_size + FRAME_OVERHEAD_BYTES
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
                ("grpc.so_reuseport", 0),
            ]
        )
        rpc_grpc.add_MessagingServiceServicer_to_server(self.messaging, server)
        host = config.grpc_bind_host
        bind = f"[{host}]:{config.grpc_listen_port}" if ":" in host else f"{host}:{config.grpc_listen_port}"
        credentials = server_credentials(config.grpc_tls_settings())
        try:
            port = server.add_insecure_port(bind) if credentials is None else server.add_secure_port(bind, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot serve gRPC on {bind} (grpcListenPort): {exc}") from None
        if port == 0:
            raise ConfigError(f"cannot serve gRPC on {bind} (grpcListenPort): the port is in use or not allowed")
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
