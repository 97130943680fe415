"""Status conditions (Kubernetes `metav1.Condition` shape) with reasons a user can act on.

Pure functions: the caller passes the current list and the clock, and gets a new list back.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from krocket.operator.build_common import meta

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

# Condition types.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
ROLLING_UPDATE = "RollingUpdate"
SCALE_BLOCKED = "ScaleBlocked"
RECONCILED = "Reconciled"
PAUSED = "Paused"
DRAIN_REQUIRED = "DrainRequired"  # a deletion or placement change is refused: unconsumed messages
DRAINING = "Draining"  # write permission withdrawn, waiting for consumers

# Reasons (CamelCase, stable: users and alerts match on them).
REASON_ALL_READY = "AllReplicasReady"
REASON_WAITING = "WaitingForReplicas"
REASON_NO_REPLICAS = "ScaledToZero"
REASON_ROLLING = "RollingUpdateInProgress"
REASON_WAITING_FOR_SYNC = "WaitingForSlaveInSync"
REASON_ROLLED = "RollingUpdateComplete"
REASON_MASTER_DOWN = "MasterNotReady"
REASON_SLAVE_DOWN = "SlaveNotReady"
REASON_NAMESRV_MISSING = "NameServerSetNotFound"
REASON_CONFLICT = "ResourceConflict"
REASON_NOT_SUPPORTED = "NotSupported"
REASON_INVALID = "InvalidSpec"
REASON_CREATED = "Created"
REASON_UPDATED = "Updated"
REASON_IN_SYNC = "InSync"
REASON_BROKER_UNAVAILABLE = "BrokerUnavailable"
REASON_NO_BROKER_GROUPS = "NoBrokerGroupsSelected"
REASON_DRAINING = "Draining"
REASON_SCALE_BLOCKED = "DrainBlocked"
REASON_DELETING = "Deleting"
REASON_NOT_BLOCKED = "NotBlocked"
REASON_RECONCILED = "ReconcileSucceeded"
REASON_BROKER_REJECTED = "BrokerRejected"
REASON_PAUSED = "ReconciliationPaused"
REASON_NOT_PAUSED = "NotPaused"
REASON_SYNC_NEEDS_SLAVE = "SyncNeedsSlave"
REASON_IMMUTABLE_FIELD = "ImmutableFieldChanged"
REASON_FORCED_MASTER_ROLL = "ForcedMasterRoll"
REASON_WITHDRAWING_WRITE = "WithdrawingWritePermission"
REASON_UNCONSUMED = "UnconsumedMessages"
REASON_MASTER_UNREACHABLE = "MasterUnreachable"
REASON_WAITING_FOR_CONSUMERS = "WaitingForConsumers"
REASON_DRAINED = "Drained"
REASON_DRAIN_DEADLINE = "DeadlinePassed"
REASON_NOT_DRAINING = "NotDraining"
REASON_LEFT_PLACEMENT = "LeftPlacement"
REASON_QUEUE_MISMATCH = "QueueCountMismatch"
REASON_MESSAGE_TYPE_MISMATCH = "MessageTypeMismatch"
REASON_TOPIC_MISSING = "TopicMissing"
REASON_GROUP_DRAINING = "BrokerGroupDraining"
REASON_SHRINK_BLOCKED = "QueueShrinkBlocked"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""

    def as_dict(self, now: str, observed_generation: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": now,
        }
        if observed_generation is not None:
            out["observedGeneration"] = observed_generation
        return out


def now_iso(clock: datetime.datetime | None = None) -> str:
    ts = clock or datetime.datetime.now(datetime.UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    now: str,
    observed_generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return `current` with `updates` applied.

    `lastTransitionTime` only moves when a condition's status changes, as Kubernetes conventions ask;
    conditions not mentioned in `updates` are kept as they are.
    """
    result: dict[str, dict[str, Any]] = {}
    for cond in current or ():
        if isinstance(cond, Mapping) and "type" in cond:
            result[str(cond["type"])] = dict(cond)
    for upd in updates:
        new = upd.as_dict(now, observed_generation)
        old = result.get(upd.type)
        if old is not None and old.get("status") == upd.status and old.get("lastTransitionTime"):
            new["lastTransitionTime"] = old["lastTransitionTime"]
        result[upd.type] = new
    order = {READY: 0}
    return sorted(result.values(), key=lambda c: (order.get(c["type"], 1), c["type"]))


def status_with_conditions(
    body: Mapping[str, Any], status: dict[str, Any], updates: list[Condition], now: str | None = None
) -> dict[str, Any]:
    """`status` with the body's conditions merged with `updates`, and the generation they describe."""
    generation = meta(body).get("generation")
    status["conditions"] = merge_conditions(
        (body.get("status") or {}).get("conditions"),
        updates,
        now=now or now_iso(),
        observed_generation=generation,
    )
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def find(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> bool:
    cond = find(conditions, ctype)
    return cond is not None and cond.get("status") == TRUE
