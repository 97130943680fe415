"""Drain decisions (pure): is a broker holding unconsumed messages, how long may a drain wait, what happens next.

A drain withdraws a broker's (or one topic's) write permission and waits until every consumer group has
caught up (lag 0), or until a deadline passes. The inputs are the broker admin API's answers
(`consumer_lag()`, `get_topic()["queues"]`, `group_offsets()`), the resource's annotations and status, and
the clock; the outputs are what to report and whether the next step (deleting queues, letting a deletion go
on) may happen.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from krocket.common.topic import is_system_topic
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator.build_common import meta
from krocket.operator.outcome import Event

NO_GROUP: Final = "(no consumer group)"
"""The key under which messages are counted that no consumer group has ever consumed."""

# `status.drain.phase` (BrokerGroup)
PHASE_REFUSED: Final = "DrainRequired"  # deletion refused: unconsumed messages and no drain requested
PHASE_UNREACHABLE: Final = "MasterUnreachable"  # the master cannot say what it holds: never assumed empty
PHASE_DRAINING: Final = "Draining"  # writes withdrawn, waiting for consumers
PHASE_DRAINED: Final = "Drained"  # every group caught up
PHASE_DEADLINE: Final = "DeadlinePassed"  # gave up waiting: what remained is abandoned (deletion) or reported


# --- annotations and time -----------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration ("30m", "1h30m", "90s", "0s"); a bare number is seconds."""
    s = text.strip()
    if not s:
        raise DurationError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise DurationError(f"{text!r} is not a duration (use e.g. 90s, 30m, 1h30m)")
    return total


def _annotations(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return meta(body).get("annotations") or {}


def drain_requested(body: Mapping[str, Any]) -> bool:
    """The user asked for a drain: annotation `krocket.io/drain: "true"`."""
    return str(_annotations(body).get(c.ANN_DRAIN, "")).strip().lower() == "true"


def deadline_annotated(body: Mapping[str, Any]) -> bool:
    return c.ANN_DRAIN_DEADLINE in _annotations(body)


def deadline_seconds(body: Mapping[str, Any], default: float) -> tuple[float, str | None]:
    """How long a drain may wait, and the problem with the annotation (then the default applies)."""
    raw = _annotations(body).get(c.ANN_DRAIN_DEADLINE)
    if raw is None:
        return default, None
    try:
        return parse_duration(str(raw)), None
    except DurationError as e:
        return default, f"annotation {c.ANN_DRAIN_DEADLINE}: {e}; using the default {default:.0f}s"


def writes_withdrawn(group: Mapping[str, Any]) -> bool:
    """Whether a BrokerGroup's master must stay without write permission because of a drain: the drain
    annotation is set, or the group is being deleted. A roll must not restore write permission then."""
    return drain_requested(group) or bool(meta(group).get("deletionTimestamp"))


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def iso(ts: datetime.datetime) -> str:
    return cond.now_iso(ts)


# --- what a broker holds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicBacklog:
    """Unconsumed messages of one topic on one broker: per consumer group (NO_GROUP: never consumed)."""

    topic: str
    lag: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.lag.values())

    def describe(self) -> str:
        parts = ", ".join(f"{g}={n}" for g, n in sorted(self.lag.items()))
        return f"{self.topic} {self.total} ({parts})"


def topic_backlog(row: Mapping[str, Any]) -> TopicBacklog | None:
    """One `consumer_lag()` row as a backlog; None when nothing in it is unconsumed.

    Unconsumed: a group's lag above 0, or a (user) topic holding messages that no group has consumed.
    Broker-owned topics (delay levels, timers, transactions, dead letters) count only through group lag:
    nothing consumes them as a group, so they would never drain.
    """
    topic = str(row.get("topic", ""))
    groups = {str(g): int(n) for g, n in (row.get("groups") or {}).items()}
    lag = {g: n for g, n in groups.items() if n > 0}
    if not groups and int(row.get("messages", 0) or 0) > 0 and not is_system_topic(topic):
        lag = {NO_GROUP: int(row["messages"])}
    return TopicBacklog(topic, lag) if lag else None


def broker_backlog(lag_rows: Iterable[Mapping[str, Any]], topics: Iterable[str] | None = None) -> list[TopicBacklog]:
    """Every topic (or only `topics`) on a broker with unconsumed messages, sorted by topic."""
    wanted = None if topics is None else set(topics)
    found = []
    for row in lag_rows:
        if wanted is not None and row.get("topic") not in wanted:
            continue
        backlog = topic_backlog(row)
        if backlog is not None:
            found.append(backlog)
    return sorted(found, key=lambda b: b.topic)


def summarize(backlog: Sequence[TopicBacklog], limit: int = 5) -> str:
    """ "2 topic(s) hold 130 unconsumed message(s): orders 120 (billing=100, audit=20); ..."."""
    total = sum(b.total for b in backlog)
    shown = "; ".join(b.describe() for b in backlog[:limit])
    more = f"; and {len(backlog) - limit} more topic(s)" if len(backlog) > limit else ""
    return f"{len(backlog)} topic(s) hold {total} unconsumed message(s): {shown}{more}"


def removed_queue_lag(
    new_read_queues: int,
    queues: Sequence[Mapping[str, Any]],
    group_rows: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, int]:
    """Unconsumed messages, per group, in the queues a readQueues cut removes (queueId >= new_read_queues).

    `queues` is `get_topic()["queues"]` ({queueId, minOffset, maxOffset}); `group_rows` maps each group that
    consumes the topic to its `group_offsets()` rows for this topic ({queueId, lag}). A queue holding messages
    with no offset of a group counts in full for that group (it never read them); with no group at all they
    count under NO_GROUP.
    """
    lag: dict[str, int] = {}
    for q in queues:
        qid = int(q.get("queueId", 0))
        if qid < new_read_queues:
            continue
        held = max(int(q.get("maxOffset", 0)) - int(q.get("minOffset", 0)), 0)
        if not group_rows:
            if held:
                lag[NO_GROUP] = lag.get(NO_GROUP, 0) + held
            continue
        for group, rows in group_rows.items():
            row = next((r for r in rows if int(r.get("queueId", -1)) == qid), None)
            n = int(row.get("lag", 0)) if row is not None else held
            if n > 0:
                lag[group] = lag.get(group, 0) + n
    return lag


def describe_lag(lag: Mapping[str, int]) -> str:
    return ", ".join(f"{g}={n}" for g, n in sorted(lag.items()))


# --- the BrokerGroup drain --------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainView:
    """What the operator knows when it decides: the resource, the clock and the master's answer."""

    deleting: bool
    requested: bool  # krocket.io/drain: "true"
    deadline_opt_in: bool  # requested, or a krocket.io/drain-deadline given: the deadline may abandon messages
    reachable: bool
    unreachable_reason: str
    backlog: Sequence[TopicBacklog]
    started_at: datetime.datetime  # when the drain (or the deletion) was first seen; kept in status
    deadline_s: float
    now: datetime.datetime


@dataclass(frozen=True)
class DrainDecision:
    phase: str
    proceed: bool  # deletion: the group's topics may be deleted and the finalizer released
    withdraw_writes: bool
    conditions: list[cond.Condition]
    message: str
    warning: bool  # the phase's event is a Warning

    @property
    def event_reason(self) -> str:
        return {
            PHASE_REFUSED: "DeletionRefused",
            PHASE_UNREACHABLE: "DrainMasterUnreachable",
            PHASE_DRAINING: "DrainStarted",
            PHASE_DRAINED: "Drained",
            PHASE_DEADLINE: "DrainDeadlinePassed",
        }[self.phase]


def deadline_at(view: DrainView) -> datetime.datetime:
    return view.started_at + datetime.timedelta(seconds=view.deadline_s)


def decide(view: DrainView) -> DrainDecision:
    """The next step of a BrokerGroup drain (live, or while the group is being deleted)."""
    deadline = deadline_at(view)
    passed = view.deadline_opt_in and view.now >= deadline
    what = "deletion" if view.deleting else "drain"
    not_required = cond.Condition(cond.DRAIN_REQUIRED, cond.FALSE, cond.REASON_NOT_BLOCKED, "")

    if not view.reachable:
        if passed:
            msg = (
                f"master unreachable ({view.unreachable_reason}) and the drain deadline {iso(deadline)} passed: "
                f"going on with the {what}; whatever the master still holds is abandoned"
            )
            return DrainDecision(
                PHASE_DEADLINE,
                True,
                view.requested,
                [not_required, cond.Condition(cond.DRAINING, cond.FALSE, cond.REASON_DRAIN_DEADLINE, msg)],
                msg,
                True,
            )
        hint = (
            f"; it goes on once the deadline {iso(deadline)} passes"
            if view.deadline_opt_in
            else f'; to give up on what it holds, set annotation {c.ANN_DRAIN_DEADLINE}: "0s"'
        )
        msg = (
            f"cannot tell whether the master holds unconsumed messages ({view.unreachable_reason}); "
            f"{what} waits for the master{hint}"
        )
        condition = cond.Condition(
            cond.DRAIN_REQUIRED if view.deleting else cond.DRAINING,
            cond.TRUE if view.deleting else cond.UNKNOWN,
            cond.REASON_MASTER_UNREACHABLE,
            msg,
        )
        return DrainDecision(PHASE_UNREACHABLE, False, view.requested, [condition], msg, True)

    if not view.backlog:
        msg = "no unconsumed messages on the master" + (": deleting its topics" if view.deleting else "")
        return DrainDecision(
            PHASE_DRAINED,
            True,
            view.requested,
            [not_required, cond.Condition(cond.DRAINING, cond.FALSE, cond.REASON_DRAINED, msg)],
            msg,
            False,
        )

    summary = summarize(view.backlog)
    if not view.requested:
        msg = (
            f'deletion refused: {summary}. Let consumers catch up, or set annotation {c.ANN_DRAIN}: "true" to '
            f"withdraw write permission and wait (at most {c.ANN_DRAIN_DEADLINE}, default {view.deadline_s:.0f}s)"
        )
        return DrainDecision(
            PHASE_REFUSED,
            False,
            False,
            [cond.Condition(cond.DRAIN_REQUIRED, cond.TRUE, cond.REASON_UNCONSUMED, msg)],
            msg,
            True,
        )

    if passed:
        consequence = "deleting the group; these messages are abandoned" if view.deleting else "still no writes"
        msg = f"drain deadline {iso(deadline)} passed with {summary}: {consequence}"
        return DrainDecision(
            PHASE_DEADLINE,
            view.deleting,
            True,
            [not_required, cond.Condition(cond.DRAINING, cond.FALSE, cond.REASON_DRAIN_DEADLINE, msg)],
            msg,
            True,
        )
    msg = f"write permission withdrawn; waiting for consumers until {iso(deadline)}: {summary}"
    return DrainDecision(
        PHASE_DRAINING,
        False,
        True,
        [not_required, cond.Condition(cond.DRAINING, cond.TRUE, cond.REASON_WAITING_FOR_CONSUMERS, msg)],
        msg,
        False,
    )


def drain_status(view: DrainView, decision: DrainDecision) -> dict[str, Any]:
    """`status.drain` of a BrokerGroup."""
    return {
        "phase": decision.phase,
        "startedAt": iso(view.started_at),
        "deadline": iso(deadline_at(view)),
        "remainingMessages": sum(b.total for b in view.backlog),
        "topics": [b.describe() for b in view.backlog[:20]],
        "message": decision.message[:1000],
    }


def phase_event(previous_phase: str | None, decision: DrainDecision) -> Event | None:
    """One event per phase change (a drain re-checked every few seconds must not flood the event stream)."""
    if previous_phase == decision.phase:
        return None
    return Event("Warning" if decision.warning else "Normal", decision.event_reason, decision.message)


# --- a group leaving a Topic's placement ----------------------------------------------------------------


@dataclass(frozen=True)
class LeaveDecision:
    """What to do with a topic on a group that no longer belongs to the Topic's placement."""

    kind: str  # "delete" | "refuse" | "read-only" (then wait) | "unknown" (master unreachable)
    message: str
    abandon: bool = False  # deleting despite lag, because the deadline passed


def decide_leave(
    *,
    broker: str,
    lag: Mapping[str, int],
    requested: bool,
    started_at: datetime.datetime | None,
    deadline_s: float,
    now: datetime.datetime,
) -> LeaveDecision:
    """A topic held by `broker` after it left placement: delete it when nothing is unconsumed, refuse with lag
    unless the Topic asks for a drain (then read-only until lag 0 or the deadline)."""
    if not lag:
        return LeaveDecision("delete", f"{broker} left the placement and holds no unconsumed messages")
    held = f"{sum(lag.values())} unconsumed message(s) ({describe_lag(lag)})"
    if not requested:
        return LeaveDecision(
            "refuse",
            f"{broker} left the placement but holds {held}; the topic is kept there, writable. Let consumers catch "
            f'up, or set annotation {c.ANN_DRAIN}: "true" on the Topic to make it read-only there and wait',
        )
    start = started_at or now
    deadline = start + datetime.timedelta(seconds=deadline_s)
    if now >= deadline:
        msg = f"drain deadline {iso(deadline)} passed on {broker}: deleting the topic there, abandoning {held}"
        return LeaveDecision("delete", msg, True)
    return LeaveDecision("read-only", f"{broker}: read-only, waiting until {iso(deadline)} for {held}")
