"""The operator's Prometheus metrics: kopf against kmock's emulator with the metrics port on, scraped over HTTP
like Prometheus would (reconciles by kind and result, durations, per-resource readiness that goes with the
resource); the reconcile wrapper's bookkeeping (ok / retry / error) on its own; the --metrics-port flag."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from krocket.operator import metrics
from krocket.operator.outcome import Outcome

from tests.operator.kopf_harness import (
    FAST,
    FakeBrokers,
    StampingEmulator,
    condition,
    declare_resources,
    get,
    running_operator,
    wait_for,
)

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

G = "krocket.io/v1alpha1"
TOPICS = f"{G}/topics"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, metric: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == metric and want <= set(lbls))


def has_series(samples: Samples, metric: str, **labels: str) -> bool:
    want = set(labels.items())
    return any(n == metric and want <= set(lbls) for (n, lbls) in samples)


@pytest.fixture()
def k8s(kmock):
    declare_resources(kmock)
    return kmock


async def create(k, plural: str, ns: str, body: dict[str, Any]) -> None:
    resp = await k.post(f"/apis/{G}/namespaces/{ns}/{plural}", json=body)
    assert resp.status < 300, await resp.text()


async def test_a_reconcile_moves_the_counters_on_the_metrics_port(k8s) -> None:
    port = free_port()
    brokers = FakeBrokers()
    config = dataclasses.replace(FAST, metrics_port=port)
    ns = f"m-{uuid.uuid4().hex[:8]}"  # the metrics are per process: series of other tests' resources stay
    async with running_operator(k8s, admin=brokers, config=config):
        await wait_for(lambda: _port_open(port), what="metrics port open")
        before = await scrape(port)
        await create(
            k8s,
            "nameserversets",
            ns,
            {"apiVersion": G, "kind": "NameServerSet", "metadata": {"name": "namesrv"}, "spec": {"replicas": 1}},
        )
        await create(
            k8s,
            "brokergroups",
            ns,
            {
                "apiVersion": G,
                "kind": "BrokerGroup",
                "metadata": {"name": "broker-a"},
                "spec": {
                    "nameServerSetRef": {"name": "namesrv"},
                    "clusterName": "c1",
                    "slaves": 0,
                    "image": "krocket/broker:0.1.0",
                    "storage": {"size": "1Gi", "ephemeral": True},
                },
            },
        )
        await create(
            k8s,
            "topics",
            ns,
            {
                "apiVersion": G,
                "kind": "Topic",
                "metadata": {"name": "orders"},
                "spec": {"topicName": "Orders", "placement": {"clusterName": "c1"}, "readQueues": 4, "writeQueues": 4},
            },
        )
        await wait_for(
            lambda: (c := condition(get(k8s, TOPICS, ns, "orders"))) and c["status"] == "True",
            what="topic Ready",
            timeout=20,
        )
        after = await _scrape_until(
            port,
            lambda s: (
                value(s, "krocket_operator_resource_ready", kind="Topic", namespace=ns, name="orders") == 1.0
                and has_series(s, "krocket_operator_resource_ready", kind="NameServerSet", namespace=ns, name="namesrv")
                and has_series(s, "krocket_operator_resource_ready", kind="BrokerGroup", namespace=ns, name="broker-a")
            ),
            timeout=30,
        )
        for kind in ("NameServerSet", "BrokerGroup", "Topic"):
            grew = value(after, "krocket_operator_reconciles_total", kind=kind, action="reconcile")
            assert grew > value(before, "krocket_operator_reconciles_total", kind=kind, action="reconcile"), kind
            assert value(after, "krocket_operator_reconcile_duration_seconds_count", kind=kind, action="reconcile") > 0
            assert has_series(after, "krocket_operator_reconcile_duration_seconds_bucket", kind=kind, le="+Inf")
        assert value(after, "krocket_operator_reconciles_total", kind="Topic", result="ok") > value(
            before, "krocket_operator_reconciles_total", kind="Topic", result="ok"
        )
        # pods never become Ready in the emulator: the name servers are reported not ready
        assert (
            value(after, "krocket_operator_resource_ready", kind="NameServerSet", namespace=ns, name="namesrv") == 0.0
        )
        assert has_series(after, "process_cpu_seconds_total")

        # a deleted resource's readiness series goes; the delete itself is counted
        resp = await k8s.delete(f"/apis/{G}/namespaces/{ns}/topics/orders")
        assert resp.status < 300
        await wait_for(lambda: get(k8s, TOPICS, ns, "orders") is None, what="topic deleted")
        gone = await _scrape_until(
            port,
            lambda s: not has_series(s, "krocket_operator_resource_ready", kind="Topic", namespace=ns, name="orders"),
        )
        assert value(gone, "krocket_operator_reconciles_total", kind="Topic", action="delete", result="ok") >= 1
    assert not _port_open(port), "the metrics server stops with the operator"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _scrape_until(port: int, predicate: Any, timeout: float = 15.0) -> Samples:
    last: list[Samples] = []

    async def check() -> bool:
        last[:] = [await scrape(port)]
        return bool(predicate(last[0]))

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return last[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"metrics never matched within {timeout}s")


async def test_no_metrics_server_when_the_port_is_zero(k8s) -> None:
    port = free_port()
    async with running_operator(k8s, config=dataclasses.replace(FAST, metrics_port=0)):
        assert not _port_open(port)


# --- the wrapper, without kopf --------------------------------------------------------------------------------


def _body(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "unit", "name": name}}


def _ready(status: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": status}]}


async def test_observed_counts_ok_retry_and_error_and_keeps_readiness() -> None:
    def count(result: str) -> float:
        return metrics.RECONCILES.labels("UnitKind", "reconcile", result)._value.get()

    outcomes = [Outcome(status=_ready("True")), Outcome(status={}, retry_after=5.0), RuntimeError("api down")]

    @metrics.observed("UnitKind")
    async def reconcile(body: dict[str, Any], step: int) -> Outcome:
        result = outcomes[step]
        if isinstance(result, BaseException):
            raise result
        return result

    ok, retry, error = count("ok"), count("retry"), count("error")
    errors = metrics.RECONCILE_ERRORS.labels("UnitKind", "reconcile", "RuntimeError")._value.get()
    assert (await reconcile(_body("a"), 0)).status == _ready("True")
    assert metrics.RESOURCE_READY.labels("UnitKind", "unit", "a")._value.get() == 1.0
    await reconcile(_body("a"), 1)
    assert metrics.RESOURCE_READY.labels("UnitKind", "unit", "a")._value.get() == 1.0, "no condition: unchanged"
    with pytest.raises(RuntimeError):
        await reconcile(_body("a"), 2)
    assert (count("ok"), count("retry"), count("error")) == (ok + 1, retry + 1, error + 1)
    assert metrics.RECONCILE_ERRORS.labels("UnitKind", "reconcile", "RuntimeError")._value.get() == errors + 1
    metrics.forget("UnitKind", _body("a"))
    assert b'kind="UnitKind",name="a"' not in metrics.render()
    metrics.forget("UnitKind", _body("a"))  # twice: no error


def test_ready_value_reads_the_ready_condition() -> None:
    assert metrics.ready_value(_ready("True")) == 1.0
    assert metrics.ready_value(_ready("False")) == 0.0
    assert metrics.ready_value(_ready("Unknown")) == 0.0
    assert metrics.ready_value({"conditions": [{"type": "Reconciled", "status": "True"}]}) is None


def test_the_cli_passes_the_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from krocket.cli.main import main
    from krocket.operator import main as operator_main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(operator_main, "run", lambda **kwargs: seen.update(kwargs))
    assert main(["operator", "-n", "mq", "--metrics-port", "9191"]) == 0
    assert seen["metrics_port"] == 9191 and seen["namespaces"] == ["mq"]
    assert main(["operator", "-A"]) == 0
    assert seen["metrics_port"] == 8081
    assert operator_main.config_from_env({}, metrics_port=0).metrics_port == 0
    assert operator_main.config_from_env({"KROCKET_OPERATOR_METRICS_PORT": "9000"}).metrics_port == 9000
