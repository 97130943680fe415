"""The operator (kopf against kmock) in front of real broker processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from krocket.operator.broker_admin import StaticResolver

from tests.operator import api
from tests.operator.kopf_harness import declare_resources, running_operator
from tests.support.cluster import LocalCluster, start_cluster


def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """One name server and one master (broker-a of DefaultCluster) on 127.0.0.1, stopped afterwards."""
    local = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, auto_create=False)
    try:
        yield local
    finally:
        local.stop()


def admin_base(cluster: LocalCluster) -> str:
    """The admin API of the cluster's first broker."""
    return f"http://127.0.0.1:{cluster.brokers[0].http_port}"


def brokergroup(namesrv: str, cluster: str = "DefaultCluster") -> dict[str, Any]:
    """BrokerGroup broker-a, registering with the name servers at `namesrv`."""
    return api.bg_body("broker-a", ref={"address": namesrv}, cluster=cluster)


def operator_on(kmock, base: str, ns: str = "mq", **kwargs: Any) -> AbstractAsyncContextManager[Any]:
    """The operator running against `kmock`, with BrokerGroup broker-a of `ns` resolved to the broker at `base`."""
    declare_resources(kmock)
    resolver = StaticResolver({(ns, "broker-a", 0): base})
    return running_operator(kmock, resolver=resolver, **kwargs)
