"""The console's handlers on the name server's aiohttp app: the page at ``/``, its static files, and
``/console/api/...``, which reads every registered broker's HTTP admin API and aggregates (``aggregate``).

The caller's ``Authorization`` header goes on to the brokers unchanged: with the ACL on, a broker that answers
401 makes the console answer 401 ("credentials required", no data), and the page asks for credentials.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from krocket.common.errors import MessageIllegalError
from krocket.common.route import MASTER_ID
from krocket.namesrv.console.aggregate import (
    BrokerRef,
    LagHistory,
    cluster_rows,
    group_lag,
    merge_topics,
    topic_request,
)
from krocket.namesrv.registry import RouteRegistry

REGISTRY_KEY = web.AppKey("console_registry", RouteRegistry)
HISTORY_KEY = web.AppKey("console_history", LagHistory)
SESSION_KEY = web.AppKey("console_session", dict)
BROKER_TIMEOUT = aiohttp.ClientTimeout(total=5)
CREDENTIALS_REQUIRED = "credentials required: the brokers' ACL is on; sign in with an access key or a token"
STATIC = resources.files("krocket.namesrv.console") / "static"


class BrokerAnswer:
    """One broker's answer: ``status`` 0 when it could not be reached."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


class ConsoleError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _brokers(request: web.Request) -> list[BrokerRef]:
    registry = request.app[REGISTRY_KEY]
    now = registry.now()
    return [
        BrokerRef(b.cluster, b.broker_name, b.broker_id, b.addr, b.http_url, max(0.0, now - b.last_update), b.grpc_addr)
        for b in registry.live_brokers()
    ]


def _masters(request: web.Request) -> list[BrokerRef]:
    return [b for b in _brokers(request) if b.broker_id == MASTER_ID and b.http_url]


def _session(app: web.Application) -> aiohttp.ClientSession:
    holder = app[SESSION_KEY]
    session = holder.get("session")
    if session is None or session.closed:
        session = holder["session"] = aiohttp.ClientSession(timeout=BROKER_TIMEOUT)
    return session


async def _close_session(app: web.Application) -> None:
    session = app[SESSION_KEY].get("session")
    if session is not None:
        await session.close()


async def _call(request: web.Request, broker: BrokerRef, method: str, path: str, **kwargs: Any) -> BrokerAnswer:
    headers = {}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    try:
        async with _session(request.app).request(method, broker.http_url + path, headers=headers, **kwargs) as response:
            try:
                body = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                body = None
            return BrokerAnswer(response.status, body)
    except (TimeoutError, aiohttp.ClientError, OSError):
        return BrokerAnswer(0, None)


async def _call_all(
    request: web.Request, brokers: list[BrokerRef], method: str, path: str, **kwargs: Any
) -> dict[str, BrokerAnswer]:
    """Each broker's answer by broker name; a 401 from any raises "credentials required", a 403 its reason."""
    answers = await asyncio.gather(*(_call(request, b, method, path, **kwargs) for b in brokers))
    for answer in answers:
        if answer.status == 401:
            raise ConsoleError(401, CREDENTIALS_REQUIRED)
        if answer.status == 403:
            reason = answer.body.get("error") if isinstance(answer.body, dict) else None
            raise ConsoleError(403, str(reason or "forbidden"))
    return {b.broker_name: a for b, a in zip(brokers, answers, strict=True)}


def _ok(answers: dict[str, BrokerAnswer]) -> dict[str, Any]:
    return {name: a.body for name, a in answers.items() if a.status == 200 and isinstance(a.body, dict)}


@web.middleware
async def console_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ConsoleError as exc:
        body = {"error": exc.message, "credentialsRequired": exc.status == 401}
        return web.json_response(body, status=exc.status)


async def index(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC / "index.html").read_bytes(),
        content_type="text/html",
        headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'"},
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {"console.js": "application/javascript", "console.css": "text/css"}
    if name not in types:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=types[name])


async def cluster(request: web.Request) -> web.Response:
    brokers = _brokers(request)
    await _call_all(request, [b for b in brokers if b.http_url], "GET", "/api/v1/console/whoami")
    answers = await asyncio.gather(*(_call(request, b, "GET", "/api/v1/broker") for b in brokers if b.http_url))
    with_http = [b for b in brokers if b.http_url]
    infos = {
        b.addr: a.body for b, a in zip(with_http, answers, strict=True) if a.status == 200 and isinstance(a.body, dict)
    }
    return web.json_response({"brokers": cluster_rows(brokers, infos)})


async def topics(request: web.Request) -> web.Response:
    answers = _ok(await _call_all(request, _masters(request), "GET", "/api/v1/console/topics"))
    return web.json_response({"topics": merge_topics({name: body["topics"] for name, body in answers.items()})})


async def create_topic(request: web.Request) -> web.Response:
    try:
        wanted = topic_request(await request.json())
    except (ValueError, json.JSONDecodeError):
        raise ConsoleError(400, "the request must be a JSON object") from None
    except MessageIllegalError as exc:
        raise ConsoleError(400, exc.message) from None
    masters = _masters(request)
    if not masters:
        raise ConsoleError(503, "no master broker with an HTTP address is registered")
    body = {
        "topicName": wanted.topic,
        "readQueueNums": wanted.read_queue_nums,
        "writeQueueNums": wanted.write_queue_nums,
    }
    answers = await _call_all(request, masters, "POST", "/api/v1/topics", json=body)
    failed = {name: a for name, a in answers.items() if a.status != 200}
    if failed:
        reasons = "; ".join(
            f"{name}: {a.body.get('error') if isinstance(a.body, dict) else 'unreachable'}"
            for name, a in sorted(failed.items())
        )
        raise ConsoleError(400, f"topic {wanted.topic} not created on every broker: {reasons}")
    return web.json_response({"topic": wanted.topic, "brokers": sorted(answers)})


async def groups(request: web.Request) -> web.Response:
    answers = _ok(await _call_all(request, _masters(request), "GET", "/api/v1/groups"))
    members: dict[str, set[str]] = {}
    for body in answers.values():
        for row in body.get("groups", []):
            members.setdefault(str(row["group"]), set()).update(row.get("clients", []))
    return web.json_response({"groups": [{"group": g, "members": sorted(m)} for g, m in sorted(members.items())]})


async def group(request: web.Request) -> web.Response:
    name = request.match_info["group"]
    answers = _ok(await _call_all(request, _masters(request), "GET", f"/api/v1/console/groups/{name}"))
    view = group_lag(answers)
    history = request.app[HISTORY_KEY].record(name, view["totalLag"])
    return web.json_response({"group": name, **view, "history": [[round(t, 1), lag] for t, lag in history]})


async def messages(request: web.Request) -> web.Response:
    query = {k: v for k, v in request.query.items() if k in ("topic", "key", "id") and v}
    if "key" not in query and "id" not in query:
        raise ConsoleError(400, "give a message id, or a topic and a key")
    if "key" in query and "topic" not in query:
        raise ConsoleError(400, "a key lookup needs its topic")
    answers = _ok(await _call_all(request, _masters(request), "GET", "/api/v1/console/messages", params=query))
    found = [{"brokerName": name, **m} for name, body in sorted(answers.items()) for m in body.get("messages", [])]
    return web.json_response({"messages": found})


async def dead_letters(request: web.Request) -> web.Response:
    name = request.match_info["group"]
    answers = _ok(await _call_all(request, _masters(request), "GET", f"/api/v1/console/dlq/{name}"))
    found = [{"brokerName": b, **m} for b, body in sorted(answers.items()) for m in body.get("messages", [])]
    return web.json_response({"group": name, "messages": found})


async def resend(request: web.Request) -> web.Response:
    name = request.match_info["group"]
    try:
        body = await request.json()
    except (ValueError, json.JSONDecodeError):
        raise ConsoleError(400, "the request must be a JSON object") from None
    broker_name = body.get("brokerName") if isinstance(body, dict) else None
    targets = [b for b in _masters(request) if b.broker_name == broker_name]
    if not targets:
        raise ConsoleError(400, f"no master broker {broker_name!r} with an HTTP address")
    answers = await _call_all(
        request, targets, "POST", f"/api/v1/console/dlq/{name}/resend", json={"msgId": body.get("msgId")}
    )
    answer = answers[targets[0].broker_name]
    if answer.status != 200:
        reason = answer.body.get("error") if isinstance(answer.body, dict) else "broker unreachable"
        raise ConsoleError(400, str(reason))
    return web.json_response(answer.body)


def add_console(app: web.Application, registry: RouteRegistry) -> None:
    """The console on ``app``: ``/`` and ``/console/...``."""
    app[REGISTRY_KEY] = registry
    app[HISTORY_KEY] = LagHistory()
    app[SESSION_KEY] = {}
    app.middlewares.append(console_errors)
    app.on_cleanup.append(_close_session)
    app.add_routes(
        [
            web.get("/", index),
            web.get("/console/static/{name}", static),
            web.get("/console/api/cluster", cluster),
            web.get("/console/api/topics", topics),
            web.post("/console/api/topics", create_topic),
            web.get("/console/api/groups", groups),
            web.get("/console/api/groups/{group}", group),
            web.get("/console/api/messages", messages),
            web.get("/console/api/dlq/{group}", dead_letters),
            web.post("/console/api/dlq/{group}/resend", resend),
        ]
    )
