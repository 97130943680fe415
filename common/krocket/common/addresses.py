"""Name server address lists: ``a:9876;b:9876``, or a DNS name resolving to several addresses."""

from __future__ import annotations

import os
import socket

from krocket.common.errors import ConfigError
from krocket.common.ports import NAMESRV_PORT

DEFAULT_NAMESRV_PORT = NAMESRV_PORT
"""The port a name server address without one gets."""


def namesrv_from_env(explicit: str | None = None) -> str:
    """The name server address: ``explicit``, else ``KROCKET_NAMESRV_ADDR`` or ``NAMESRV_ADDR``."""
    value = explicit or os.environ.get("KROCKET_NAMESRV_ADDR") or os.environ.get("NAMESRV_ADDR")
    if not value:
        raise ConfigError("no name server address: pass --namesrv host:port[;host:port] or set NAMESRV_ADDR")
    return value


def is_host_port(addr: str, min_port: int = 1) -> bool:
    """``host:port`` with a port ``min_port``..65535 and a host without spaces or control characters."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not min_port <= int(port) < 65536:
        return False
    return host.isprintable() and not any(c.isspace() for c in host)


def parse_addr_list(value: str) -> list[tuple[str, int]]:
    """Split ``host:port;host:port`` (commas accepted too) into pairs. Raises ``ConfigError``."""
    result: list[tuple[str, int]] = []
    for part in value.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, str(DEFAULT_NAMESRV_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"name server address {part!r} is not host:port")
        result.append((host, int(port)))
    if not result:
        raise ConfigError(f"name server address list {value!r} is empty")
    return result


def resolve_addr_list(value: str) -> list[str]:
    """Expand each host to all the IPv4 addresses it resolves to (a headless Service gives several)."""
    out: list[str] = []
    for host, port in parse_addr_list(value):
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            ips = sorted({info[4][0] for info in infos})
        except OSError:
            ips = [host]
        for ip in ips:
            addr = f"{ip}:{port}"
            if addr not in out:
                out.append(addr)
    return out
