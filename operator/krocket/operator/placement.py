"""Topic queue placement over BrokerGroups, and the per-group action that brings a broker in line (pure).

A Topic's queues live on the master of every selected group (RocketMQ's `updateTopic -c <cluster>`):
each group gets `readQueues`/`writeQueues` queues; producers spread over all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from krocket.operator import build_brokergroup
from krocket.operator import constants as c
from krocket.operator.build_common import meta, spec_of

TOPIC_NAME_RE = re.compile(r"^[%|a-zA-Z0-9_-]{1,127}$")
PERM_READ = 4
PERM_WRITE = 2


class TopicSpecError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TopicConfig:
    topic_name: str
    read_queues: int
    write_queues: int
    perm: int

    def as_request(self) -> dict[str, Any]:
        """The body of POST /api/v1/topics on the broker admin API."""
        return {
            "topicName": self.topic_name,
            "readQueueNums": self.read_queues,
            "writeQueueNums": self.write_queues,
            "perm": self.perm,
        }


def topic_name(topic: Mapping[str, Any]) -> str:
    return str(spec_of(topic).get("topicName") or meta(topic)["name"])


def desired_config(topic: Mapping[str, Any]) -> TopicConfig:
    """Validate a Topic spec and return what every selected broker should hold; raise TopicSpecError."""
    spec = spec_of(topic)
    name = topic_name(topic)
    if not TOPIC_NAME_RE.match(name):
        raise TopicSpecError("InvalidSpec", f"topic name {name!r} must match {TOPIC_NAME_RE.pattern}")
    read, write = int(spec.get("readQueues", 8)), int(spec.get("writeQueues", 8))
    if read < 1 or write < 1:
        raise TopicSpecError("InvalidSpec", "readQueues and writeQueues must be at least 1")
    if write > read:
        raise TopicSpecError(
            "InvalidSpec",
            f"writeQueues ({write}) must not exceed readQueues ({read}): messages in the extra write queues "
            "would never be read",
        )
    perm = int(spec.get("perm", PERM_READ | PERM_WRITE))
    if perm not in (2, 4, 6):
        raise TopicSpecError("InvalidSpec", f"perm must be 2 (write), 4 (read) or 6 (read+write), not {perm}")
    previous = ((topic.get("status") or {}).get("topicName")) or None
    if previous and previous != name:
        raise TopicSpecError(
            "NotSupported",
            f"topicName cannot change ({previous!r} -> {name!r}); create a new Topic resource instead",
        )
    return TopicConfig(name, read, write, perm)


def allow_shrink(topic: Mapping[str, Any]) -> bool:
    annotations = meta(topic).get("annotations") or {}
    return str(annotations.get(c.ANN_ALLOW_QUEUE_SHRINK, "")).lower() == "true"


# --- selection --------------------------------------------------------------------------------------


def matches_selector(labels: Mapping[str, str], selector: Mapping[str, Any] | None) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions); an empty selector matches all."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def select_groups(topic: Mapping[str, Any], groups: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The BrokerGroups (same namespace as the Topic) a Topic's queues go to, sorted by broker name."""
    placement = spec_of(topic).get("placement") or {}
    ns = meta(topic).get("namespace")
    cluster = placement.get("clusterName")
    selector = placement.get("brokerGroupSelector")
    chosen = []
    for group in groups:
        if meta(group).get("namespace") != ns or meta(group).get("deletionTimestamp"):
            continue
        if cluster and build_brokergroup.cluster_name(group) != cluster:
            continue
        if selector is not None and not matches_selector(meta(group).get("labels") or {}, selector):
            continue
        chosen.append(group)
    return sorted(chosen, key=build_brokergroup.broker_name)


def find_conflict(topic: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Another Topic resource in the namespace managing the same topic name; the oldest one wins."""
    mine = topic_name(topic)
    me = (meta(topic).get("creationTimestamp") or "", meta(topic)["name"])
    for other in others:
        if meta(other).get("uid") == meta(topic).get("uid") or meta(other)["name"] == meta(topic)["name"]:
            continue
        if meta(other).get("deletionTimestamp") or topic_name(other) != mine:
            continue
        if (meta(other).get("creationTimestamp") or "", meta(other)["name"]) < me:
            return other
    return None


# --- per-group action -------------------------------------------------------------------------------

ActionKind = Literal["create", "update", "none", "refuse"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    message: str


def plan(desired: TopicConfig, actual: Mapping[str, Any] | None, *, shrink_allowed: bool) -> Action:
    """What to do on one broker: `actual` is the broker's topic object (None when it has no such topic)."""
    if actual is None:
        return Action("create", f"creating topic {desired.topic_name}")
    cur_read = int(actual.get("readQueueNums", 0))
    cur_write = int(actual.get("writeQueueNums", 0))
    cur_perm = int(actual.get("perm", 6))
    if (cur_read, cur_write, cur_perm) == (desired.read_queues, desired.write_queues, desired.perm):
        return Action("none", "in sync")
    shrinking = desired.read_queues < cur_read or desired.write_queues < cur_write
    if shrinking and not shrink_allowed:
        return Action(
            "refuse",
            f"queues would shrink (read {cur_read}->{desired.read_queues}, write {cur_write}->"
            f"{desired.write_queues}); messages in removed queues become unreadable. Raise the counts back, "
            f"or drain first (lower writeQueues, wait for consumers) and set annotation "
            f'{c.ANN_ALLOW_QUEUE_SHRINK}="true"',
        )
    return Action(
        "update",
        f"updating topic {desired.topic_name}: read {cur_read}->{desired.read_queues}, "
        f"write {cur_write}->{desired.write_queues}, perm {cur_perm}->{desired.perm}",
    )
