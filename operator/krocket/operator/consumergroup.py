"""A ConsumerGroup's spec (pure): the subscription group config every selected master holds, the BrokerGroups
it goes to, and which resource owns a group name when two claim it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from krocket.common.errors import MessageIllegalError
from krocket.common.subscription_group import SubscriptionGroupConfig
from krocket.common.topic import validate_topic
from krocket.operator import conditions as cond
from krocket.operator.build_common import meta, spec_of
from krocket.operator.placement import groups_matching

SYSTEM_GROUP_PREFIXES = ("%", "CID_RMQ_SYS_", "TOOLS_CONSUMER", "FILTERSRV_CONSUMER", "SELF_TEST_C_GROUP")
"""Group names RocketMQ keeps for itself (retry/DLQ prefixes and the built-in consumers)."""


class ConsumerGroupSpecError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def group_name(body: Mapping[str, Any]) -> str:
    return str(spec_of(body).get("groupName") or meta(body)["name"])


def topics(body: Mapping[str, Any]) -> list[str]:
    return [str(t["topic"]) for t in spec_of(body).get("topics") or [] if t.get("topic")]


def subscription_group(body: Mapping[str, Any]) -> SubscriptionGroupConfig:
    """Validate the spec and return the subscription group every selected master should hold."""
    spec = spec_of(body)
    name = group_name(body)
    if name.startswith(SYSTEM_GROUP_PREFIXES):
        raise ConsumerGroupSpecError(cond.REASON_INVALID, f"group name {name!r} is reserved for the brokers")
    previous = (body.get("status") or {}).get("groupName")
    if previous and previous != name:
        raise ConsumerGroupSpecError(
            cond.REASON_NOT_SUPPORTED,
            f"groupName cannot change ({previous!r} -> {name!r}); create a new ConsumerGroup resource instead",
        )
    names = topics(body)
    if not names:
        raise ConsumerGroupSpecError(cond.REASON_INVALID, "spec.topics needs at least one topic")
    config = SubscriptionGroupConfig(
        group_name=name,
        consume_broadcast_enable=bool(spec.get("consumeBroadcastEnable", True)),
        consume_message_orderly=bool(spec.get("consumeMessageOrderly", False)),
        retry_queue_nums=int(spec.get("retryQueueNums", 1)),
        retry_max_times=int(spec.get("retryMaxTimes", 16)),
    )
    try:
        config.validate()
        for topic in names:
            validate_topic(topic)
    except MessageIllegalError as e:
        raise ConsumerGroupSpecError(cond.REASON_INVALID, e.message) from None
    return config


def select_groups(body: Mapping[str, Any], groups: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The BrokerGroups of the ConsumerGroup's namespace whose masters hold the group, sorted by broker name:
    those with `spec.clusterName` and matching `spec.brokerGroupSelector` (both when both are given)."""
    spec = spec_of(body)
    if not spec.get("clusterName") and spec.get("brokerGroupSelector") is None:
        return []
    return groups_matching(meta(body).get("namespace"), spec, groups)


def find_owner(body: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """An older ConsumerGroup resource of the namespace with the same group name (it owns the group)."""
    mine = group_name(body)
    me = (meta(body).get("creationTimestamp") or "", meta(body)["name"])
    for other in others:
        if meta(other)["name"] == meta(body)["name"] or meta(other).get("deletionTimestamp"):
            continue
        if group_name(other) == mine and (meta(other).get("creationTimestamp") or "", meta(other)["name"]) < me:
            return other
    return None


def retained(body: Mapping[str, Any]) -> bool:
    return spec_of(body).get("deletionPolicy", "Delete") == "Retain"
