"""Roll decisions on top of the slaves-first order of `build_brokergroup.rollout` (pure).

- The master's turn can be forced: at once with `krocket.io/force-roll: "true"`, or when the master is not
  Ready and has waited longer than the deadline (`krocket.io/master-roll-deadline`, else the operator's
  `master_roll_deadline`). The start of the wait is kept in `status.rollout`, so it survives operator restarts.
- Before the master restarts its write permission is withdrawn (producers go to other groups), then a grace
  period passes; it is restored once the group is steady again.
- A manual rolling update (`krocket.io/manual-rolling-update: "true"`) bumps a pod template annotation once.

Nothing here talks to the API server or to a broker: the reconciler passes what it observed and the clock.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond

PERM_WRITE = 0x2  # RocketMQ's PermName.PERM_WRITE bit of brokerPermission

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "10m" or "1h"; ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use seconds, or a number with s, m or h, e.g. 10m)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def annotation_true(body: Mapping[str, Any], key: str) -> bool:
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(key, "")).strip().lower() == "true"


def writable_of(info: Mapping[str, Any] | None) -> bool | None:
    """The broker's write permission from its `brokerPermission`; None when it did not say (or is unreachable)."""
    if info is None or info.get("brokerPermission") is None:
        return None
    try:
        return bool(int(info["brokerPermission"]) & PERM_WRITE)
    except (TypeError, ValueError):
        return None


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def iso(ts: datetime.datetime) -> str:
    return cond.now_iso(ts)


@dataclass(frozen=True)
class RollState:
    """What a roll keeps in `status.rollout` between reconciles (and operator restarts)."""

    target_hash: str | None = None  # the pod template hash the roll moves to
    master_wait_since: str | None = None  # when the master's turn was first held for target_hash
    write_withdrawn_at: str | None = None  # when the master's write permission was withdrawn for this roll
    forced: bool = False  # the master's turn was forced
    manual_token: str | None = None  # a manual rolling update in progress: its template annotation value
    manual_done: str | None = None  # the last manual rolling update that finished

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> RollState:
        ro = (status or {}).get("rollout") or {}
        return cls(
            target_hash=ro.get("targetHash"),
            master_wait_since=ro.get("masterWaitSince"),
            write_withdrawn_at=ro.get("writeWithdrawnAt"),
            forced=bool(ro.get("forced", False)),
            manual_token=ro.get("manualRollToken"),
            manual_done=ro.get("manualRollDone"),
        )

    def as_status(self) -> dict[str, Any]:
        """Every key present (None clears it in a merge patch)."""
        return {
            "targetHash": self.target_hash,
            "masterWaitSince": self.master_wait_since,
            "writeWithdrawnAt": self.write_withdrawn_at,
            "forced": self.forced,
            "manualRollToken": self.manual_token,
            "manualRollDone": self.manual_done,
        }


@dataclass(frozen=True)
class RollPlan:
    partition: int
    rolling: bool
    reason: str
    message: str
    state: RollState
    withdraw_write: bool = False  # withdraw the master's write permission now, then plan again
    forced_now: bool = False  # this reconcile forced the master's turn (emit the Warning event)
    retry_after: float | None = None


def _current_partition(sts: Mapping[str, Any] | None) -> int:
    spec = (sts or {}).get("spec") or {}
    return int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0) or 0)


def plan_roll(
    *,
    base: bg.Rollout,
    sts: Mapping[str, Any] | None,
    template_changed: bool,
    desired_hash: str,
    master_ready: bool,
    master_writable: bool | None,
    force: bool,
    deadline: float,
    write_grace: float,
    state: RollState,
    now: datetime.datetime,
) -> RollPlan:
    """The partition to write and what to do around the master's restart.

    `base` is the slaves-first decision. The master's turn (partition 1 -> 0, or a single-pod group's template
    change) is released only after its write permission is withdrawn and `write_grace` seconds have passed
    (unless it is already not writable). While the turn is held, it is forced by `force` or, for a master
    that is not Ready, once `deadline` seconds have passed since the wait began.
    """
    current = _current_partition(sts)
    releasing = sts is not None and base.partition == 0 and (template_changed or current >= 1)
    if not base.rolling and not releasing:
        return RollPlan(
            base.partition,
            False,
            base.reason,
            base.message,
            RollState(manual_token=state.manual_token, manual_done=state.manual_done),
        )
    if state.target_hash != desired_hash:
        state = RollState(target_hash=desired_hash, manual_token=state.manual_token, manual_done=state.manual_done)

    forced_now = False
    message = base.message
    if base.partition == 1 and not releasing:
        since = _parse_time(state.master_wait_since) or now
        state = replace(state, master_wait_since=iso(since))
        waited = (now - since).total_seconds()
        if force:
            releasing, forced_now = True, not state.forced
            message = "krocket.io/force-roll is set: rolling the master now"
        elif not master_ready and waited >= deadline:
            releasing, forced_now = True, not state.forced
            message = f"the master is not Ready and has waited {int(waited)}s (deadline {int(deadline)}s): rolling it"
        elif not master_ready:
            left = max(deadline - waited, 0.0)
            msg = f"{base.message}; the master is not Ready: it is rolled anyway in {int(left)}s"
            return RollPlan(1, True, base.reason, msg, state, retry_after=left)
        else:
            return RollPlan(1, True, base.reason, base.message, state)
        state = replace(state, forced=True)

    if not releasing:  # partition already 0: the master is restarting or restarted
        reason = cond.REASON_FORCED_MASTER_ROLL if state.forced else base.reason
        return RollPlan(0, True, reason, base.message, state)

    reason = cond.REASON_FORCED_MASTER_ROLL if state.forced else base.reason
    withdrawn = _parse_time(state.write_withdrawn_at)
    if withdrawn is None and master_writable is not False:
        msg = f"{message}; withdrawing the master's write permission first"
        return RollPlan(1, True, cond.REASON_WITHDRAWING_WRITE, msg, state, True, forced_now)
    left = write_grace - (now - withdrawn).total_seconds() if withdrawn is not None else 0.0
    if left > 0:
        msg = f"{message}; master write permission withdrawn, restarting it in {left:.0f}s"
        return RollPlan(1, True, cond.REASON_WITHDRAWING_WRITE, msg, state, False, forced_now, left)
    return RollPlan(0, True, reason, f"{message}; master write permission withdrawn", state, False, forced_now)


def after_withdrawal(state: RollState, now: datetime.datetime) -> RollState:
    """The state once the master's write permission was withdrawn (or the attempt found it unreachable)."""
    return replace(state, write_withdrawn_at=iso(now))


def should_restore_write(
    *, rolling: bool, master_ready: bool, master_writable: bool | None, draining: bool, paused: bool
) -> bool:
    """A steady group whose Ready master reports no write permission gets it back, unless a drain holds it."""
    return not rolling and master_ready and master_writable is False and not draining and not paused


# --- manual rolling update --------------------------------------------------------------------------


def live_restart_token(sts: Mapping[str, Any] | None) -> str | None:
    """The manual-roll annotation of the live pod template."""
    template = ((sts or {}).get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(bg.c.ANN_MANUAL_ROLL)
    return str(value) if value else None


def restart_token(*, requested: bool, state: RollState, live_token: str | None) -> tuple[str | None, RollState]:
    """The template's manual-roll annotation, a counter: the next number when a manual roll is requested and
    none is in progress; otherwise the live one (so an operator restart rolls nothing).

    Deterministic, so reconciles running at once agree: a live number that is not the last finished one is a
    roll another reconcile has just started, and is adopted."""
    if requested and state.manual_token is None:
        if live_token and live_token != state.manual_done:
            token = live_token
        else:
            token = str(int(live_token) + 1) if live_token and live_token.isdigit() else "1"
        return token, replace(state, manual_token=token)
    return state.manual_token or live_token, state


def controller_caught_up(sts: Mapping[str, Any] | None) -> bool:
    """The StatefulSet controller has seen the live spec (its status counts are not stale)."""
    generation = ((sts or {}).get("metadata") or {}).get("generation")
    observed = ((sts or {}).get("status") or {}).get("observedGeneration")
    return generation is None or (observed is not None and int(observed) >= int(generation))


def settled(sts: Mapping[str, Any] | None, replica_count: int, template_changed: bool) -> bool:
    """Every pod runs the live template, as the StatefulSet controller reports: the roll is over."""
    if sts is None or template_changed or _current_partition(sts) != 0 or not controller_caught_up(sts):
        return False
    status = sts.get("status") or {}
    cur, upd = status.get("currentRevision"), status.get("updateRevision")
    return (
        bool(cur)
        and cur == upd
        and int(status.get("updatedReplicas", 0) or 0) >= replica_count
        and int(status.get("readyReplicas", 0) or 0) >= replica_count
    )
