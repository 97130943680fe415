"""The consumer autoscaler's decisions (pure): bounds, the queue cap, the HPA's stabilisation windows, and what
is read from the brokers' answers."""

from __future__ import annotations

import pytest

from krocket.operator import autoscale as a
from krocket.operator import conditions as cond
from krocket.operator import status_consumergroup as cgs
from krocket.operator.autoscale import Policy, Recommendation

POLICY = Policy(min_replicas=1, max_replicas=10, lag_per_replica=10, scale_up_window=0, scale_down_window=60)


def decide(current: int, lag: int, now: float, history=(), queues: int | None = 100, policy: Policy = POLICY):
    return a.decide(current=current, lag=lag, queues=queues, history=list(history), now=now, policy=policy)


# --- the recommendation and its bounds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lag", "queues", "replicas", "limit"),
    [
        (1, 100, 1, a.WITHIN_RANGE),  # ceil(1/10)
        (35, 100, 4, a.WITHIN_RANGE),  # ceil(35/10), not round()
        (40, 100, 4, a.WITHIN_RANGE),
        (0, 100, 1, a.TOO_FEW_REPLICAS),  # no lag: minReplicas
        (500, 100, 10, a.TOO_MANY_REPLICAS),
        (500, 4, 4, a.TOO_FEW_QUEUES),  # more consumers than queues would sit idle
        (500, None, 10, a.TOO_MANY_REPLICAS),  # queue count unknown: maxReplicas only
        (500, 0, 1, a.TOO_FEW_QUEUES),  # no queues at all: minReplicas still holds
    ],
)
def test_recommendation_bounds(lag, queues, replicas, limit):
    bounded = a.recommend(lag, POLICY, queues)
    assert (bounded.replicas, bounded.limit) == (replicas, limit)


def test_min_replicas_wins_over_the_queue_count_and_zero_is_allowed():
    assert a.recommend(100, Policy(3, 10, 10), queues=2).replicas == 3
    zero = a.recommend(0, Policy(0, 10, 10), queues=8)
    assert (zero.replicas, zero.limit) == (0, a.WITHIN_RANGE)
    assert a.recommend(1, Policy(0, 10, 10), queues=8).replicas == 1  # scale from zero on the first message


# --- stabilisation ----------------------------------------------------------------------------------


def test_scale_up_without_window_is_immediate():
    d = decide(current=1, lag=35, now=100.0)
    assert (d.desired, d.scaled) == (4, True)
    assert "scaling up 1 -> 4" in d.message


def test_scale_up_window_takes_the_lowest_recommendation_of_the_window():
    policy = Policy(1, 10, 10, scale_up_window=30, scale_down_window=0)
    first = decide(current=1, lag=10, now=0.0, policy=policy)  # recommends 1
    burst = decide(current=1, lag=50, now=10.0, history=first.history, policy=policy)
    assert burst.desired == 1 and "scale-up window (30s) has not passed" in burst.message
    later = decide(current=1, lag=50, now=31.0, history=burst.history, policy=policy)
    assert later.desired == 5  # the 1 at t=0 left the window; 5 is the lowest of (1, 31]


def test_scale_down_waits_for_the_window_then_goes_to_min_replicas():
    high = decide(current=1, lag=50, now=0.0)
    assert high.desired == 5
    idle = decide(current=5, lag=0, now=30.0, history=high.history)
    assert idle.desired == 5 and not idle.scaled
    assert "scale-down window (60s) has not passed" in idle.message
    after = decide(current=5, lag=0, now=61.0, history=idle.history)
    assert (after.desired, after.bounded.limit) == (1, a.TOO_FEW_REPLICAS)
    assert "scaling down 5 -> 1" in after.message


def test_scale_down_takes_the_highest_recommendation_of_the_window():
    policy = Policy(1, 10, 10, scale_up_window=0, scale_down_window=30)
    history = [Recommendation(0.0, 8), Recommendation(20.0, 3), Recommendation(40.0, 1)]
    d = decide(current=8, lag=0, now=45.0, history=history, policy=policy)
    assert d.desired == 3  # the 8 at t=0 is out of (15, 45]; 3 at t=20 is the highest inside
    assert "held at 3 by the scale-down window" in d.message


def test_never_above_the_queue_count_even_when_the_window_holds_more():
    history = [Recommendation(0.0, 10)]
    d = decide(current=10, lag=1000, now=5.0, history=history, queues=4)
    assert d.desired == 4 and d.bounded.limit == a.TOO_FEW_QUEUES


def test_a_current_count_outside_the_bounds_is_brought_back():
    assert decide(current=0, lag=0, now=0.0).desired == 1  # below minReplicas (someone scaled it to 0)
    assert decide(current=30, lag=1000, now=0.0).desired == 10  # above maxReplicas


def test_recommendations_from_the_future_are_ignored():
    """A clock step back must not pin the replicas to a recommendation 'from the future'."""
    d = decide(current=5, lag=0, now=100.0, history=[Recommendation(500.0, 5)])
    assert d.desired == 1 and all(r.at <= 100.0 for r in d.history)


def test_history_keeps_only_what_a_window_can_still_need():
    steady = ()
    for t in range(10):
        steady = decide(current=3, lag=30, now=float(t), history=steady).history
    assert steady == (Recommendation(9.0, 3),)  # a steady lag keeps one entry
    history = [Recommendation(0.0, 2), Recommendation(10.0, 9), Recommendation(20.0, 4), Recommendation(30.0, 6)]
    kept = a.prune(history, 30.0, POLICY)
    # 2 (lowest so far) and 9 (highest so far) still answer a later min/max; 4 is not dominated by 6 for min
    assert [r.replicas for r in kept] == [2, 9, 4, 6]
    assert a.prune(history, 75.0, POLICY) == (Recommendation(20.0, 4), Recommendation(30.0, 6))


# --- the brokers' answers -----------------------------------------------------------------------------


def test_lag_summed_over_masters_for_the_groups_topics_and_its_retry_topic():
    rows = [("Orders", 0, 5), ("Orders", 1, 7), ("Other", 0, 100), ("%RETRY%g1", 0, 2)]
    b1 = {"offsets": [{"topic": t, "queueId": q, "lag": lag} for t, q, lag in rows]}
    b2 = {"offsets": [{"topic": "Orders", "queueId": 0, "lag": 10}, {"topic": "Audit", "queueId": 0, "lag": -3}]}
    lag = a.lag_by_topic([b1, b2, None], a.group_topics(["Orders", "Audit"], "g1"))
    assert lag == {"Orders": 22, "Audit": 0, "%RETRY%g1": 2}


def test_queue_limit_is_the_largest_topic():
    assert a.queue_limit({"Orders": 8, "Audit": 2}) == 8
    assert a.queue_limit({}) == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"lagPerReplica": 10}, "maxReplicas is required"),
        ({"maxReplicas": 2, "minReplicas": 3, "lagPerReplica": 10}, "must not exceed maxReplicas"),
        ({"maxReplicas": 2, "lagPerReplica": 0}, "lagPerReplica must be at least 1"),
        ({"maxReplicas": "many", "lagPerReplica": 1}, "bad value"),
    ],
)
def test_policy_refuses_bad_specs(spec, message):
    with pytest.raises(a.AutoscalingSpecError, match=message):
        Policy.from_spec(spec)


def test_policy_defaults_are_the_hpa_defaults():
    assert Policy.from_spec({"maxReplicas": 4, "lagPerReplica": 100}) == Policy(1, 4, 100, 0.0, 300.0)


# --- status pieces ------------------------------------------------------------------------------------


def test_history_round_trips_through_status_with_milliseconds():
    history = (Recommendation(1_700_000_000.25, 3), Recommendation(1_700_000_001.5, 4))
    status = {"recommendations": cgs.history_to_status(history)}
    assert status["recommendations"][0]["time"] == "2023-11-14T22:13:20.250Z"
    assert tuple(cgs.history_from_status(status)) == history
    assert cgs.history_from_status({"recommendations": [{"time": "garbage", "replicas": 1}]}) == []


def test_scaling_limited_condition_names_the_bound():
    capped = cgs.scaling_limited(a.recommend(500, POLICY, 4))
    assert (capped.status, capped.reason) == (cond.TRUE, a.TOO_FEW_QUEUES) and "wanted 50, set 4" in capped.message
    within = cgs.scaling_limited(a.recommend(35, POLICY, 8))
    assert (within.status, within.reason) == (cond.FALSE, a.WITHIN_RANGE)
