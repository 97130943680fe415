"""RocketMQ 5.x gRPC on a BrokerGroup (pure): whether its brokers serve it, on which port, and the pieces of the pod,
the headless Service and the NetworkPolicy that expose it.

`spec.grpc` is `{enabled: true, port: 8081}` unless set: every broker of the group (master and slaves) serves
`apache.rocketmq.v2.MessagingService` on that port (broker.yaml `grpcListenPort`), so 5.x SDKs connect without a
proxy. `enabled: false` writes `grpcListenPort: 0` (not served) and exposes no port anywhere. With `spec.tls` the
port serves TLS unless `tls.grpc` is false (`build_tls`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from krocket.common import ports
from krocket.operator.build_common import spec_of

PORT_NAME: Final = "grpc"
NOT_SERVED: Final = 0  # grpcListenPort that turns the broker's gRPC server off


def port(body: Mapping[str, Any]) -> int | None:
    """The gRPC port the group's brokers serve; None when `spec.grpc.enabled` is false."""
    grpc = spec_of(body).get("grpc") or {}
    if not grpc.get("enabled", True):
        return None
    return int(grpc.get("port", ports.BROKER_GRPC_PORT))


def listen_port(body: Mapping[str, Any]) -> int:
    """broker.yaml `grpcListenPort`: the port, or 0 when gRPC is off."""
    served = port(body)
    return NOT_SERVED if served is None else served


def container_ports(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The broker container's `grpc` port, none when gRPC is off."""
    served = port(body)
    return [] if served is None else [{"name": PORT_NAME, "containerPort": served, "protocol": "TCP"}]


def service_ports(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A Service's `grpc` port (targeting the container's named port), none when gRPC is off."""
    served = port(body)
    return [] if served is None else [{"name": PORT_NAME, "port": served, "targetPort": PORT_NAME, "protocol": "TCP"}]
