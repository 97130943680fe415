"""A Topic's status: one placement entry per selected BrokerGroup, and the Ready condition over them (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from krocket.common.message_type import topic_message_type
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
LEAVING: Final = "Leaving"  # left the placement but holds unconsumed messages: kept there, writable (refused)
DRAINING: Final = "Draining"  # left the placement; read-only there until its consumers catch up


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
        "messageType": topic_message_type(held),
        "state": REFUSED if action.kind == "refuse" else APPLIED,
    }
    if action.kind == "refuse":
        entry["message"] = action.message
    return entry


def leaving_entry(
    group: Mapping[str, Any], held: TopicConfig, state: str, message: str, lag: int, started_at: str | None
) -> dict[str, Any]:
    """A group that holds the topic after it left the placement (state LEAVING or DRAINING)."""
    entry: dict[str, Any] = {
        **_entry(group),
        "readQueues": held.read_queue_nums,
        "writeQueues": held.write_queue_nums,
        "perm": held.perm,
        "messageType": topic_message_type(held),
        "state": state,
        "message": message,
        "lag": lag,
    }
    if started_at:
        entry["drainStartedAt"] = started_at
    return entry


def total_queues(placement: Sequence[Mapping[str, Any]]) -> int:
    """Write queues the brokers hold over every group (selected or still holding it after leaving): the true
    count, not the spec's; a group that cannot be reached counts 0."""
    return sum(int(p.get("writeQueues", 0)) for p in placement)


def _shape_problems(cfg: TopicConfig, p: Mapping[str, Any]) -> list[tuple[str, str]]:
    """How a selected group's topic differs from the spec: its queue counts or perm, its message type."""
    name = p["brokerName"]
    problems: list[tuple[str, str]] = []
    held = (p.get("readQueues"), p.get("writeQueues"), p.get("perm"))
    if held != (cfg.read_queue_nums, cfg.write_queue_nums, cfg.perm):
        problems.append(
            (
                cond.REASON_QUEUE_MISMATCH,
                f"{name} holds read {p.get('readQueues')}/write {p.get('writeQueues')}/perm {p.get('perm')}, "
                f"spec read {cfg.read_queue_nums}/write {cfg.write_queue_nums}/perm {cfg.perm}",
            )
        )
    if p.get("messageType") != topic_message_type(cfg):
        problems.append(
            (
                cond.REASON_MESSAGE_TYPE_MISMATCH,
                f"{name} holds message type {p.get('messageType')}, spec {topic_message_type(cfg)}",
            )
        )
    return problems


_DEGRADED_ORDER = (
    cond.REASON_BROKER_UNAVAILABLE,
    cond.REASON_LEFT_PLACEMENT,
    cond.REASON_TOPIC_MISSING,
    cond.REASON_QUEUE_MISMATCH,
    cond.REASON_MESSAGE_TYPE_MISMATCH,
    cond.REASON_GROUP_DRAINING,
)


def degraded_condition(
    cfg: TopicConfig,
    selected: Sequence[Mapping[str, Any]],
    leaving: Sequence[Mapping[str, Any]],
    draining_groups: Sequence[str] = (),
) -> cond.Condition:
    """True whenever placement and what the brokers hold differ: a selected group missing the topic or holding
    other queue counts or another message type, a group still holding it after leaving, a broker that cannot be
    asked, a group draining."""
    problems: list[tuple[str, str]] = []
    for p in selected:
        name = p["brokerName"]
        if p["state"] == UNAVAILABLE:
            problems.append((cond.REASON_BROKER_UNAVAILABLE, f"{name}: master unreachable"))
        elif p["state"] == REJECTED:
            problems.append((cond.REASON_TOPIC_MISSING, f"{name} does not hold the topic: {p.get('message', '')}"))
        else:
            problems.extend(_shape_problems(cfg, p))
    for p in leaving:
        name = p["brokerName"]
        if p["state"] == UNAVAILABLE:
            problems.append((cond.REASON_BROKER_UNAVAILABLE, f"{name} (left the placement): master unreachable"))
        else:
            problems.append(
                (
                    cond.REASON_LEFT_PLACEMENT,
                    f"{name} left the placement but still holds the topic ({p['state']}, "
                    f"{p.get('lag', 0)} unconsumed message(s))",
                )
            )
    problems.extend((cond.REASON_GROUP_DRAINING, f"{g}: BrokerGroup drain, no writes") for g in draining_groups)
    if not problems:
        return cond.Condition(cond.DEGRADED, cond.FALSE, cond.REASON_IN_SYNC, "placement and brokers agree")
    problems.sort(key=lambda rp: _DEGRADED_ORDER.index(rp[0]))
    return cond.Condition(cond.DEGRADED, cond.TRUE, problems[0][0], "; ".join(m for _, m in problems)[:1000])


def drain_required_condition(leaving: Sequence[Mapping[str, Any]]) -> cond.Condition:
    """True while a group that left the placement keeps the topic because of unconsumed messages."""
    refused = [p for p in leaving if p["state"] == LEAVING]
    if not refused:
        return cond.Condition(cond.DRAIN_REQUIRED, cond.FALSE, cond.REASON_NOT_BLOCKED, "")
    return cond.Condition(
        cond.DRAIN_REQUIRED, cond.TRUE, cond.REASON_UNCONSUMED, "; ".join(p["message"] for p in refused)[:1000]
    )


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
