"""The chart's monitoring: the PodMonitors (``metrics.serviceMonitor``), absent by default; when enabled they lint,
scrape the "http" port of the broker and name server pods the operator labels, in the namespaces the operator
watches, and the operator's own "metrics" port. The Grafana dashboards (``dashboards``) as ConfigMaps for
Grafana's sidecar: the broker dashboard identical to deploy/grafana/, the operator dashboard naming only series
the operator exports."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.operator.test_chart import CHART, ROOT, helm, render

MONITORS = ("PodMonitor", "ServiceMonitor")


def _monitors(values: dict) -> list[dict]:
    return [d for d in render(values) if d["kind"] in MONITORS]


def _cluster_monitors(values: dict) -> list[dict]:
    return [d for d in _monitors(values) if d["metadata"]["name"].endswith("-clusters")]


def test_no_monitor_unless_enabled() -> None:
    assert _monitors({}) == []
    assert _monitors({"metrics": {"serviceMonitor": {"enabled": False}}}) == []


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        ({"watch": {"allNamespaces": True}}, {"any": True}),
        ({"watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]}}, {"matchNames": ["team-a", "team-b"]}),
        ({}, {"matchNames": ["mq-system"]}),
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
    [monitor] = _cluster_monitors(values)
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

    [monitor] = _cluster_monitors({"metrics": {"serviceMonitor": {"enabled": True}}})
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
    assert not _selects(
        selector, {**namesrv["spec"]["template"]["metadata"]["labels"], "app.kubernetes.io/component": "operator"}
    )


# --- the operator's own metrics -------------------------------------------------------------------------------


def test_the_operator_monitor_scrapes_the_operator_metrics_port() -> None:
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor" and not d["metadata"]["name"].endswith("-clusters")]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mq-system"]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == 8081
    # the brokers' monitor never selects the operator pod, the operator's never a broker
    [clusters] = _cluster_monitors({"metrics": {"serviceMonitor": {"enabled": True}}})
    assert not _selects(clusters["spec"]["selector"], pod_labels)
    assert _cluster_monitors({"metrics": {"serviceMonitor": {"enabled": True, "operator": False}}})
    assert len(_monitors({"metrics": {"serviceMonitor": {"enabled": True, "operator": False}}})) == 1
    assert len(_monitors({"metrics": {"serviceMonitor": {"enabled": True}}, "metricsPort": 0})) == 1


# --- dashboards -----------------------------------------------------------------------------------------------

BROKER_DASHBOARD = ROOT / "deploy" / "grafana" / "krocket-dashboard.json"
CHART_DASHBOARDS = CHART / "dashboards"
METRIC_NAME = re.compile(r"\b(krocket_[a-z0-9_]+)\b")


def _dashboard_configmaps(values: dict) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in render(values) if d["kind"] == "ConfigMap"}


def test_no_dashboards_unless_enabled() -> None:
    assert _dashboard_configmaps({}) == {}


def test_the_chart_ships_the_broker_dashboard_unchanged() -> None:
    assert (CHART_DASHBOARDS / "krocket-dashboard.json").read_bytes() == BROKER_DASHBOARD.read_bytes(), (
        "charts/krocket/dashboards/krocket-dashboard.json must be a copy of deploy/grafana/krocket-dashboard.json"
    )


def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    values = {"dashboards": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "mq"}}}
    lint = helm.lint(str(CHART), values, strict=True, kube_version="1.32.0")
    assert lint["errors"] == [], lint
    maps = _dashboard_configmaps(values)
    assert len(maps) == 2
    files = {}
    for cm in maps.values():
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "mq"}
        [(name, text)] = cm["data"].items()
        files[name] = text
    assert json.loads(files["krocket-dashboard.json"]) == json.loads(BROKER_DASHBOARD.read_text())
    operator = json.loads(files["krocket-operator-dashboard.json"])
    assert operator["uid"] == "krocket-operator" and operator["uid"] != json.loads(BROKER_DASHBOARD.read_text())["uid"]


def _panels(dashboard: dict) -> list[dict]:
    return [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]


def test_the_operator_dashboard_queries_only_operator_metrics() -> None:
    from krocket.common.metrics import sample_names
    from krocket.operator.metrics import OPERATOR_METRICS

    dashboard = json.loads((CHART_DASHBOARDS / "krocket-operator-dashboard.json").read_text())
    exported = sample_names(OPERATOR_METRICS)
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    named: set[str] = set()
    for expr in exprs:
        found = set(METRIC_NAME.findall(expr))
        assert found and found <= exported, (expr, found - exported)
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        if "_total" in expr and not expr.startswith("label_values("):
            assert "rate(krocket_operator_" in expr, expr
        named |= found
    # reconciles, errors, durations and readiness all on the dashboard
    assert {
        "krocket_operator_reconciles_total",
        "krocket_operator_reconcile_errors_total",
        "krocket_operator_reconcile_duration_seconds_bucket",
        "krocket_operator_resource_ready",
    } <= named
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and panel["targets"]
