"""deploy/grafana/krocket-dashboard.json: valid JSON a Grafana can import, and every query (panel targets and
template variables) names only series the broker or name server exports (``BROKER_METRICS``, ``NAMESRV_METRICS``,
the lists tests/integration/test_metrics.py holds against a real scrape), with the panels the issue asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.metrics import BROKER_METRICS
from krocket.common.metrics import sample_names
from krocket.namesrv.metrics import NAMESRV_METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "krocket-dashboard.json"
METRIC_NAME = re.compile(r"\b(krocket_[a-z0-9_]+)\b")
PROMQL_FUNCTIONS = {"rate", "sum", "max", "min", "histogram_quantile", "label_values", "count", "by"}
IDENTIFIER = re.compile(r"\b([a-z_][a-z0-9_]*)\s*[({]")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_the_dashboard_is_an_importable_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "cluster", "broker", "topic", "group"} <= variables


def test_every_query_names_an_exported_metric(dashboard: dict[str, Any]) -> None:
    exported = sample_names(BROKER_METRICS) | sample_names(NAMESRV_METRICS)
    for expr in _exprs(dashboard):
        named = METRIC_NAME.findall(expr)
        assert named, expr
        assert set(named) <= exported, (expr, set(named) - exported)
        # Anything called like a function or selected like a series is PromQL's or krocket's.
        for word in IDENTIFIER.findall(expr):
            assert word in PROMQL_FUNCTIONS or word in exported, (expr, word)
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_counters_are_read_through_rate_and_histograms_through_quantiles(dashboard: dict[str, Any]) -> None:
    counters = {f"krocket_{n}" for n, kind in {**BROKER_METRICS, **NAMESRV_METRICS}.items() if kind == "counter"}
    for expr in _exprs(dashboard):
        if expr.startswith("label_values("):
            continue
        for name in METRIC_NAME.findall(expr):
            if name in counters:
                assert re.search(rf"rate\({name}[{{\[]", expr), expr
            if name.endswith("_bucket"):
                assert "histogram_quantile(" in expr and "by (le" in expr, expr


def test_the_panels_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(_exprs(dashboard))
    for needed in (
        "sum by (topic) (rate(krocket_broker_topic_messages_in_total",
        "sum by (group, topic) (rate(krocket_broker_group_messages_out_total",
        "krocket_broker_consumer_lag_messages",
        "krocket_broker_consumer_lag_seconds",
        "histogram_quantile(0.99, sum by (le) (rate(krocket_broker_send_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(krocket_broker_pull_latency_seconds_bucket",
        "krocket_store_fsync_latency_seconds_bucket",
        "krocket_store_disk_free_bytes",
        "krocket_broker_replication_lag_bytes",
        "krocket_broker_replication_seconds_since_ack",
    ):
        assert needed in exprs, needed
