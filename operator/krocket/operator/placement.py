"""Topic queue placement over BrokerGroups, and the per-group action that brings a broker in line (pure).

A Topic's queues live on the master of every selected group (RocketMQ's `updateTopic -c <cluster>`):
each group gets `readQueues`/`writeQueues` queues; producers spread over all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from krocket.common.codes import PERM_READ, PERM_READ_WRITE, PERM_WRITE
from krocket.common.errors import MessageIllegalError
from krocket.common.message_type import (
    DEFAULT_TOPIC_MESSAGE_TYPE,
    MESSAGE_TYPE_ATTRIBUTE,
    TOPIC_MESSAGE_TYPES,
    topic_message_type,
)
from krocket.common.topic import DEFAULT_QUEUE_NUMS, TopicConfig, is_system_topic, validate_topic
from krocket.operator import build_brokergroup
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator.build_common import meta, spec_of
from krocket.operator.identity import applied_cluster_name

TOPIC_PERMS = (PERM_WRITE, PERM_READ, PERM_READ_WRITE)
"""The perm values a Topic may ask for (RocketMQ's inherit and priority bits are not offered)."""


class TopicSpecError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def topic_name(topic: Mapping[str, Any]) -> str:
    return str(spec_of(topic).get("topicName") or meta(topic)["name"])


def desired_config(topic: Mapping[str, Any]) -> TopicConfig:
    """Validate a Topic spec and return what every selected broker should hold; raise TopicSpecError."""
    spec = spec_of(topic)
    name = topic_name(topic)
    try:
        validate_topic(name)
    except MessageIllegalError as e:
        raise TopicSpecError(cond.REASON_INVALID, e.message) from None
    if is_system_topic(name):
        raise TopicSpecError(
            cond.REASON_INVALID,
            f"{name!r} is a system topic (the brokers own it: delays, timers, transactions, %RETRY%/%DLQ% topics "
            "of consumer groups); a Topic resource may not manage it",
        )
    read = int(spec.get("readQueues", DEFAULT_QUEUE_NUMS))
    write = int(spec.get("writeQueues", DEFAULT_QUEUE_NUMS))
    if read < 1 or write < 1:
        raise TopicSpecError(cond.REASON_INVALID, "readQueues and writeQueues must be at least 1")
    if write > read:
        raise TopicSpecError(
            cond.REASON_INVALID,
            f"writeQueues ({write}) must not exceed readQueues ({read}): messages in the extra write queues "
            "would never be read",
        )
    perm = int(spec.get("perm", PERM_READ_WRITE))
    if perm not in TOPIC_PERMS:
        raise TopicSpecError(
            cond.REASON_INVALID,
            f"perm must be {PERM_WRITE} (write), {PERM_READ} (read) or {PERM_READ_WRITE} (read+write), not {perm}",
        )
    message_type = str(spec.get("messageType") or DEFAULT_TOPIC_MESSAGE_TYPE)
    if message_type not in TOPIC_MESSAGE_TYPES:
        raise TopicSpecError(
            cond.REASON_INVALID, f"messageType must be one of {', '.join(TOPIC_MESSAGE_TYPES)}, not {message_type!r}"
        )
    previous = ((topic.get("status") or {}).get("topicName")) or None
    if previous and previous != name:
        raise TopicSpecError(
            cond.REASON_NOT_SUPPORTED,
            f"topicName cannot change ({previous!r} -> {name!r}); create a new Topic resource instead",
        )
    return TopicConfig(name, read, write, perm, attributes={MESSAGE_TYPE_ATTRIBUTE: message_type})


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
    return groups_matching(meta(topic).get("namespace"), spec_of(topic).get("placement") or {}, groups)


def groups_matching(
    ns: str | None, placement: Mapping[str, Any], groups: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The live BrokerGroups of namespace `ns` with `placement`'s `clusterName` and matching its
    `brokerGroupSelector` (each only where given), sorted by broker name."""
    cluster = placement.get("clusterName")
    selector = placement.get("brokerGroupSelector")
    chosen = []
    for group in groups:
        if meta(group).get("namespace") != ns or meta(group).get("deletionTimestamp"):
            continue
        if cluster and applied_cluster_name(group) != cluster:
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
    apply: TopicConfig | None = None  # what to send to the broker (a refused shrink may still apply phase one)


def broker_topic(answer: Mapping[str, Any] | None) -> TopicConfig | None:
    """The broker admin API's topic object as a TopicConfig; None when the broker has no such topic."""
    return None if answer is None else TopicConfig.from_json(dict(answer))


def with_attributes_of(cfg: TopicConfig, held: TopicConfig) -> TopicConfig:
    """`cfg` carrying the attributes the broker holds, with `cfg`'s own on top: the operator sets the attributes a
    Topic declares (message.type) and keeps the others."""
    return dataclasses.replace(cfg, attributes={**held.attributes, **cfg.attributes})


def reads_cut(desired: TopicConfig, actual: TopicConfig | None) -> bool:
    """Whether the spec removes read queues the broker holds (the lossy half of a queue shrink)."""
    return actual is not None and desired.read_queue_nums < actual.read_queue_nums


def shape(cfg: TopicConfig) -> tuple[int, int, int, str]:
    """What the operator keeps a broker's topic at: (readQueues, writeQueues, perm, message type)."""
    return cfg.read_queue_nums, cfg.write_queue_nums, cfg.perm, topic_message_type(cfg)


def plan(
    desired: TopicConfig,
    actual: TopicConfig | None,
    *,
    shrink_allowed: bool,
    removed_lag: Mapping[str, int] | None = None,
) -> Action:
    """What to do on one broker: `actual` is the broker's topic (None when it has no such topic).

    A queue shrink has two phases. Lowering writeQueues (readQueues unchanged) only stops new messages from
    going to the upper queues; consumers keep reading them: always applied. Lowering readQueues makes the
    upper queues unreadable: applied only when `removed_lag` (unconsumed messages per group in the queues that
    go; None when unknown) is empty, or with the annotation that accepts the loss. While it is refused, the
    first phase (writeQueues, perm and the message type) is still applied, so the queues that go drain.
    A topic without a message.type attribute is NORMAL (as RocketMQ reads it): a NORMAL Topic leaves it as it is.
    """
    if actual is None:
        return Action("create", f"creating topic {desired.topic_name}", desired)
    if shape(actual) == shape(desired):
        return Action("none", "in sync")
    cur_read, cur_write, cur_perm, cur_type = shape(actual)
    want_type = topic_message_type(desired)
    wanted = with_attributes_of(desired, actual)
    type_change = f", message type {cur_type}->{want_type}" if cur_type != want_type else ""
    update = Action(
        "update",
        f"updating topic {desired.topic_name}: read {cur_read}->{desired.read_queue_nums}, "
        f"write {cur_write}->{desired.write_queue_nums}, perm {cur_perm}->{desired.perm}{type_change}",
        wanted,
    )
    if not reads_cut(desired, actual) or shrink_allowed or removed_lag == {}:
        return update
    first_phase = dataclasses.replace(wanted, read_queue_nums=cur_read)
    gone = f"queues {desired.read_queue_nums}..{cur_read - 1}"
    if removed_lag is None:
        why = f"the broker does not report what {gone} hold"
    else:
        total = sum(removed_lag.values())
        lags = ", ".join(f"{g}={n}" for g, n in sorted(removed_lag.items()))
        why = f"{gone} still hold {total} unconsumed message(s) ({lags})"
    writes_done = (first_phase.write_queue_nums, first_phase.perm) == (cur_write, cur_perm)
    phase_one = "" if writes_done else f"; writeQueues lowered to {desired.write_queue_nums} first"
    return Action(
        "refuse",
        f"readQueues stays {cur_read} (spec {desired.read_queue_nums}): {why}{phase_one}. It is lowered once "
        f"consumers have caught up; to accept losing those messages set annotation "
        f'{c.ANN_ALLOW_QUEUE_SHRINK}="true"',
        None if shape(first_phase) == shape(actual) else first_phase,
    )
