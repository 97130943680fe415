"""mqadmin's inspection and control calls, as functions of an ``Admin``: a message by queue offset, producer
connections, topic status, broker traffic (stats), broker config get/set and the write permission of a broker
on every name server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError, RemoteError
from krocket.common.headers import (
    AddWritePermOfBrokerHeader,
    GetProducerConnectionListHeader,
    GetTopicStatsInfoHeader,
    RequestHeader,
    WipeWritePermOfBrokerHeader,
)
from krocket.common.headers.groups import parse_queue_key
from krocket.common.headers.inspect import ADD_TOPIC_COUNT, WIPE_TOPIC_COUNT
from krocket.common.message import MessageExt
from krocket.common.properties import parse_properties, properties_text
from krocket.common.topic import validate_group, validate_topic

from . import broker_api
from .admin import Admin
from .subscription import build_subscription
from .types import MessageQueue, PullStatus

# The group RocketMQ's tools pull with (MixAll.TOOLS_CONSUMER_GROUP); it commits nothing.
TOOLS_CONSUMER_GROUP = "TOOLS_CONSUMER"


@dataclass(slots=True)
class QueueStatus:
    broker_name: str
    queue_id: int
    min_offset: int
    max_offset: int
    last_update_timestamp: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "brokerName": self.broker_name,
            "queueId": self.queue_id,
            "minOffset": self.min_offset,
            "maxOffset": self.max_offset,
            "lastUpdateTimestamp": self.last_update_timestamp,
        }


def _master(admin: Admin, broker_name: str, route_brokers: dict[str, dict[int, str]]) -> str:
    addrs = route_brokers.get(broker_name)
    if addrs is None:
        raise KrocketError(
            f"broker {broker_name!r} does not serve the topic; it is served by {', '.join(route_brokers)}"
        )
    addr = addrs.get(0) or next(iter(addrs.values()), None)
    if addr is None:
        raise KrocketError(f"broker {broker_name!r} has no broker online")
    return addr


async def message_by_offset(admin: Admin, topic: str, broker_name: str, queue_id: int, offset: int) -> MessageExt:
    """The message at queue ``offset`` of ``topic``'s queue ``queue_id`` on ``broker_name`` (queryMsgByOffset:
    one pull of one message by the tools group, nothing committed)."""
    validate_topic(topic)
    route = await admin.topic_route(topic)
    addr = _master(admin, broker_name, {b.broker_name: b.broker_addrs for b in route.broker_datas})
    queue = MessageQueue(topic, broker_name, queue_id)
    result = await broker_api.pull_message(
        admin.instance.pool, addr, TOOLS_CONSUMER_GROUP, queue, offset, build_subscription(topic), 1,
        timeout=admin.timeout,
    )  # fmt: skip
    found = [m for m in result.messages if m.queue_offset == offset]
    if result.status is not PullStatus.FOUND or not found:
        raise KrocketError(
            f"no message at offset {offset} of {topic} queue {queue_id} on {broker_name} "
            f"(the queue holds offsets {result.min_offset} to {result.max_offset - 1})"
        )
    return found[0]


async def producer_connections(admin: Admin, group: str) -> list[dict[str, Any]]:
    """RocketMQ's ProducerConnection (204) of ``group`` over every master: one row per client and broker it
    heartbeats to (clientId, clientAddr, language, version, lastUpdateTimestamp, brokerName). ``KrocketError``
    when no master knows a client of the group."""
    validate_group(group)
    masters = (await admin.cluster_info()).masters()
    rows: list[dict[str, Any]] = []
    for name, addr in sorted(masters.items()):
        response = await broker_api.invoke(
            admin.instance.pool,
            addr,
            RequestCode.GET_PRODUCER_CONNECTION_LIST,
            GetProducerConnectionListHeader(group),
            timeout=admin.timeout,
            accept=(ResponseCode.SUCCESS, ResponseCode.SYSTEM_ERROR),
        )
        if response.code != ResponseCode.SUCCESS:
            continue
        for conn in broker_api.json_body(response).get("connectionSet") or []:
            rows.append({**conn, "brokerName": name})
    if not rows:
        raise KrocketError(f"the producer group {group} is not online")
    return rows


async def topic_status(admin: Admin, topic: str) -> list[QueueStatus]:
    """Per broker and queue of ``topic`` (GET_TOPIC_STATS_INFO 202 on each master of its route): min and max
    offset and the store time of the last message."""
    validate_topic(topic)
    route = await admin.topic_route(topic)
    rows: list[QueueStatus] = []
    for broker in sorted(route.broker_datas, key=lambda b: b.broker_name):
        addr = broker.master_addr()
        if addr is None:
            raise KrocketError(f"broker {broker.broker_name} has no master online")
        response = await broker_api.invoke(
            admin.instance.pool,
            addr,
            RequestCode.GET_TOPIC_STATS_INFO,
            GetTopicStatsInfoHeader(topic),
            timeout=admin.timeout,
        )
        for key, entry in (broker_api.json_body(response).get("offsetTable") or {}).items():
            name, _, queue_id = parse_queue_key(key)
            rows.append(
                QueueStatus(
                    name,
                    queue_id,
                    int(entry["minOffset"]),
                    int(entry["maxOffset"]),
                    int(entry.get("lastUpdateTimestamp", 0)),
                )
            )
    return sorted(rows, key=lambda r: (r.broker_name, r.queue_id))


async def broker_traffic(admin: Admin) -> list[dict[str, Any]]:
    """Each master's traffic (GET_BROKER_CONSUME_STATS 317): ``topics`` (inTps, inMsgTotal, inBytesTotal) and
    ``groups`` (outTps, outMsgTotal, outBytesTotal, lag), each row with its brokerName."""
    masters = (await admin.cluster_info()).masters()
    replies = await asyncio.gather(
        *(
            broker_api.invoke(admin.instance.pool, a, RequestCode.GET_BROKER_CONSUME_STATS, timeout=admin.timeout)
            for a in masters.values()
        )
    )
    return [broker_api.json_body(r) for r in replies]


async def broker_config(admin: Admin, addr: str) -> dict[str, str]:
    """The broker's settings (GET_BROKER_CONFIG 26), camelCase key -> value."""
    response = await broker_api.invoke(admin.instance.pool, addr, RequestCode.GET_BROKER_CONFIG, timeout=admin.timeout)
    return parse_properties(response.body.decode(errors="replace"))


async def update_broker_config(admin: Admin, addrs: dict[str, str], updates: dict[str, str]) -> dict[str, str]:
    """UPDATE_BROKER_CONFIG (25) on each broker of ``addrs`` (label -> address); label -> the broker's answer.
    ``KrocketError`` naming each broker that refused (a key that cannot change at run time, a bad value)."""
    body = properties_text(updates).encode()
    replies = await asyncio.gather(
        *(
            broker_api.invoke(
                admin.instance.pool, a, RequestCode.UPDATE_BROKER_CONFIG, None, body, timeout=admin.timeout
            )
            for a in addrs.values()
        ),
        return_exceptions=True,
    )
    errors = [f"{label}: {r}" for label, r in zip(addrs, replies, strict=True) if isinstance(r, BaseException)]
    if errors:
        raise KrocketError("; ".join(errors))
    return {
        label: str(r.remark or "") for label, r in zip(addrs, replies, strict=True) if not isinstance(r, BaseException)
    }


async def _namesrv_all(admin: Admin, code: int, header: RequestHeader, count_field: str) -> dict[str, int]:
    """Send to every name server; name server address -> the count it answered. ``KrocketError`` naming each
    that failed."""
    addrs = admin.instance.namesrv.addresses
    replies = await asyncio.gather(
        *(admin.instance.pool.request(a, broker_api.command(code, header), admin.timeout) for a in addrs),
        return_exceptions=True,
    )
    counts: dict[str, int] = {}
    errors: list[str] = []
    for addr, reply in zip(addrs, replies, strict=True):
        if isinstance(reply, BaseException):
            errors.append(f"{addr}: {reply}")
        elif reply.code != ResponseCode.SUCCESS:
            errors.append(f"{addr}: {RemoteError(reply.code, reply.remark or '')}")
        else:
            counts[addr] = int(reply.ext_fields.get(count_field, "0") or 0)
    if errors:
        raise KrocketError(f"request {code} failed on name server(s) {'; '.join(errors)}")
    return counts


async def wipe_write_perm(admin: Admin, broker_name: str) -> dict[str, int]:
    """WIPE_WRITE_PERM_OF_BROKER (205) on every name server: producers stop sending to ``broker_name`` once their
    routes refresh. Name server -> topics changed."""
    return await _namesrv_all(
        admin, RequestCode.WIPE_WRITE_PERM_OF_BROKER, WipeWritePermOfBrokerHeader(broker_name), WIPE_TOPIC_COUNT
    )


async def add_write_perm(admin: Admin, broker_name: str) -> dict[str, int]:
    """ADD_WRITE_PERM_OF_BROKER (327) on every name server. Name server -> topics changed."""
    return await _namesrv_all(
        admin, RequestCode.ADD_WRITE_PERM_OF_BROKER, AddWritePermOfBrokerHeader(broker_name), ADD_TOPIC_COUNT
    )
