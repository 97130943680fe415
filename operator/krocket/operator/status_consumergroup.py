"""A ConsumerGroup's status (pure): the subscription group on each master, the lag, the autoscaler's memory and
its conditions (Ready; ScalingActive and ScalingLimited, as the HorizontalPodAutoscaler reports them)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from krocket.operator import autoscale
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator.build_common import meta

# `status.brokers[].state`
APPLIED: Final = "Applied"
UNAVAILABLE: Final = "Unavailable"
REJECTED: Final = "Rejected"

# Condition types of an autoscaled group.
SCALING_ACTIVE: Final = "ScalingActive"
SCALING_LIMITED: Final = "ScalingLimited"
AUTOSCALING_CONDITIONS: Final = (SCALING_ACTIVE, SCALING_LIMITED)

# ScalingActive reasons.
REASON_VALID_LAG: Final = "ValidMetricFound"  # the HPA's name: the lag was read from every master
REASON_FAILED_GET_SCALE: Final = "FailedGetScale"  # the target (or its scale subresource) cannot be read
REASON_FAILED_UPDATE_SCALE: Final = "FailedUpdateScale"  # the API server refused the new replicas


def _entry(group: Mapping[str, Any]) -> dict[str, Any]:
    return {"brokerGroup": meta(group)["name"], "brokerName": bg.broker_name(group)}


def applied_entry(group: Mapping[str, Any]) -> dict[str, Any]:
    return {**_entry(group), "state": APPLIED}


def unavailable_entry(group: Mapping[str, Any], message: str) -> dict[str, Any]:
    return {**_entry(group), "state": UNAVAILABLE, "message": message}


def rejected_entry(group: Mapping[str, Any], message: str) -> dict[str, Any]:
    return {**_entry(group), "state": REJECTED, "message": message}


def all_applied(entries: Sequence[Mapping[str, Any]]) -> bool:
    return bool(entries) and all(e.get("state") == APPLIED for e in entries)


def ready_condition(
    group_name: str, entries: Sequence[Mapping[str, Any]], scaling: cond.Condition | None
) -> cond.Condition:
    """Ready when every selected master holds the group and, when autoscaled, the autoscaler works."""
    down = [e["brokerName"] for e in entries if e.get("state") == UNAVAILABLE]
    if down:
        return cond.Condition(
            cond.READY,
            cond.FALSE,
            cond.REASON_BROKER_UNAVAILABLE,
            f"cannot reach the master of {', '.join(down)}; will retry. Check the BrokerGroup's Ready condition",
        )
    rejected = [f"{e['brokerName']}: {e.get('message', '')}" for e in entries if e.get("state") == REJECTED]
    if rejected:
        return cond.Condition(cond.READY, cond.FALSE, cond.REASON_BROKER_REJECTED, "; ".join(rejected))
    if scaling is not None and scaling.status != cond.TRUE:
        return cond.Condition(cond.READY, cond.FALSE, scaling.reason, scaling.message)
    return cond.Condition(
        cond.READY, cond.TRUE, cond.REASON_IN_SYNC, f"group {group_name} in sync on {len(entries)} broker group(s)"
    )


def no_groups_condition() -> cond.Condition:
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_NO_BROKER_GROUPS,
        "no BrokerGroup in this namespace matches spec.clusterName / spec.brokerGroupSelector; create one or fix "
        "the selection",
    )


def conflict_condition(group_name: str, namespace: str, owner: Mapping[str, Any]) -> cond.Condition:
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_CONFLICT,
        f"group {group_name!r} is already managed by ConsumerGroup {namespace}/{meta(owner)['name']}; "
        "delete one of them",
    )


# --- autoscaling --------------------------------------------------------------------------------------


def lag_status(lag: Mapping[str, int], queues: Mapping[str, int]) -> dict[str, Any]:
    """`status.lag`: the total and one row per topic (queues: read queues over all masters)."""
    rows = []
    for topic, value in lag.items():
        row: dict[str, Any] = {"topic": topic, "lag": value}
        if topic in queues:
            row["queues"] = queues[topic]
        rows.append(row)
    return {"total": sum(lag.values()), "topics": rows}


def scaling_active(status: str, reason: str, message: str) -> cond.Condition:
    return cond.Condition(SCALING_ACTIVE, status, reason, message)


def scaling_limited(bounded: autoscale.Bounded) -> cond.Condition:
    if bounded.limit == autoscale.WITHIN_RANGE:
        return cond.Condition(SCALING_LIMITED, cond.FALSE, bounded.limit, "the recommendation is within range")
    messages = {
        autoscale.TOO_FEW_REPLICAS: "the recommendation is below minReplicas",
        autoscale.TOO_MANY_REPLICAS: "the recommendation is above maxReplicas",
        autoscale.TOO_FEW_QUEUES: "the recommendation is above the queue count of the group's largest topic "
        "(more consumers would sit idle); add queues to scale further",
    }
    return cond.Condition(
        SCALING_LIMITED,
        cond.TRUE,
        bounded.limit,
        f"{messages[bounded.limit]}: wanted {bounded.wanted}, set {bounded.replicas}",
    )


def without_autoscaling_conditions(body: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with the ScalingActive/ScalingLimited conditions dropped (autoscaling was switched off)."""
    status = dict(body.get("status") or {})
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") not in AUTOSCALING_CONDITIONS]
    return {**body, "status": status}


def time_iso(at: float) -> str:
    """RFC 3339 with milliseconds: the windows are seconds long, whole seconds would blur them."""
    ts = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return f"{ts:%Y-%m-%dT%H:%M:%S}.{ts.microsecond // 1000:03d}Z"


def history_to_status(history: Iterable[autoscale.Recommendation]) -> list[dict[str, Any]]:
    return [{"time": time_iso(r.at), "replicas": r.replicas} for r in history]


def history_from_status(status: Mapping[str, Any] | None) -> list[autoscale.Recommendation]:
    """The recommendations kept in `status.recommendations`; entries that do not parse are skipped."""
    out = []
    for row in (status or {}).get("recommendations") or []:
        try:
            at = datetime.datetime.fromisoformat(str(row["time"])).timestamp()
            out.append(autoscale.Recommendation(at, int(row["replicas"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out
