"""HTTP front end of the name server (aiohttp): health, readiness, metrics, a read-only admin API and the web
console at ``/`` (``krocket.namesrv.console``)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from krocket.namesrv.console import add_console
from krocket.namesrv.metrics import CONTENT_TYPE, NamesrvMetrics
from krocket.namesrv.registry import RouteRegistry

REGISTRY_KEY = web.AppKey("registry", RouteRegistry)
METRICS_KEY = web.AppKey("metrics", NamesrvMetrics)
ReadyCheck = Callable[[], bool]
READY_KEY: web.AppKey[ReadyCheck] = web.AppKey("ready")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY_KEY]():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "starting"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS_KEY].render(request.app[REGISTRY_KEY])
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def cluster(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    now = registry.now()
    info = registry.cluster_info()
    info["brokers"] = [
        {
            "cluster": b.cluster,
            "brokerName": b.broker_name,
            "brokerId": b.broker_id,
            "addr": b.addr,
            "haServerAddr": b.ha_server_addr,
            "httpUrl": b.http_url,
            "grpcAddr": b.grpc_addr,
            "lastUpdateAgeSeconds": round(max(0.0, now - b.last_update), 3),
        }
        for b in registry.live_brokers()
    ]
    return web.json_response(info)


async def topics(request: web.Request) -> web.Response:
    return web.json_response({"topicList": request.app[REGISTRY_KEY].topics()})


async def topic_route(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    route = request.app[REGISTRY_KEY].route(topic)
    if route is None:
        return web.json_response({"error": f"no route for topic {topic!r}"}, status=404)
    return web.json_response(route.to_json())


def create_app(registry: RouteRegistry, metrics_: NamesrvMetrics, ready: Callable[[], bool]) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = metrics_
    app[READY_KEY] = ready
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/cluster", cluster)
    app.router.add_get("/api/v1/topics", topics)
    app.router.add_get("/api/v1/topics/{topic}/route", topic_route)
    add_console(app, registry)
    return app
