"""The broker's aiohttp app: health, metrics and the admin API (topics, consumer groups, broker state)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from krocket.broker.acl.http_guard import GUARD_KEY, HttpGuard, may_read, reader
from krocket.broker.http_console import add_console_routes
from krocket.broker.registration import NameServerRegistration
from krocket.broker.service import BrokerService
from krocket.common.codes import PERM_READ, PERM_READ_WRITE
from krocket.common.errors import KrocketError
from krocket.common.metrics import CONTENT_TYPE, Metrics
from krocket.common.subscription_group import SubscriptionGroupConfig
from krocket.common.topic import MAX_TOPICS_PER_BATCH, TopicConfig


@dataclass(slots=True)
class BrokerState:
    """What the HTTP app shows of the broker besides its service: registration, replication, serving."""

    registration: NameServerRegistration
    replication: Callable[[], dict[str, Any]]
    serving: bool = False


SERVICE_KEY = web.AppKey("service", BrokerService)
METRICS_KEY = web.AppKey("metrics", Metrics)
STATE_KEY = web.AppKey("state", BrokerState)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    ready = state.serving and state.registration.registered
    return web.json_response(
        {"ready": ready, "serving": state.serving, "registered": state.registration.registered},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_KEY].render().encode(), headers={"Content-Type": CONTENT_TYPE})


async def broker_info(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    registration = request.app[STATE_KEY].registration
    config = service.config
    return web.json_response(
        {
            "clusterName": config.broker_cluster_name,
            "brokerName": config.broker_name,
            "brokerId": config.broker_id,
            "role": "SLAVE" if config.is_slave else config.broker_role,
            "addr": registration.broker_addr,
            "haAddr": registration.ha_addr,
            "maxPhyOffset": service.store.max_phy_offset,
            "registered": registration.registered,
            "nameServers": registration.registered_with,
            "registration": registration.stats(),
            "topics": len(service.topics.topics),
            "flushDiskType": config.flush_disk_type,
            "brokerPermission": service.topics.broker_permission,
            "replication": request.app[STATE_KEY].replication(),
        }
    )


async def list_topics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    topics = sorted(service.topics.topics.items())
    readable = reader(request)
    return web.json_response({"topics": [c.to_json() for name, c in topics if readable(name, False)]})


async def get_topic(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    name = request.match_info["topic"]
    if not may_read(request, name):
        return _error(403, f"no permission to SUB on topic {name}")
    config = service.topics.get(name)
    if config is None:
        return _error(404, f"topic {name} does not exist on this broker")
    data = config.to_json()
    data["queues"] = service.topic_stats(name)
    return web.json_response(data)


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 400 for anything else."""
    try:
        body = await request.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
        )
    return body


def topic_from_json(body: dict[str, Any], current: TopicConfig | None, name: str | None = None) -> TopicConfig:
    """A topic config from an admin request's JSON; ``attributes`` replace the topic's when given, else the
    current ones stay (``current``: the topic as the broker holds it). ``ValueError`` names a bad field."""
    topic = name or body.get("topicName") or body.get("topic")
    if not topic:
        raise ValueError("topicName is required")
    attributes = body.get("attributes")
    if attributes is not None and (
        not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values())
    ):
        raise ValueError('attributes must be an object of strings, e.g. {"message.type": "FIFO"}')
    try:
        read_queue_nums = int(body.get("readQueueNums", 8))
        return TopicConfig(
            topic_name=str(topic),
            read_queue_nums=read_queue_nums,
            write_queue_nums=int(body.get("writeQueueNums", read_queue_nums)),
            perm=int(body.get("perm", PERM_READ_WRITE)),
            order=bool(body.get("order", False)),
            attributes=dict(attributes) if attributes is not None else dict(current.attributes if current else {}),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad topic field: {exc}") from None


async def _topic_from_body(request: web.Request, service: BrokerService, name: str | None) -> TopicConfig:
    body = await _json_object(request)
    try:
        return topic_from_json(body, service.topics.get(str(name or body.get("topicName") or "")), name)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}), content_type="application/json") from None


async def upsert_topic(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    config = await _topic_from_body(request, service, request.match_info.get("topic"))
    try:
        saved = service.create_topic(config)
    except KrocketError as exc:
        return _error(400, exc.message)
    return web.json_response(saved.to_json())


async def batch_topics(request: web.Request) -> web.Response:
    """``{"topics": [config, ...], "delete": [name, ...]}``: many topics created, updated or deleted in one request
    (one fsync, one delta to the name servers); every config is checked before anything changes."""
    service = request.app[SERVICE_KEY]
    body = await _json_object(request)
    raw, names = body.get("topics") or [], body.get("delete") or []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        return _error(400, "topics must be a list of topic objects")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return _error(400, "delete must be a list of topic names")
    if len(raw) + len(names) > MAX_TOPICS_PER_BATCH:
        return _error(400, f"at most {MAX_TOPICS_PER_BATCH} topics per request, got {len(raw) + len(names)}")
    try:
        configs = [topic_from_json(t, service.topics.get(str(t.get("topicName") or ""))) for t in raw]
        changed = service.create_topics(configs)
        deleted = service.delete_topics(names)
    except ValueError as exc:
        return _error(400, str(exc))
    except KrocketError as exc:
        return _error(400, exc.message)
    return web.json_response({"applied": len(configs), "changed": len(changed), "deleted": deleted})


async def delete_topic(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    name = request.match_info["topic"]
    if not service.delete_topic(name):
        return _error(404, f"topic {name} does not exist on this broker")
    return web.json_response({"deleted": name})


async def set_permission(request: web.Request) -> web.Response:
    """``{"writable": false}`` withdraws the broker's write permission (RocketMQ's wipeWritePerm), ``true`` restores
    it; or ``{"perm": 4}``. In memory: a restarted broker takes its config's brokerPermission again."""
    body = await _json_object(request)
    service = request.app[SERVICE_KEY]
    if "perm" in body:
        perm = body["perm"]
    elif isinstance(body.get("writable"), bool):
        perm = PERM_READ_WRITE if body["writable"] else PERM_READ
    else:
        return _error(400, 'give "writable": true|false or "perm": 6|4|2')
    if not isinstance(perm, int) or isinstance(perm, bool):
        return _error(400, f"perm must be an integer, got {perm!r}")
    try:
        service.set_broker_permission(perm)
    except KrocketError as exc:
        return _error(400, exc.message)
    return web.json_response({"brokerPermission": service.topics.broker_permission})


async def lag(request: web.Request) -> web.Response:
    readable = reader(request)
    rows = [r for r in request.app[SERVICE_KEY].lag_by_topic() if readable(r["topic"], False)]
    for row in rows:
        row["groups"] = {g: n for g, n in row["groups"].items() if readable(g, True)}
    return web.json_response({"topics": rows})


async def list_groups(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    readable = reader(request)
    groups = [g for g in sorted(set(service.offsets.all_groups()) | set(service.consumers.groups)) if readable(g, True)]
    return web.json_response({"groups": [{"group": g, "clients": service.consumers.client_ids(g)} for g in groups]})


async def group_offsets(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    group = request.match_info["group"]
    if not may_read(request, group, group=True):
        return _error(403, f"no permission to SUB on group {group}")
    return web.json_response(
        {"group": group, "clients": service.consumers.client_ids(group), "offsets": service.consumer_progress(group)}
    )


async def get_group(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    group = request.match_info["group"]
    if not may_read(request, group, group=True):
        return _error(403, f"no permission to SUB on group {group}")
    config = service.groups.get(group)
    if config is None:
        return _error(404, f"subscription group {group} does not exist on this broker")
    return web.json_response(config.to_json())


async def upsert_group(request: web.Request) -> web.Response:
    """Create or update a subscription group (RocketMQ's SubscriptionGroupConfig JSON; the path names it)."""
    service = request.app[SERVICE_KEY]
    if service.config.is_slave:
        return _error(409, "subscription groups are created on the master (slaves copy them)")
    body = await _json_object(request)
    body["groupName"] = request.match_info["group"]
    try:
        saved = service.groups.upsert(SubscriptionGroupConfig.from_json(body))
    except KrocketError as exc:
        return _error(400, exc.message)
    return web.json_response(saved.to_json())


async def delete_group(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if service.config.is_slave:
        return _error(409, "subscription groups are deleted on the master (slaves copy them)")
    group = request.match_info["group"]
    if not service.groups.delete(group):
        return _error(404, f"subscription group {group} does not exist on this broker")
    service.traffic.forget_group(group)
    return web.json_response({"deleted": group})


def make_app(
    service: BrokerService, metrics_registry: Metrics, state: BrokerState, guard: HttpGuard | None = None
) -> web.Application:
    """With ``guard`` (the ACL is on), writes need an admin and topic and group data need SUB on them."""
    app = web.Application(middlewares=[guard.middleware] if guard is not None else [])
    app[SERVICE_KEY] = service
    app[METRICS_KEY] = metrics_registry
    app[STATE_KEY] = state
    if guard is not None:
        app[GUARD_KEY] = guard
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/api/v1/broker", broker_info),
            web.get("/api/v1/topics", list_topics),
            web.post("/api/v1/topics", upsert_topic),
            web.post("/api/v1/topics/batch", batch_topics),
            web.get("/api/v1/topics/{topic}", get_topic),
            web.put("/api/v1/topics/{topic}", upsert_topic),
            web.delete("/api/v1/topics/{topic}", delete_topic),
            web.get("/api/v1/groups", list_groups),
            web.get("/api/v1/groups/{group}/offsets", group_offsets),
            web.get("/api/v1/groups/{group}", get_group),
            web.put("/api/v1/groups/{group}", upsert_group),
            web.delete("/api/v1/groups/{group}", delete_group),
            web.put("/api/v1/broker/permission", set_permission),
            web.get("/api/v1/lag", lag),
        ]
    )
    add_console_routes(app, service)
    return app
