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
