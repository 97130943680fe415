"""The broker's admin API for the name server's console: topic stats with rates, a group's progress with pull
rates, messages by id or key, and a group's dead letters with resend.

Under the ACL (``krocket.broker.acl.http_guard``) these paths need credentials like the rest of the admin API;
topic and group data need SUB on them, and resend (a POST) needs an admin.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from krocket.broker.acl.http_guard import may_read, reader
from krocket.broker.service import BrokerService, SendOutcome
from krocket.common.errors import KrocketError
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_MAX_OFFSET,
    PROPERTY_MIN_OFFSET,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_UNIQ_KEY,
    PROPERTY_WAIT,
    MessageExt,
)
from krocket.common.message_id import decode_offset_msg_id, pack_host
from krocket.common.record import RecordError, decode_record, decode_records
from krocket.common.topic import DLQ_GROUP_PREFIX

SERVICE_KEY = web.AppKey("console_service", BrokerService)
MAX_MESSAGES = 32
MAX_DEAD_LETTERS = 256
# What the broker or the retry path set on a dead letter: not carried into a resent message (as `krocket dlq`).
_NOT_RESENT = frozenset(
    {
        PROPERTY_DELAY,
        PROPERTY_MAX_OFFSET,
        PROPERTY_MIN_OFFSET,
        PROPERTY_ORIGIN_MESSAGE_ID,
        PROPERTY_RETRY_TOPIC,
        PROPERTY_UNIQ_KEY,
        PROPERTY_REAL_TOPIC,
        PROPERTY_REAL_QUEUE_ID,
        "CONSUME_START_TIME",
        "RECONSUME_TIME",
        PROPERTY_WAIT,
    }
)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def message_json(msg: MessageExt) -> dict[str, Any]:
    """One stored message as the console shows it (the body as text, undecodable bytes replaced)."""
    return {
        "msgId": msg.msg_id,
        "offsetMsgId": msg.offset_msg_id,
        "topic": msg.topic,
        "queueId": msg.queue_id,
        "queueOffset": msg.queue_offset,
        "commitLogOffset": msg.commit_log_offset,
        "storeTimestamp": msg.store_timestamp,
        "bornTimestamp": msg.born_timestamp,
        "reconsumeTimes": msg.reconsume_times,
        "tags": msg.tags,
        "keys": msg.keys,
        "properties": dict(msg.properties),
        "body": msg.body.decode(errors="replace"),
        "bodyBytes": len(msg.body),
    }


def original_topic(msg: MessageExt) -> str:
    props = msg.properties
    return props.get(PROPERTY_RETRY_TOPIC) or props.get(PROPERTY_REAL_TOPIC) or msg.topic


async def topics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    readable = reader(request)
    traffic = service.traffic
    rows = []
    for name, config in sorted(service.topics.topics.items()):
        if not readable(name, False):
            continue
        queues = [
            {
                "queueId": q,
                "minOffset": service.store.min_offset(name, q),
                "maxOffset": service.store.max_offset(name, q),
            }
            for q in range(config.read_queue_nums)
        ]
        put_tps, put_bps = traffic.put_rate(name)
        get_tps, get_bps = traffic.get_rate(topic=name)
        total = traffic.put.get(name)
        rows.append(
            {
                **config.to_json(),
                "queues": queues,
                "messages": sum(q["maxOffset"] - q["minOffset"] for q in queues),
                "inTps": round(put_tps, 3),
                "inBytesPerSecond": round(put_bps, 1),
                "outTps": round(get_tps, 3),
                "outBytesPerSecond": round(get_bps, 1),
                "inTotal": total.messages if total is not None else 0,
            }
        )
    return web.json_response({"topics": rows})


async def group(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    name = request.match_info["group"]
    if not may_read(request, name, group=True):
        return _error(403, f"no permission to SUB on group {name}")
    progress = service.consumer_progress(name)
    out_tps, out_bps = service.traffic.get_rate(group=name)
    return web.json_response(
        {
            "group": name,
            "clients": service.consumers.client_ids(name),
            "offsets": progress,
            "outTps": round(out_tps, 3),
            "outBytesPerSecond": round(out_bps, 1),
        }
    )


def _by_offset_id(service: BrokerService, msg_id: str) -> MessageExt | None:
    try:
        _host, offset = decode_offset_msg_id(msg_id)
    except (ValueError, KrocketError):
        return None
    if not service.store.min_phy_offset <= offset < service.store.max_phy_offset:
        return None
    record = service.store.read_record(offset)
    if record is None:
        return None
    try:
        return decode_record(record)
    except RecordError:
        return None


async def messages(request: web.Request) -> web.Response:
    """``?topic=T&key=K``: messages of T with key K (KEYS or the unique id), newest first; ``?id=I`` (with or
    without ``topic``): the message whose offset id is I, else (with a topic) whose unique id is I."""
    service = request.app[SERVICE_KEY]
    topic = request.query.get("topic", "")
    key = request.query.get("key", "")
    msg_id = request.query.get("id", "")
    if not key and not msg_id:
        return _error(400, "give ?id= or ?topic=&key=")
    if topic and not may_read(request, topic):
        return _error(403, f"no permission to SUB on topic {topic}")
    found: list[MessageExt] = []
    if msg_id:
        by_offset = _by_offset_id(service, msg_id)
        if by_offset is not None and may_read(request, by_offset.topic):
            found.append(by_offset)
    if not found and topic:
        try:
            records = service.store.query_by_key(topic, key or msg_id, MAX_MESSAGES)
        except KrocketError as exc:
            return _error(400, exc.message)
        found = [decode_record(r) for r in records]
        if msg_id:
            found = [m for m in found if m.msg_id == msg_id]
    return web.json_response({"messages": [message_json(m) for m in found]})


def _dead_letters(service: BrokerService, group: str) -> list[MessageExt]:
    topic = DLQ_GROUP_PREFIX + group
    out: list[MessageExt] = []
    for queue_id in service.store.queue_ids(topic):
        offset = service.store.min_offset(topic, queue_id)
        end = service.store.max_offset(topic, queue_id)
        while offset < end and len(out) < MAX_DEAD_LETTERS:
            result = service.store.get_messages(topic, queue_id, offset, MAX_MESSAGES)
            if result.count == 0 or result.next_begin_offset <= offset:
                break
            out.extend(decode_records(result.body))
            offset = result.next_begin_offset
    return out


async def dead_letters(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    name = request.match_info["group"]
    if not may_read(request, name, group=True):
        return _error(403, f"no permission to SUB on group {name}")
    letters = _dead_letters(service, name)
    return web.json_response(
        {"group": name, "messages": [{**message_json(m), "originalTopic": original_topic(m)} for m in letters]}
    )


async def resend_dead_letter(request: web.Request) -> web.Response:
    """Body ``{"msgId": ...}``: that dead letter is put again, as a new message, into its original topic here."""
    service = request.app[SERVICE_KEY]
    name = request.match_info["group"]
    try:
        body = await request.json()
    except (ValueError, json.JSONDecodeError):
        return _error(400, "body must be a JSON object with msgId")
    msg_id = body.get("msgId") if isinstance(body, dict) else None
    if not isinstance(msg_id, str) or not msg_id:
        return _error(400, "msgId is required")
    chosen = [m for m in _dead_letters(service, name) if msg_id in (m.msg_id, m.offset_msg_id)]
    if not chosen:
        return _error(404, f"no message {msg_id} in {DLQ_GROUP_PREFIX}{name}")
    msg = chosen[0]
    topic = original_topic(msg)
    properties = {k: v for k, v in msg.properties.items() if k not in _NOT_RESENT}
    properties[PROPERTY_UNIQ_KEY] = uuid.uuid4().hex.upper()
    try:
        outcome = service.send(
            topic, -1, msg.body, properties, msg.flag, 0, msg.born_timestamp, pack_host(("127.0.0.1", 0))
        )
        if not isinstance(outcome, SendOutcome):
            await outcome
    except KrocketError as exc:
        return _error(400, exc.message)
    return web.json_response({"msgId": msg.msg_id, "topic": topic, "newMsgId": properties[PROPERTY_UNIQ_KEY]})


async def whoami(request: web.Request) -> web.Response:
    """Answers (200) only to a caller the ACL lets in: the console's check that its credentials hold."""
    return web.json_response({"ok": True})


def add_console_routes(app: web.Application, service: BrokerService) -> None:
    app[SERVICE_KEY] = service
    app.add_routes(
        [
            web.get("/api/v1/console/whoami", whoami),
            web.get("/api/v1/console/topics", topics),
            web.get("/api/v1/console/groups/{group}", group),
            web.get("/api/v1/console/messages", messages),
            web.get("/api/v1/console/dlq/{group}", dead_letters),
            web.post("/api/v1/console/dlq/{group}/resend", resend_dead_letter),
        ]
    )
