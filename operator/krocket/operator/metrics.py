"""Prometheus metrics of the operator process, served on their own port (``--metrics-port``, default 8081).

Families (``OPERATOR_METRICS``, name without the ``krocket_`` prefix -> type):

- ``operator_reconciles_total{kind, action, result}``: every reconcile, ``result`` ok | retry | error
  (``retry``: the reconcile asked to be retried, e.g. brokers unreachable; ``error``: it raised);
- ``operator_reconcile_errors_total{kind, action, error}``: reconciles that raised, by exception class;
- ``operator_reconcile_duration_seconds{kind, action}``: how long a reconcile took (histogram);
- ``operator_resource_ready{kind, namespace, name}``: 1 when the resource's last reconcile wrote Ready=True,
  0 otherwise; the series goes when the resource is deleted.

``observed(kind, action)`` wraps a reconcile function (``async (body, ctx, ...) -> Outcome``);
``register_metrics(registry, cfg)`` adds the kopf handlers that serve ``/metrics`` on ``cfg.metrics_port``
(0: off) and drop a deleted resource's readiness series.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar, cast

import kopf
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator.context import OperatorConfig
from krocket.operator.outcome import Outcome

log = logging.getLogger(__name__)

Reconcile = TypeVar("Reconcile", bound=Callable[..., Coroutine[Any, Any, Outcome]])

OPERATOR_METRICS: dict[str, str] = {
    "operator_reconciles_total": "counter",
    "operator_reconcile_errors_total": "counter",
    "operator_reconcile_duration_seconds": "histogram",
    "operator_resource_ready": "gauge",
}

# A reconcile is a few API calls and broker admin requests: milliseconds when all is well, seconds when a
# broker or the API server is slow, the admin timeout when one is down.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RESULT_OK, RESULT_RETRY, RESULT_ERROR = "ok", "retry", "error"

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

RECONCILES = Counter(
    "krocket_operator_reconciles",
    "Reconciles by kind, action and result (ok, retry, error).",
    ["kind", "action", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "krocket_operator_reconcile_errors",
    "Reconciles that raised, by exception class.",
    ["kind", "action", "error"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "krocket_operator_reconcile_duration_seconds",
    "Time one reconcile took.",
    ["kind", "action"],
    buckets=DURATION_BUCKETS_S,
    registry=REGISTRY,
)
RESOURCE_READY = Gauge(
    "krocket_operator_resource_ready",
    "1 when the resource's last reconcile found it Ready, else 0.",
    ["kind", "namespace", "name"],
    registry=REGISTRY,
)


def ready_value(status: Mapping[str, Any]) -> float | None:
    """1.0 / 0.0 from the Ready condition a reconcile wrote; None when it wrote none (keep the last value)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == cond.READY:
            return 1.0 if condition.get("status") == "True" else 0.0
    return None


def result_of(outcome: Outcome) -> str:
    return RESULT_RETRY if outcome.retry_after is not None else RESULT_OK


def _identity(body: Mapping[str, Any]) -> tuple[str, str]:
    md = body.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md.get("name") or "")


def record(kind: str, action: str, body: Mapping[str, Any], outcome: Outcome, seconds: float) -> None:
    """Count one finished reconcile and update the resource's readiness."""
    RECONCILES.labels(kind, action, result_of(outcome)).inc()
    RECONCILE_DURATION.labels(kind, action).observe(seconds)
    ready = ready_value(outcome.status)
    if ready is not None and action == "reconcile":
        RESOURCE_READY.labels(kind, *_identity(body)).set(ready)


def record_error(kind: str, action: str, error: BaseException, seconds: float) -> None:
    RECONCILES.labels(kind, action, RESULT_ERROR).inc()
    RECONCILE_ERRORS.labels(kind, action, type(error).__name__).inc()
    RECONCILE_DURATION.labels(kind, action).observe(seconds)


def forget(kind: str, body: Mapping[str, Any]) -> None:
    """Drop the readiness series of a deleted resource."""
    try:
        RESOURCE_READY.remove(kind, *_identity(body))
    except KeyError:
        pass


def observed(kind: str, action: str = "reconcile") -> Callable[[Reconcile], Reconcile]:
    """Wrap a reconcile function ``(body, ...) -> Outcome``: count it, time it, record readiness."""

    def wrap(fn: Reconcile) -> Reconcile:
        @functools.wraps(fn)
        async def wrapper(body: Mapping[str, Any], *args: Any, **kwargs: Any) -> Outcome:
            started = time.perf_counter()
            try:
                outcome = await fn(body, *args, **kwargs)
            except BaseException as exc:
                record_error(kind, action, exc, time.perf_counter() - started)
                raise
            record(kind, action, body, outcome, time.perf_counter() - started)
            return outcome

        return cast(Reconcile, wrapper)

    return wrap


def render() -> bytes:
    return generate_latest(REGISTRY)


async def _serve_metrics(_: web.Request) -> web.Response:
    return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsServer:
    """``/metrics`` over aiohttp in the operator's event loop."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from other pods
        self.port = port
        self.host = host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", _serve_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("operator metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def register_metrics(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:
    """kopf handlers: serve /metrics while the operator runs; forget deleted resources' readiness."""
    server = MetricsServer(cfg.metrics_port) if cfg.metrics_port else None

    if server is not None:

        @kopf.on.startup(id="metrics_server", registry=registry)
        async def start_metrics(**_: Any) -> None:
            await server.start()

        @kopf.on.cleanup(id="metrics_server", registry=registry)
        async def stop_metrics(**_: Any) -> None:
            await server.stop()

    for plural, kind in (
        (c.NAMESERVERSETS, c.KIND_NAMESERVERSET),
        (c.BROKERGROUPS, c.KIND_BROKERGROUP),
        (c.TOPICS, c.KIND_TOPIC),
    ):

        def on_event(event: Mapping[str, Any], body: kopf.Body, _kind: str = kind, **_: Any) -> None:
            if event.get("type") == "DELETED":
                forget(_kind, body)

        kopf.on.event(c.GROUP, c.VERSION, plural, id=f"metrics_{plural}", registry=registry)(on_event)
