"""What the console shows, computed from the brokers' admin API answers: pure functions, no I/O.

The name server's console handlers (``routes``) fetch each broker's JSON and hand it here: cluster rows with
health and replication lag, topics summed over broker groups, a group's lag per queue, the lag history behind
the group chart, and the topic-create checks (the CLI's rules).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from krocket.common.errors import MessageIllegalError
from krocket.common.route import MASTER_ID
from krocket.common.topic import check_queue_nums, is_system_topic, validate_topic

STALE_AFTER_SECONDS = 45.0  # a broker registers every 30 s: one missed round is "stale"
HISTORY_SECONDS = 600
HISTORY_POINTS = 600


@dataclass(slots=True, frozen=True)
class BrokerRef:
    """One registered broker as the registry knows it."""

    cluster: str
    broker_name: str
    broker_id: int
    addr: str
    http_url: str
    age_seconds: float
    grpc_addr: str = ""  # the 5.x gRPC endpoint, "" when it serves none


def cluster_rows(brokers: Iterable[BrokerRef], infos: Mapping[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per broker, masters first within a group: role, health and, for a slave, the bytes it is behind
    its master (the master's commit log end minus its own). ``infos`` maps a broker address to its
    ``/api/v1/broker`` answer, None when it did not answer."""
    refs = sorted(brokers, key=lambda b: (b.cluster, b.broker_name, b.broker_id))
    master_end: dict[str, int] = {}
    for ref in refs:
        info = infos.get(ref.addr)
        if ref.broker_id == MASTER_ID and info is not None:
            master_end[ref.broker_name] = int(info.get("maxPhyOffset", 0))
    rows = []
    for ref in refs:
        info = infos.get(ref.addr)
        if info is None:
            health = "unreachable" if ref.http_url else "no HTTP address"
        elif ref.age_seconds > STALE_AFTER_SECONDS:
            health = "stale"
        else:
            health = "ok"
        end = int(info.get("maxPhyOffset", 0)) if info is not None else None
        behind: int | None = None
        if ref.broker_id != MASTER_ID and end is not None and ref.broker_name in master_end:
            behind = max(0, master_end[ref.broker_name] - end)
        rows.append(
            {
                "cluster": ref.cluster,
                "brokerName": ref.broker_name,
                "brokerId": ref.broker_id,
                "role": "MASTER" if ref.broker_id == MASTER_ID else "SLAVE",
                "addr": ref.addr,
                "httpUrl": ref.http_url,
                "grpcAddr": ref.grpc_addr,
                "health": health,
                "lastUpdateAgeSeconds": round(ref.age_seconds, 1),
                "maxPhyOffset": end,
                "bytesBehind": behind,
            }
        )
    return rows


def merge_topics(per_broker: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Topics over every broker group: per broker its queues, message count and rates; totals summed."""
    merged: dict[str, dict[str, Any]] = {}
    for broker_name, topics in sorted(per_broker.items()):
        for topic in topics:
            name = str(topic["topicName"])
            row = merged.setdefault(
                name, {"topic": name, "brokers": [], "messages": 0, "inTps": 0.0, "outTps": 0.0, "queues": 0}
            )
            row["brokers"].append({"brokerName": broker_name, **topic})
            row["messages"] += int(topic.get("messages", 0))
            row["inTps"] = round(row["inTps"] + float(topic.get("inTps", 0.0)), 3)
            row["outTps"] = round(row["outTps"] + float(topic.get("outTps", 0.0)), 3)
            row["queues"] += int(topic.get("readQueueNums", 0))
    return [merged[name] for name in sorted(merged)]


def group_lag(per_broker: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """A group's members and its lag per queue over every broker group (``per_broker``: broker name to its
    ``/api/v1/console/groups/{group}`` answer). Retry topics (``%RETRY%``) count as the group's too."""
    members: set[str] = set()
    queues: list[dict[str, Any]] = []
    out_tps = 0.0
    for broker_name, answer in sorted(per_broker.items()):
        members.update(answer.get("clients", []))
        out_tps += float(answer.get("outTps", 0.0))
        for row in answer.get("offsets", []):
            queues.append({"brokerName": broker_name, **row})
    queues.sort(key=lambda q: (q["topic"], q["brokerName"], q["queueId"]))
    return {
        "members": sorted(members),
        "queues": queues,
        "totalLag": sum(int(q.get("lag", 0)) for q in queues),
        "outTps": round(out_tps, 3),
    }


class LagHistory:
    """Each group's total lag over the last ``HISTORY_SECONDS``: one point per console read of the group (the
    page reads every few seconds while it shows the group), at most one per second, at most ``HISTORY_POINTS``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._points: dict[str, deque[tuple[float, int]]] = {}

    def record(self, group: str, lag: int) -> list[tuple[float, int]]:
        """Add a point for ``group`` and return its history, oldest first."""
        now = self._clock()
        points = self._points.setdefault(group, deque(maxlen=HISTORY_POINTS))
        if points and now - points[-1][0] < 1.0:
            points[-1] = (points[-1][0], lag)
        else:
            points.append((now, lag))
        while points and now - points[0][0] > HISTORY_SECONDS:
            points.popleft()
        return list(points)


@dataclass(slots=True, frozen=True)
class TopicRequest:
    topic: str
    read_queue_nums: int
    write_queue_nums: int


def topic_request(body: Any) -> TopicRequest:
    """A topic-create form, checked as ``krocket topic create`` checks it: the name rules, 1 <= write queues <=
    read queues <= 1024, and no system topic. Raises ``MessageIllegalError`` naming the rule."""
    if not isinstance(body, dict):
        raise MessageIllegalError("the request must be a JSON object")
    topic = str(body.get("topic", "")).strip()
    validate_topic(topic)
    if is_system_topic(topic):
        raise MessageIllegalError(f"{topic} is a system topic: the brokers own it (the CLI needs --force)")
    try:
        read = int(body.get("readQueueNums", 8))
        write = int(body.get("writeQueueNums", read))
    except (TypeError, ValueError):
        raise MessageIllegalError("queue numbers must be whole numbers") from None
    check_queue_nums(read, write)
    return TopicRequest(topic, read, write)
