"""Headers of the subscription group and consumer tooling requests (200-222) and the MessageQueue JSON key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from krocket.common.headers.fields import RequestHeader, wire_name


@dataclass(slots=True)
class DeleteSubscriptionGroupHeader(RequestHeader):
    """DELETE_SUBSCRIPTIONGROUP (207)."""

    group_name: str


@dataclass(slots=True)
class GetConsumeStatsHeader(RequestHeader):
    """GET_CONSUME_STATS (208): one topic of the group, or all its topics when ``topic`` is left out."""

    consumer_group: str
    topic: str | None = None


@dataclass(slots=True)
class GetConsumerConnectionListHeader(RequestHeader):
    """GET_CONSUMER_CONNECTION_LIST (203)."""

    consumer_group: str


@dataclass(slots=True)
class ResetOffsetHeader(RequestHeader):
    """INVOKE_BROKER_TO_RESET_OFFSET (222), admin to broker, and RESET_CONSUMER_CLIENT_OFFSET (220), broker to
    client. ``timestamp`` -1 means the queue's end, 0 its first message; ``isForce`` false only moves back."""

    topic: str
    group: str
    timestamp: int
    is_force: bool = field(default=True, metadata=wire_name("isForce"))


# Value of ``timestamp`` that resets to the end of each queue (krocket; RocketMQ's tools resolve "now").
RESET_TO_LAST = -1


def queue_key(broker_name: str, topic: str, queue_id: int) -> str:
    """A MessageQueue as a JSON map key (``offsetTable`` of ConsumeStats and ResetOffsetBody): its JSON text."""
    return json.dumps({"brokerName": broker_name, "queueId": queue_id, "topic": topic}, separators=(",", ":"))


def parse_queue_key(key: str) -> tuple[str, str, int]:
    """(brokerName, topic, queueId) of a ``queue_key``."""
    d: Any = json.loads(key)
    return str(d["brokerName"]), str(d["topic"]), int(d["queueId"])


def encode_offset_table(broker_name: str, topic: str, offsets: dict[int, int]) -> dict[str, dict[str, int]]:
    """ResetOffsetBody: ``{"offsetTable": {queue_key: offset}}``."""
    return {"offsetTable": {queue_key(broker_name, topic, q): o for q, o in sorted(offsets.items())}}


def encode_offset_list_for_c(broker_name: str, topic: str, offsets: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
    """ResetOffsetBodyForC, what RocketMQ sends C++ clients (their 1.x decoder reads a list):
    ``{"offsetTable": [{"brokerName", "queueId", "topic", "offset"}]}``."""
    return {
        "offsetTable": [
            {"brokerName": broker_name, "queueId": q, "topic": topic, "offset": o} for q, o in sorted(offsets.items())
        ]
    }


def decode_offset_table(body: bytes) -> dict[tuple[str, str, int], int]:
    """(brokerName, topic, queueId) -> offset of a ResetOffsetBody (or of the ForC list form); ``ValueError`` when
    it is neither."""
    data: Any = json.loads(body or b"{}")
    table = data.get("offsetTable") if isinstance(data, dict) else None
    try:
        if isinstance(table, list):
            return {(str(e["brokerName"]), str(e["topic"]), int(e["queueId"])): int(e["offset"]) for e in table}
        if isinstance(table, dict):
            return {parse_queue_key(key): int(offset) for key, offset in table.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"offsetTable has a bad entry: {exc}") from None
    raise ValueError("body has no offsetTable")
