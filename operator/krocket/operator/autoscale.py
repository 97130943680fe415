"""How many consumers a group needs for its backlog (pure): the recommendation from the lag, its bounds, and
the HorizontalPodAutoscaler's stabilisation windows.

- recommendation: ceil(lag / lagPerReplica), within [minReplicas, maxReplicas] and never above the queue
  count (in clustering mode a queue has one consumer; more consumers than queues sit idle). minReplicas is
  the floor the user asked for and wins over the queue count.
- stabilisation (as the HPA's `behavior`): a scale-up goes only as high as the lowest recommendation of
  the scale-up window, a scale-down only as low as the highest recommendation of the scale-down window.
  With a window of 0 the current recommendation is taken at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from krocket.common.topic import RETRY_GROUP_PREFIX

# ScalingLimited reasons: the HPA's names, plus the queue cap.
WITHIN_RANGE: Final = "DesiredWithinRange"
TOO_FEW_REPLICAS: Final = "TooFewReplicas"  # the lag asks for fewer than minReplicas
TOO_MANY_REPLICAS: Final = "TooManyReplicas"  # the lag asks for more than maxReplicas
TOO_FEW_QUEUES: Final = "TooFewQueues"  # the lag asks for more consumers than the group's topics have queues


class AutoscalingSpecError(ValueError):
    """`spec.autoscaling` cannot be used as it is (the message says which field)."""


@dataclass(frozen=True)
class Policy:
    """`spec.autoscaling`, windows in seconds."""

    min_replicas: int
    max_replicas: int
    lag_per_replica: int
    scale_up_window: float = 0.0
    scale_down_window: float = 300.0

    @classmethod
    def from_spec(cls, autoscaling: Mapping[str, Any]) -> Policy:
        try:
            policy = cls(
                min_replicas=int(autoscaling.get("minReplicas", 1)),
                max_replicas=int(autoscaling["maxReplicas"]),
                lag_per_replica=int(autoscaling["lagPerReplica"]),
                scale_up_window=float(autoscaling.get("scaleUpStabilizationSeconds", 0)),
                scale_down_window=float(autoscaling.get("scaleDownStabilizationSeconds", 300)),
            )
        except KeyError as e:
            raise AutoscalingSpecError(f"spec.autoscaling.{e.args[0]} is required") from None
        except (TypeError, ValueError) as e:
            raise AutoscalingSpecError(f"spec.autoscaling has a bad value: {e}") from None
        if policy.min_replicas < 0 or policy.max_replicas < 1:
            raise AutoscalingSpecError("spec.autoscaling needs minReplicas >= 0 and maxReplicas >= 1")
        if policy.min_replicas > policy.max_replicas:
            raise AutoscalingSpecError(
                f"spec.autoscaling.minReplicas ({policy.min_replicas}) must not exceed maxReplicas "
                f"({policy.max_replicas})"
            )
        if policy.lag_per_replica < 1:
            raise AutoscalingSpecError("spec.autoscaling.lagPerReplica must be at least 1")
        if policy.scale_up_window < 0 or policy.scale_down_window < 0:
            raise AutoscalingSpecError("spec.autoscaling stabilisation windows must not be negative")
        return policy


@dataclass(frozen=True)
class Recommendation:
    at: float  # seconds (epoch)
    replicas: int


@dataclass(frozen=True)
class Bounded:
    """One sample's recommendation: `wanted` from the lag alone, `replicas` after the bounds."""

    wanted: int
    replicas: int
    limit: str  # WITHIN_RANGE or the bound that applied


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    bounded: Bounded
    history: tuple[Recommendation, ...]  # to keep for the next decision (the windows' memory)
    message: str

    @property
    def scaled(self) -> bool:
        return self.desired != self.current


# --- reading the brokers' answers ---------------------------------------------------------------------


def group_topics(topics: Sequence[str], group: str) -> list[str]:
    """The topics whose lag is the group's work: its own, and its retry topic (redeliveries)."""
    return [*topics, f"{RETRY_GROUP_PREFIX}{group}"]


def lag_by_topic(offset_answers: Iterable[Mapping[str, Any] | None], topics: Sequence[str]) -> dict[str, int]:
    """Lag per topic summed over every queue of every master (`group_offsets()` answers, None for a master
    that does not know the group). Every topic in `topics` is present, 0 when the brokers report no rows."""
    lag = dict.fromkeys(topics, 0)
    for answer in offset_answers:
        for row in (answer or {}).get("offsets") or []:
            topic = row.get("topic")
            if topic in lag:
                lag[topic] += max(int(row.get("lag", 0) or 0), 0)
    return lag


def queue_limit(read_queues_by_topic: Mapping[str, int]) -> int:
    """The most consumers that can all hold a queue: the read queues of the group's largest topic (summed over
    the masters). Every consumer of a group subscribes to all its topics, and each topic's queues are shared out
    over the same consumers, so a consumer beyond the largest topic's queue count gets nothing at all."""
    return max(read_queues_by_topic.values(), default=0)


# --- deciding -----------------------------------------------------------------------------------------


def recommend(lag: int, policy: Policy, queues: int | None) -> Bounded:
    """ceil(lag / lagPerReplica) within the bounds; `queues` None when the queue count is not known."""
    wanted = -(-max(lag, 0) // policy.lag_per_replica)
    upper = policy.max_replicas if queues is None else min(policy.max_replicas, queues)
    upper = max(upper, policy.min_replicas)
    if wanted < policy.min_replicas:
        return Bounded(wanted, policy.min_replicas, TOO_FEW_REPLICAS)
    if wanted > upper:
        limit = TOO_FEW_QUEUES if queues is not None and queues < policy.max_replicas else TOO_MANY_REPLICAS
        return Bounded(wanted, upper, limit)
    return Bounded(wanted, wanted, WITHIN_RANGE)


def stabilize(current: int, recommendation: Recommendation, history: Sequence[Recommendation], policy: Policy) -> int:
    """The HPA's stabilisation: never above the lowest recommendation of the scale-up window, never below the
    highest one of the scale-down window (each window includes the current recommendation)."""
    now = recommendation.at
    up = down = recommendation.replicas
    for rec in history:
        if rec.at > now - policy.scale_up_window:
            up = min(up, rec.replicas)
        if rec.at > now - policy.scale_down_window:
            down = max(down, rec.replicas)
    return min(max(current, up), down)


def prune(history: Sequence[Recommendation], now: float, policy: Policy) -> tuple[Recommendation, ...]:
    """The recommendations a later decision can still need: inside the longer window, and not dominated by a
    later one (a later recommendation at least as high answers every later max, one at least as low every
    later min), so a steady lag keeps one entry."""
    horizon = now - max(policy.scale_up_window, policy.scale_down_window)
    recent = sorted((r for r in history if r.at > horizon), key=lambda r: r.at)
    kept: list[Recommendation] = []
    for i, rec in enumerate(recent):
        later = [r.replicas for r in recent[i + 1 :]]
        if all(v < rec.replicas for v in later) or all(v > rec.replicas for v in later):
            kept.append(rec)
    return tuple(kept)


def decide(
    *,
    current: int,
    lag: int,
    queues: int | None,
    history: Sequence[Recommendation],
    now: float,
    policy: Policy,
) -> Decision:
    """What the target's replicas should be now, and the history to keep."""
    bounded = recommend(lag, policy, queues)
    sample = Recommendation(now, bounded.replicas)
    earlier = [r for r in history if r.at <= now]
    stabilized = stabilize(current, sample, earlier, policy)
    upper = max(policy.max_replicas if queues is None else min(policy.max_replicas, queues), policy.min_replicas)
    desired = min(max(stabilized, policy.min_replicas), upper)
    return Decision(
        current=current,
        desired=desired,
        bounded=bounded,
        history=prune([*earlier, sample], now, policy),
        message=_message(current, desired, stabilized, lag, bounded, queues, policy),
    )


def _message(
    current: int, desired: int, stabilized: int, lag: int, bounded: Bounded, queues: int | None, policy: Policy
) -> str:
    why = f"lag {lag} at {policy.lag_per_replica} per replica recommends {_replicas(bounded.replicas)}"
    if bounded.limit == TOO_FEW_QUEUES:
        why += f" (wanted {bounded.wanted}; capped at the {queues} queue(s) of the group's largest topic)"
    elif bounded.limit == TOO_MANY_REPLICAS:
        why += f" (wanted {bounded.wanted}; capped at maxReplicas {policy.max_replicas})"
    elif bounded.limit == TOO_FEW_REPLICAS and bounded.wanted != bounded.replicas:
        why += f" (wanted {bounded.wanted}; minReplicas is {policy.min_replicas})"
    if desired > current:
        return f"{why}; scaling up {current} -> {desired}"
    if desired < current:
        held = f", held at {desired} by the scale-down window ({policy.scale_down_window:g}s)"
        return f"{why}; scaling down {current} -> {desired}" + (held if desired > bounded.replicas else "")
    if bounded.replicas < current and stabilized == current:
        return f"{why}; keeping {current}: the scale-down window ({policy.scale_down_window:g}s) has not passed"
    if bounded.replicas > current and stabilized == current:
        return f"{why}; keeping {current}: the scale-up window ({policy.scale_up_window:g}s) has not passed"
    return f"{why}; {_replicas(current)} running"


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"
