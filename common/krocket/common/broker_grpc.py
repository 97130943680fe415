"""The broker's gRPC endpoint (RocketMQ 5.x clients) as a registration carries it and a route hands it out.

A broker that serves gRPC (``grpcListenPort``) names its endpoint in REGISTER_BROKER's body under
``krocketGrpcAddr`` (``host:port``, beside ``krocketHttpUrl``), which RocketMQ's name server ignores. The name
server keeps it per broker name and id and adds it to each BrokerData of a route and of the cluster info as
``grpcAddrs`` (``{"0": "host:port"}``, only for brokers that serve gRPC; ``krocket.common.route``), a field
RocketMQ's Java and C++ clients ignore. The broker's QueryRoute answers 5.x clients with these endpoints.
"""

from __future__ import annotations

from krocket.common.addresses import is_host_port
from krocket.common.broker_http import register_body_string

GRPC_ADDR_FIELD = "krocketGrpcAddr"


def grpc_addr_from_register_body(body: bytes | None) -> str:
    """The broker's gRPC ``host:port`` in a REGISTER_BROKER body, or "" when it serves none (or names no
    ``host:port``)."""
    addr = register_body_string(body, GRPC_ADDR_FIELD)
    return addr if is_host_port(addr) else ""
