"""Bind addresses with real processes: each port listens only where its bind setting says.

A server bound to 127.0.0.1 must not answer on another local address. On Linux every 127.x.y.z address is
local, so 127.0.0.2 is that other address even on a machine with loopback only; the test first checks that a
0.0.0.0 listener answers there (and skips where it does not).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.cli.local_cluster import ChildProcess, LocalCluster

OTHER_LOCAL = "127.0.0.2"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def other_local_address() -> str:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        if not reachable(OTHER_LOCAL, listener.getsockname()[1]):
            pytest.skip(f"{OTHER_LOCAL} does not reach this machine's 0.0.0.0 listeners")
    return OTHER_LOCAL


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A name server and a master bound to 127.0.0.1 (as ``krocket local up`` does) except their HTTP ports,
    which bind every address (``--http-bind 0.0.0.0``)."""
    c = LocalCluster.plan(tmp_path_factory.mktemp("bind"), namesrvs=1, groups=1)
    c.namesrvs[0].args += ["--bind", "127.0.0.1", "--http-bind", "0.0.0.0"]
    c.brokers[0].args += ["--bind", "127.0.0.1", "--http-bind", "0.0.0.0"]
    try:
        c.start()
        yield c
    finally:
        c.stop()


def ha_port(broker: ChildProcess) -> int:
    return int(json.loads(broker.ports_file.read_text())["ha_port"])


def test_loopback_bound_ports_are_not_reachable_elsewhere(cluster: LocalCluster, other_local_address: str) -> None:
    ns, broker = cluster.namesrvs[0], cluster.brokers[0]
    for name, port in (("namesrv remoting", ns.port), ("broker remoting", broker.port), ("HA", ha_port(broker))):
        assert reachable("127.0.0.1", port), name
        assert not reachable(other_local_address, port), f"{name} port {port} answers on {other_local_address}"


def test_http_bind_is_its_own_setting(cluster: LocalCluster, other_local_address: str) -> None:
    for child in cluster.children:
        assert reachable("127.0.0.1", child.http_port) and reachable(other_local_address, child.http_port), child.name


def test_ha_bind_defaults_to_bind_and_can_differ(tmp_path: Path, other_local_address: str) -> None:
    c = LocalCluster.plan(tmp_path, namesrvs=1, groups=1)
    c.brokers[0].args += ["--ha-bind", "0.0.0.0"]
    try:
        c.start()
        broker = c.brokers[0]
        assert reachable(other_local_address, ha_port(broker))
        assert not reachable(other_local_address, broker.port)  # --host 127.0.0.1 still binds remoting
        assert not reachable(other_local_address, broker.http_port)  # and HTTP, which defaults to it
    finally:
        c.stop()
