"""Deleting or draining a BrokerGroup: refused while its master holds unconsumed messages, drained on request.

The pure decisions (`krocket.operator.drain`) first, then kopf against kmock's emulator with FakeBrokers.
"""

from __future__ import annotations

import datetime

import pytest

from krocket.operator import conditions as cond
from krocket.operator import drain
from krocket.operator.drain import NO_GROUP, DrainView, TopicBacklog

from tests.operator.api import BGS, STS, G, bg_body, create, patch, path
from tests.operator.kopf_harness import (
    FakeBrokers,
    StampingEmulator,
    condition,
    event_reasons,
    get,
    running_operator,
    wait_for,
)

A0 = "fake://mq/broker-a/0"
T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


# --- pure -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("0s", 0), ("2d", 172800), ("45", 45), ("500ms", 0.5)],
)
def test_parse_duration(text, seconds):
    assert drain.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30 m", "m30", "1h-5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(drain.DurationError):
        drain.parse_duration(text)


def test_backlog_counts_group_lag_and_messages_nobody_consumed():
    rows = [
        {"topic": "orders", "messages": 500, "groups": {"billing": 40, "audit": 0}},
        {"topic": "done", "messages": 500, "groups": {"billing": 0}},  # retained but consumed: nothing left
        {"topic": "fresh", "messages": 7, "groups": {}},  # nobody ever consumed it
        {"topic": "SCHEDULE_TOPIC_XXXX", "messages": 9, "groups": {}},  # broker-owned: never drains by a group
        {"topic": "%RETRY%billing", "messages": 3, "groups": {"billing": 3}},
    ]
    backlog = drain.broker_backlog(rows)
    assert backlog == [
        TopicBacklog("%RETRY%billing", {"billing": 3}),
        TopicBacklog("fresh", {NO_GROUP: 7}),
        TopicBacklog("orders", {"billing": 40}),
    ]
    assert drain.summarize(backlog).startswith("3 topic(s) hold 50 unconsumed message(s): %RETRY%billing 3")
    assert drain.broker_backlog(rows, topics=["done", "orders"]) == [TopicBacklog("orders", {"billing": 40})]


def test_removed_queue_lag_looks_only_at_the_queues_that_go():
    queues = [{"queueId": q, "minOffset": 0, "maxOffset": 10} for q in range(4)]
    rows = {
        "billing": [{"queueId": q, "lag": lag} for q, lag in [(0, 5), (1, 0), (2, 0), (3, 4)]],
        "audit": [{"queueId": 0, "lag": 0}, {"queueId": 2, "lag": 0}],  # never read queue 3
    }
    assert drain.removed_queue_lag(2, queues, rows) == {"billing": 4, "audit": 10}
    assert drain.removed_queue_lag(4, queues, rows) == {}
    assert drain.removed_queue_lag(3, queues, {}) == {NO_GROUP: 10}
    empty = [{"queueId": q, "minOffset": 10, "maxOffset": 10} for q in range(4)]
    assert drain.removed_queue_lag(1, empty, {}) == {}


def _view(**kw):
    base = {
        "deleting": True,
        "requested": False,
        "deadline_opt_in": False,
        "reachable": True,
        "unreachable_reason": "",
        "backlog": [TopicBacklog("orders", {"billing": 40})],
        "started_at": T0,
        "deadline_s": 3600.0,
        "now": T0 + datetime.timedelta(minutes=5),
    }
    return DrainView(**{**base, **kw})


def test_decide_refuses_deletion_with_backlog_and_names_topics_and_lag():
    d = drain.decide(_view())
    assert (d.phase, d.proceed) == (drain.PHASE_REFUSED, False)
    assert d.conditions[0].type == cond.DRAIN_REQUIRED and d.conditions[0].status == cond.TRUE
    assert "orders 40 (billing=40)" in d.message and "krocket.io/drain" in d.message


def test_decide_drain_waits_then_gives_up_at_the_deadline():
    waiting = drain.decide(_view(requested=True, deadline_opt_in=True))
    assert (waiting.phase, waiting.proceed, waiting.withdraw_writes) == (drain.PHASE_DRAINING, False, True)
    late = drain.decide(_view(requested=True, deadline_opt_in=True, now=T0 + datetime.timedelta(hours=2)))
    assert (late.phase, late.proceed, late.warning) == (drain.PHASE_DEADLINE, True, True)
    assert "abandoned" in late.message and "orders" in late.message
    live_late = drain.decide(
        _view(deleting=False, requested=True, deadline_opt_in=True, now=T0 + datetime.timedelta(hours=2))
    )
    assert (live_late.phase, live_late.proceed, live_late.withdraw_writes) == (drain.PHASE_DEADLINE, False, True)
    assert drain.decide(_view(backlog=[])).proceed is True


def test_decide_never_assumes_an_unreachable_master_is_empty():
    down = drain.decide(_view(reachable=False, unreachable_reason="connection refused", backlog=[]))
    assert (down.phase, down.proceed) == (drain.PHASE_UNREACHABLE, False)
    assert "krocket.io/drain-deadline" in down.message
    # an opted-in deadline that passed lets the deletion go on
    past = drain.decide(_view(reachable=False, backlog=[], deadline_opt_in=True, deadline_s=0))
    assert (past.phase, past.proceed) == (drain.PHASE_DEADLINE, True)


def test_phase_event_only_on_change():
    d = drain.decide(_view())
    assert drain.phase_event(None, d) is not None
    assert drain.phase_event(drain.PHASE_REFUSED, d) is None


def test_writes_withdrawn_while_drain_annotated_or_deleting():
    assert drain.writes_withdrawn({"metadata": {"annotations": {"krocket.io/drain": "true"}}})
    assert drain.writes_withdrawn({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert not drain.writes_withdrawn({"metadata": {"annotations": {"krocket.io/drain": "false"}}})


# --- kopf against kmock -------------------------------------------------------------------------------


async def _annotate(k, name: str, annotations: dict) -> None:
    await patch(k, path("brokergroups", "mq", name), {"metadata": {"annotations": annotations}})


def _group_body(name: str = "broker-a", annotations: dict | None = None) -> dict:
    return bg_body(name, metadata={"annotations": annotations or {}})


async def _group_with_topic(k, brokers: FakeBrokers, annotations: dict | None = None) -> None:
    await create(k, "brokergroups", "mq", _group_body(annotations=annotations))
    await wait_for(lambda: get(k, STS, "mq", "broker-a"), what="StatefulSet")
    await wait_for(lambda: "krocket.io/finalizer" in get(k, BGS, "mq", "broker-a")["metadata"]["finalizers"])
    brokers.topics[A0] = {"orders": {"topicName": "orders", "readQueueNums": 8, "writeQueueNums": 8, "perm": 6}}


def _cond(k, ctype: str) -> dict | None:
    return condition(get(k, BGS, "mq", "broker-a"), ctype)


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_delete_with_lag_is_refused_until_consumers_catch_up(k8s):
    brokers = FakeBrokers()
    brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 40}}]
    async with running_operator(k8s, admin=brokers):
        await _group_with_topic(k8s, brokers)
        await k8s.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-a")
        refused = await wait_for(
            lambda: (c := _cond(k8s, "DrainRequired")) and c["status"] == "True" and c, what="DrainRequired"
        )
        assert refused["reason"] == "UnconsumedMessages"
        assert "orders 40 (billing=40)" in refused["message"] and "krocket.io/drain" in refused["message"]
        await wait_for(lambda: "DeletionRefused" in event_reasons(k8s, "mq"), what="Warning event")
        group = get(k8s, BGS, "mq", "broker-a")
        assert group["status"]["drain"]["phase"] == "DrainRequired"
        assert group["status"]["drain"]["remainingMessages"] == 40
        assert get(k8s, STS, "mq", "broker-a") is not None, "the StatefulSet stays"
        assert "orders" in brokers.topics[A0]
        assert brokers.permission_calls == [], "no drain was asked for: writes stay on"

        brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 0}}]
        await wait_for(lambda: get(k8s, BGS, "mq", "broker-a") is None, timeout=20, what="deletion goes on")
        assert brokers.topics[A0] == {}, "the group's topics were deleted from its broker"


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_drain_on_delete_withdraws_writes_and_waits_for_lag_zero(k8s):
    brokers = FakeBrokers()
    brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 40}}]
    async with running_operator(k8s, admin=brokers):
        await _group_with_topic(k8s, brokers)
        await k8s.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-a")
        await wait_for(lambda: (c := _cond(k8s, "DrainRequired")) and c["status"] == "True", what="refused")
        await _annotate(k8s, "broker-a", {"krocket.io/drain": "true"})
        draining = await wait_for(
            lambda: (c := _cond(k8s, "Draining")) and c["status"] == "True" and c, what="Draining"
        )
        assert "billing=40" in draining["message"]
        assert brokers.writable[A0] is False
        drain_status = get(k8s, BGS, "mq", "broker-a")["status"]["drain"]
        assert drain_status["phase"] == "Draining" and drain_status["startedAt"] and drain_status["deadline"]
        assert _cond(k8s, "DrainRequired")["status"] == "False"
        assert get(k8s, STS, "mq", "broker-a") is not None

        brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 10}}]
        await wait_for(
            lambda: get(k8s, BGS, "mq", "broker-a")["status"]["drain"]["remainingMessages"] == 10, what="progress"
        )
        brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 0}}]
        await wait_for(lambda: get(k8s, BGS, "mq", "broker-a") is None, timeout=20, what="drained and deleted")
        assert brokers.topics[A0] == {}
        assert (A0, True) not in brokers.permission_calls


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_drain_deadline_abandons_with_a_warning(k8s):
    brokers = FakeBrokers()
    brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 40}}]
    async with running_operator(k8s, admin=brokers):
        await _group_with_topic(k8s, brokers, {"krocket.io/drain": "true", "krocket.io/drain-deadline": "2s"})
        await k8s.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-a")
        await wait_for(lambda: get(k8s, BGS, "mq", "broker-a") is None, timeout=20, what="deleted after deadline")
        await wait_for(lambda: "DrainDeadlinePassed" in event_reasons(k8s, "mq"), what="event DrainDeadlinePassed")
        assert brokers.topics[A0] == {}


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_unreachable_master_blocks_deletion_until_a_deadline_passes(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await _group_with_topic(k8s, brokers)
        brokers.down.add(A0)
        await k8s.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-a")
        blocked = await wait_for(
            lambda: (c := _cond(k8s, "DrainRequired")) and c["status"] == "True" and c, what="blocked"
        )
        assert blocked["reason"] == "MasterUnreachable" and "krocket.io/drain-deadline" in blocked["message"]
        assert get(k8s, STS, "mq", "broker-a") is not None
        await _annotate(k8s, "broker-a", {"krocket.io/drain-deadline": "0s"})
        await wait_for(lambda: get(k8s, BGS, "mq", "broker-a") is None, timeout=20, what="deleted after opt-in")
        await wait_for(lambda: "DrainDeadlinePassed" in event_reasons(k8s, "mq"), what="event DrainDeadlinePassed")


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_live_drain_withdraws_writes_reports_progress_and_restores(k8s):
    brokers = FakeBrokers()
    brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 40}}]
    async with running_operator(k8s, admin=brokers):
        await _group_with_topic(k8s, brokers)
        await _annotate(k8s, "broker-a", {"krocket.io/drain": "true"})
        await wait_for(lambda: (c := _cond(k8s, "Draining")) and c["status"] == "True", what="Draining")
        assert brokers.writable[A0] is False
        assert get(k8s, BGS, "mq", "broker-a")["status"]["drain"]["remainingMessages"] == 40
        await wait_for(lambda: "DrainStarted" in event_reasons(k8s, "mq"), what="event DrainStarted")

        # the broker restarts (writable again): the drain withdraws write permission again
        brokers.writable[A0] = True
        await wait_for(lambda: brokers.writable[A0] is False, what="writes withdrawn again after a restart")

        brokers.lag[A0] = [{"topic": "orders", "messages": 100, "groups": {"billing": 0}}]
        drained = await wait_for(
            lambda: (c := _cond(k8s, "Draining")) and c["reason"] == "Drained" and c, what="Drained"
        )
        assert drained["status"] == "False"
        assert get(k8s, BGS, "mq", "broker-a")["status"]["drain"]["phase"] == "Drained"
        assert brokers.writable[A0] is False, "drained, but writes stay off while the annotation is set"
        assert "orders" in brokers.topics[A0], "a live drain deletes nothing"

        await _annotate(k8s, "broker-a", {"krocket.io/drain": None})
        await wait_for(lambda: brokers.writable[A0] is True, what="write permission restored")
        await wait_for(lambda: "drain" not in get(k8s, BGS, "mq", "broker-a")["status"], what="status.drain cleared")
        assert _cond(k8s, "Draining")["reason"] == "NotDraining"
        await wait_for(lambda: "WritesRestored" in event_reasons(k8s, "mq"), what="event WritesRestored")


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_delete_without_backlog_goes_on_at_once(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await _group_with_topic(k8s, brokers)
        await k8s.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-a")
        await wait_for(lambda: get(k8s, BGS, "mq", "broker-a") is None, what="deleted")
        assert brokers.topics[A0] == {}
        assert "DeletionRefused" not in event_reasons(k8s, "mq")
