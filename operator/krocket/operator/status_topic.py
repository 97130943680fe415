"""A Topic's status: one placement entry per selected BrokerGroup, and the Ready condition over them (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from krocket.common.topic import TopicConfig
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator.build_common import meta
from krocket.operator.placement import Action

# `status.placement[].state`
APPLIED: Final = "Applied"  # the broker holds the topic as the spec asks
REFUSED: Final = "Refused"  # the operator did not apply the change (a queue shrink without the annotation)
UNAVAILABLE: Final = "Unavailable"  # the master could not be reached; retried
REJECTED: Final = "Rejected"  # the broker refused the request


def _entry(group: Mapping[str, Any]) -> dict[str, Any]:
    return {"brokerGroup": meta(group)["name"], "brokerName": bg.broker_name(group)}


def unavailable_entry(group: Mapping[str, Any], message: str) -> dict[str, Any]:
    return {**_entry(group), "state": UNAVAILABLE, "message": message}


def rejected_entry(group: Mapping[str, Any], message: str) -> dict[str, Any]:
    return {**_entry(group), "state": REJECTED, "message": message}


def held_entry(group: Mapping[str, Any], held: TopicConfig, action: Action) -> dict[str, Any]:
    """What the broker holds after `action`; a refused change says why."""
    entry: dict[str, Any] = {
        **_entry(group),
        "readQueues": held.read_queue_nums,
        "writeQueues": held.write_queue_nums,
        "perm": held.perm,
        "state": REFUSED if action.kind == "refuse" else APPLIED,
    }
    if action.kind == "refuse":
        entry["message"] = action.message
    return entry


def total_queues(placement: Sequence[Mapping[str, Any]]) -> int:
    """Write queues over every group: the queues producers spread messages over."""
    return sum(int(p.get("writeQueues", 0)) for p in placement)


def ready_condition(topic_name: str, placement: Sequence[Mapping[str, Any]]) -> cond.Condition:
    """Ready when every group holds the topic; else the worst state: unreachable, refused, then rejected."""
    states = {p["state"] for p in placement}
    if states == {APPLIED}:
        return cond.Condition(
            cond.READY, cond.TRUE, cond.REASON_IN_SYNC, f"{topic_name} in sync on {len(placement)} broker group(s)"
        )
    if UNAVAILABLE in states:
        down = [p["brokerName"] for p in placement if p["state"] == UNAVAILABLE]
        return cond.Condition(
            cond.READY,
            cond.FALSE,
            cond.REASON_BROKER_UNAVAILABLE,
            f"cannot reach the master of {', '.join(down)}; will retry. Check the BrokerGroup's Ready condition",
        )
    if REFUSED in states:
        msgs = [p["message"] for p in placement if p["state"] == REFUSED]
        return cond.Condition(cond.READY, cond.FALSE, cond.REASON_NOT_SUPPORTED, msgs[0])
    msgs = [p.get("message", "") for p in placement if p["state"] == REJECTED]
    return cond.Condition(cond.READY, cond.FALSE, cond.REASON_BROKER_REJECTED, "; ".join(msgs))


def conflict_condition(topic_name: str, namespace: str, owner: Mapping[str, Any]) -> cond.Condition:
    """Another Topic resource (`owner`, the older one) manages the same topic name."""
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_CONFLICT,
        f"topic {topic_name!r} is already managed by Topic {namespace}/{meta(owner)['name']}; delete one of them",
    )


def no_groups_condition() -> cond.Condition:
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_NO_BROKER_GROUPS,
        "no BrokerGroup in this namespace matches spec.placement; create one or fix "
        "placement.clusterName / placement.brokerGroupSelector",
    )
