"""Brokers and name servers are never BestEffort pods: without spec.resources the operator's builders give their
containers default requests and limits; a spec's own resources replace the defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from krocket.operator import build_brokergroup, build_namesrv
from krocket.operator.build_common import container_resources, default_resources
from krocket.operator.quantity import parse_quantity

Make = Callable[..., dict[str, Any]]


def _main_container(sts: dict[str, Any]) -> dict[str, Any]:
    return sts["spec"]["template"]["spec"]["containers"][0]


def _broker(defaulted: Make, **spec: Any) -> dict[str, Any]:
    body = defaulted("BrokerGroup", "broker-a", {"nameServerSetRef": {"name": "ns1"}, "clusterName": "c1", **spec})
    return build_brokergroup.statefulset(body)


def _namesrv(defaulted: Make, **spec: Any) -> dict[str, Any]:
    return build_namesrv.statefulset(defaulted("NameServerSet", "ns1", spec))


@pytest.mark.parametrize("build", [_broker, _namesrv], ids=["broker", "namesrv"])
def test_no_spec_resources_gives_burstable_defaults(defaulted: Make, build: Callable[..., dict[str, Any]]) -> None:
    sts = build(defaulted)
    for ctr in sts["spec"]["template"]["spec"]["containers"]:
        res = ctr["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]), ctr["name"]
        assert "memory" in res["limits"], ctr["name"]
        assert parse_quantity(res["limits"]["memory"]) >= parse_quantity(res["requests"]["memory"])
        assert "cpu" not in res["limits"], "no CPU limit: throttling costs latency"
    kubernetes_validate.validate(sts, "1.32", strict=True)


def test_the_broker_defaults_are_larger_than_the_name_server_ones() -> None:
    broker, namesrv = default_resources("broker"), default_resources("namesrv")
    assert broker == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    for kind in ("requests", "limits"):
        assert parse_quantity(namesrv[kind]["memory"]) < parse_quantity(broker[kind]["memory"])
    default_resources("broker")["requests"]["cpu"] = "9"
    assert default_resources("broker")["requests"]["cpu"] == "500m", "a fresh copy every time"


@pytest.mark.parametrize("build", [_broker, _namesrv], ids=["broker", "namesrv"])
def test_spec_resources_replace_the_defaults(defaulted: Make, build: Callable[..., dict[str, Any]]) -> None:
    given = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}}
    assert _main_container(build(defaulted, resources=given))["resources"] == given
    only_limits = {"limits": {"memory": "3Gi"}}
    assert _main_container(build(defaulted, resources=only_limits))["resources"] == only_limits


def test_container_resources_ignores_empty_parts() -> None:
    assert container_resources("namesrv", None) == default_resources("namesrv")
    assert container_resources("namesrv", {}) == default_resources("namesrv")
    assert container_resources("namesrv", {"requests": {}, "limits": {}}) == default_resources("namesrv")
    assert container_resources("broker", {"requests": {"cpu": "1"}, "limits": {}}) == {"requests": {"cpu": "1"}}
