"""The chart's PodMonitor (``metrics.serviceMonitor``): absent by default; when enabled it lints, and scrapes the
"http" port of the broker and name server pods the operator labels, in the namespaces the operator watches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.operator.test_chart import CHART, helm, render

MONITORS = ("PodMonitor", "ServiceMonitor")


def _monitors(values: dict) -> list[dict]:
    return [d for d in render(values) if d["kind"] in MONITORS]


def test_no_monitor_unless_enabled() -> None:
    assert _monitors({}) == []
    assert _monitors({"metrics": {"serviceMonitor": {"enabled": False}}}) == []


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        ({}, {"any": True}),
        ({"watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]}}, {"matchNames": ["team-a", "team-b"]}),
        ({"watch": {"allNamespaces": False}}, {"matchNames": ["mq-system"]}),
        ({"metrics": {"serviceMonitor": {"namespaces": ["mq"]}}}, {"matchNames": ["mq"]}),
    ],
    ids=["all-namespaces", "watched", "release-namespace", "explicit"],
)
def test_enabled_monitor_scrapes_brokers_and_name_servers(values: dict, namespaces: dict) -> None:
    monitor_values = {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}
    monitor_values.update(values.pop("metrics", {}).get("serviceMonitor", {}))
    values = {**values, "metrics": {"serviceMonitor": monitor_values}}
    lint = helm.lint(str(CHART), values, strict=True, kube_version="1.32.0")
    assert lint["errors"] == [], lint
    [monitor] = _monitors(values)
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["metadata"]["namespace"] == "mq-system"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "krocket",
        "app.kubernetes.io/managed-by": "krocket-operator",
    }
    assert spec["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["broker", "namesrv"]}
    ]
    assert spec["namespaceSelector"] == namespaces
    assert spec["podMetricsEndpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]


def test_monitor_values_are_checked_by_the_schema() -> None:
    bad = helm.lint(str(CHART), {"metrics": {"serviceMonitor": {"enabled": "yes"}}})
    assert bad["errors"]
    bad = helm.lint(str(CHART), {"metrics": {"serviceMonitor": {"interval": "soon"}}})
    assert bad["errors"]


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector["matchLabels"].items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"])


def test_the_selector_matches_the_pods_the_operator_builds(defaulted: Callable[..., dict[str, Any]]) -> None:
    from krocket.operator import build_brokergroup, build_namesrv

    [monitor] = _monitors({"metrics": {"serviceMonitor": {"enabled": True}}})
    selector = monitor["spec"]["selector"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    namesrv = build_namesrv.statefulset(defaulted("NameServerSet", "ns1", {}))
    broker = build_brokergroup.statefulset(
        defaulted("BrokerGroup", "broker-a", {"nameServerSetRef": {"name": "ns1"}, "clusterName": "c1"})
    )
    for sts in (namesrv, broker):
        template = sts["spec"]["template"]
        assert _selects(selector, template["metadata"]["labels"]), template["metadata"]["labels"]
        [container] = [c for c in template["spec"]["containers"] if any(p["name"] == port for p in c["ports"])]
        assert container
    assert not _selects(selector, {**namesrv["spec"]["template"]["metadata"]["labels"],
                                   "app.kubernetes.io/component": "operator"})  # fmt: skip
