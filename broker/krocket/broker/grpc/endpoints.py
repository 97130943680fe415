"""``host:port`` as the protocol's ``Endpoints`` (IPv4, IPv6 or a domain name)."""

from __future__ import annotations

import ipaddress

from krocket.broker.grpc.protocol import definition_pb2 as pb


def split_host_port(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ValueError when the port is missing or not a number."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{addr!r} is not host:port")
    return host.strip("[]"), int(port)


def scheme_of(host: str) -> int:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return pb.DOMAIN_NAME
    return pb.IPv4 if ip.version == 4 else pb.IPv6


def endpoints(addr: str) -> pb.Endpoints:
    host, port = split_host_port(addr)
    return pb.Endpoints(scheme=scheme_of(host), addresses=[pb.Address(host=host, port=port)])  # type: ignore[arg-type]


def endpoints_text(value: pb.Endpoints) -> str:
    """``host:port;host:port`` of an ``Endpoints`` (for logs and errors)."""
    return ";".join(f"{a.host}:{a.port}" for a in value.addresses)
