"""Topic shape changes that must not lose messages: groups leaving the placement, two-phase queue shrink,
the true queue count and `Degraded`, system topic names. Pure decisions first, then kopf against kmock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from krocket.common.topic import TopicConfig
from krocket.operator import conditions as cond
from krocket.operator import drain
from krocket.operator import placement as pl
from krocket.operator import status_topic as ts

from tests.operator.api import BGS, TOPICS, G, bg_body, create, patch, path, topic_body
from tests.operator.bodies import make_body
from tests.operator.kopf_harness import (
    FakeBrokers,
    StampingEmulator,
    condition,
    event_reasons,
    get,
    running_operator,
    wait_for,
)

A0, B0 = "fake://mq/broker-a/0", "fake://mq/broker-b/0"
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


# --- pure: the per-broker plan ------------------------------------------------------------------------


def _cfg(read: int, write: int, perm: int = 6) -> TopicConfig:
    return TopicConfig("orders", read, write, perm)


def test_lowering_write_queues_alone_needs_no_annotation():
    action = pl.plan(_cfg(8, 4), _cfg(8, 8), shrink_allowed=False)
    assert action.kind == "update" and action.apply == _cfg(8, 4)


def test_read_cut_applies_at_once_when_the_removed_queues_are_empty():
    action = pl.plan(_cfg(4, 4), _cfg(8, 4), shrink_allowed=False, removed_lag={})
    assert action.kind == "update" and action.apply == _cfg(4, 4)


def test_read_cut_with_lag_is_refused_but_phase_one_is_applied():
    action = pl.plan(_cfg(4, 4), _cfg(8, 8), shrink_allowed=False, removed_lag={"billing": 30})
    assert action.kind == "refuse"
    assert action.apply == _cfg(8, 4), "writeQueues lowered first, readQueues kept"
    assert "30 unconsumed message(s) (billing=30)" in action.message and "queues 4..7" in action.message
    assert "krocket.io/allow-queue-shrink" in action.message
    # phase one already done: nothing to send
    assert pl.plan(_cfg(4, 4), _cfg(8, 4), shrink_allowed=False, removed_lag={"billing": 30}).apply is None
    # unknown contents are never assumed empty; the annotation accepts the loss
    assert pl.plan(_cfg(4, 4), _cfg(8, 4), shrink_allowed=False, removed_lag=None).kind == "refuse"
    assert pl.plan(_cfg(4, 4), _cfg(8, 4), shrink_allowed=True, removed_lag={"billing": 30}).apply == _cfg(4, 4)


@pytest.mark.parametrize("name", ["%RETRY%billing", "%DLQ%billing", "SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRACE_TOPIC"])
def test_system_topic_names_are_refused(name):
    body = make_body("Topic", "t", {"topicName": name, "placement": {"clusterName": "c1"}})
    with pytest.raises(pl.TopicSpecError) as e:
        pl.desired_config(body)
    assert e.value.reason == cond.REASON_INVALID and "system topic" in str(e.value)


# --- pure: status ------------------------------------------------------------------------------------


def _group(name: str) -> dict[str, Any]:
    return make_body("BrokerGroup", name, {"clusterName": "c1"})


def test_degraded_names_every_difference_between_placement_and_brokers():
    cfg = _cfg(8, 8)
    ok = ts.held_entry(_group("broker-a"), cfg, pl.Action("none", "in sync"))
    assert ts.degraded_condition(cfg, [ok], []).status == cond.FALSE
    down = ts.unavailable_entry(_group("broker-b"), "master unreachable")
    short = ts.held_entry(_group("broker-c"), _cfg(8, 4), pl.Action("refuse", "readQueues stays 8"))
    left = ts.leaving_entry(_group("broker-d"), cfg, ts.LEAVING, "kept", 12, None)
    d = ts.degraded_condition(cfg, [ok, down, short], [left], ["broker-a"])
    assert (d.status, d.reason) == (cond.TRUE, cond.REASON_BROKER_UNAVAILABLE)
    for part in ("broker-b: master unreachable", "broker-c holds read 8/write 4", "broker-d left the placement",
                 "12 unconsumed", "broker-a: BrokerGroup drain"):  # fmt: skip
        assert part in d.message
    assert ts.total_queues([ok, down, short, left]) == 8 + 0 + 4 + 8
    required = ts.drain_required_condition([left])
    assert (required.status, required.message) == (cond.TRUE, "kept")


def test_decide_leave():
    kw = {"broker": "broker-b", "started_at": None, "deadline_s": 60.0, "now": NOW}
    assert drain.decide_leave(lag={}, requested=False, **kw).kind == "delete"
    refused = drain.decide_leave(lag={"billing": 5}, requested=False, **kw)
    assert refused.kind == "refuse" and "billing=5" in refused.message and "krocket.io/drain" in refused.message
    assert drain.decide_leave(lag={"billing": 5}, requested=True, **kw).kind == "read-only"
    late = {**kw, "started_at": NOW - datetime.timedelta(minutes=2)}
    abandoned = drain.decide_leave(lag={"billing": 5}, requested=True, **late)
    assert (abandoned.kind, abandoned.abandon) == ("delete", True)


# --- kopf against kmock -------------------------------------------------------------------------------


class QueueBrokers(FakeBrokers):
    """FakeBrokers whose get_topic reports per-queue offsets, as the real admin API does."""

    def __init__(self) -> None:
        super().__init__()
        self.max_offsets: dict[tuple[str, str], dict[int, int]] = {}  # (url, topic) -> queueId -> maxOffset

    async def get_topic(self, url: str, topic: str) -> dict[str, Any] | None:
        found = await super().get_topic(url, topic)
        if found is not None:
            held = self.max_offsets.get((url, topic), {})
            found["queues"] = [
                {"queueId": q, "minOffset": 0, "maxOffset": held.get(q, 0)} for q in range(found["readQueueNums"])
            ]
        return found


def _group_body(name: str, tier: str = "gold") -> dict:
    return bg_body(name, metadata={"labels": {"tier": tier}})


def _topic_body(**spec: Any) -> dict:
    return topic_body("orders", placement={"brokerGroupSelector": {"matchLabels": {"tier": "gold"}}}, queues=8, **spec)


def _topic(k) -> dict | None:
    return get(k, TOPICS, "mq", "orders")


def _cond(k, ctype: str = "Ready") -> dict | None:
    return condition(_topic(k), ctype)


async def _two_groups_with_topic(k, brokers: FakeBrokers) -> None:
    await create(k, "brokergroups", "mq", _group_body("broker-a"))
    await create(k, "brokergroups", "mq", _group_body("broker-b"))
    await create(k, "topics", "mq", _topic_body())
    await wait_for(
        lambda: (c := _cond(k)) and c["status"] == "True" and _topic(k)["status"]["queues"] == 16, what="Ready 16"
    )
    assert "orders" in brokers.topics[A0] and "orders" in brokers.topics[B0]


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_group_leaving_the_placement_without_lag_loses_the_topic(k8s):
    brokers = QueueBrokers()
    async with running_operator(k8s, admin=brokers):
        await _two_groups_with_topic(k8s, brokers)
        await patch(k8s, path("brokergroups", "mq", "broker-b"), {"metadata": {"labels": {"tier": "silver"}}})
        await wait_for(lambda: "orders" not in brokers.topics[B0], what="topic removed from the group that left")
        t = await wait_for(lambda: (t := _topic(k8s))["status"]["queues"] == 8 and t, what="true queue count")
        assert [p["brokerGroup"] for p in t["status"]["placement"]] == ["broker-a"]
        assert condition(t, "Degraded")["status"] == "False"
        await wait_for(lambda: "TopicRemovedFromGroup" in event_reasons(k8s, "mq"), what="event TopicRemovedFromGroup")
        assert "orders" in brokers.topics[A0]


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_group_leaving_with_lag_is_refused_then_drained_on_request(k8s):
    brokers = QueueBrokers()
    brokers.lag[B0] = [{"topic": "orders", "messages": 50, "groups": {"billing": 20}}]
    async with running_operator(k8s, admin=brokers):
        await _two_groups_with_topic(k8s, brokers)
        await patch(k8s, path("brokergroups", "mq", "broker-b"), {"metadata": {"labels": {"tier": "bronze"}}})
        required = await wait_for(
            lambda: (c := _cond(k8s, "DrainRequired")) and c["status"] == "True" and c, what="DrainRequired"
        )
        assert "broker-b" in required["message"] and "billing=20" in required["message"]
        degraded = _cond(k8s, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "LeftPlacement")
        assert brokers.topics[B0]["orders"]["perm"] == 6, "kept there, writable, until drained"
        t = _topic(k8s)
        assert t["status"]["queues"] == 16, "broker-b still holds its 8 queues"
        leaving = next(p for p in t["status"]["placement"] if p["brokerGroup"] == "broker-b")
        assert (leaving["state"], leaving["lag"]) == ("Leaving", 20)
        await wait_for(lambda: "DrainRequired" in event_reasons(k8s, "mq"), what="Warning event")

        await patch(k8s, path("topics", "mq", "orders"), {"metadata": {"annotations": {"krocket.io/drain": "true"}}})
        await wait_for(lambda: brokers.topics[B0]["orders"]["perm"] == 4, what="read-only on the leaving group")
        await wait_for(
            lambda: (
                next(p for p in _topic(k8s)["status"]["placement"] if p["brokerGroup"] == "broker-b")["state"]
                == "Draining"
            ),
            what="Draining entry",
        )
        assert _cond(k8s, "DrainRequired")["status"] == "False"
        brokers.lag[B0] = [{"topic": "orders", "messages": 50, "groups": {"billing": 0}}]
        await wait_for(lambda: "orders" not in brokers.topics[B0], what="deleted once drained")
        await wait_for(lambda: _cond(k8s, "Degraded")["status"] == "False", what="no longer degraded")
        assert _topic(k8s)["status"]["queues"] == 8
        assert brokers.topics[A0]["orders"]["perm"] == 6


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_deleting_the_topic_cleans_up_a_group_that_left_with_lag(k8s):
    brokers = QueueBrokers()
    brokers.lag[B0] = [{"topic": "orders", "messages": 50, "groups": {"billing": 20}}]
    async with running_operator(k8s, admin=brokers):
        await _two_groups_with_topic(k8s, brokers)
        await patch(k8s, path("brokergroups", "mq", "broker-b"), {"metadata": {"labels": {"tier": "bronze"}}})
        await wait_for(lambda: (c := _cond(k8s, "DrainRequired")) and c["status"] == "True", what="DrainRequired")
        await k8s.delete(f"/apis/{G}/namespaces/mq/topics/orders")
        await wait_for(lambda: _topic(k8s) is None, what="Topic deleted")
        assert "orders" not in brokers.topics[A0] and "orders" not in brokers.topics[B0]


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_deleting_a_group_shows_on_the_topic_until_it_is_gone(k8s):
    brokers = QueueBrokers()
    brokers.lag[B0] = [{"topic": "orders", "messages": 50, "groups": {"billing": 20}}]
    async with running_operator(k8s, admin=brokers):
        await _two_groups_with_topic(k8s, brokers)
        await k8s.delete(f"/apis/{G}/namespaces/mq/brokergroups/broker-b")
        degraded = await wait_for(
            lambda: (c := _cond(k8s, "Degraded")) and c["status"] == "True" and c, what="Topic Degraded"
        )
        assert "broker-b" in degraded["message"]
        assert _topic(k8s)["status"]["queues"] == 16
        assert get(k8s, BGS, "mq", "broker-b") is not None, "the group's deletion is refused"
        brokers.lag[B0] = []
        await wait_for(lambda: get(k8s, BGS, "mq", "broker-b") is None, timeout=20, what="group deleted")
        await wait_for(
            lambda: _topic(k8s)["status"]["queues"] == 8 and _cond(k8s, "Degraded")["status"] == "False",
            what="true count 8, not degraded",
        )


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_two_phase_queue_shrink(k8s):
    brokers = QueueBrokers()
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "brokergroups", "mq", _group_body("broker-a"))
        await create(k8s, "topics", "mq", _topic_body())
        await wait_for(lambda: (c := _cond(k8s)) and c["status"] == "True", what="Ready")

        # phase one: writeQueues alone, no annotation
        await patch(k8s, path("topics", "mq", "orders"), {"spec": {"writeQueues": 4}})
        await wait_for(lambda: brokers.topics[A0]["orders"]["writeQueueNums"] == 4, what="writeQueues lowered")
        await wait_for(lambda: _topic(k8s)["status"]["queues"] == 4, what="true count 4")
        assert brokers.topics[A0]["orders"]["readQueueNums"] == 8
        assert _cond(k8s)["status"] == "True"

        # phase two: queues 4..7 still hold unconsumed messages -> refused, naming the lag
        brokers.max_offsets[(A0, "orders")] = {q: 10 for q in range(8)}
        brokers.lag[A0] = [{"topic": "orders", "messages": 80, "groups": {"billing": 12}}]
        brokers.offsets[A0] = {
            "billing": {"offsets": [{"topic": "orders", "queueId": q, "lag": 3 if q >= 4 else 0} for q in range(8)]}
        }
        await patch(k8s, path("topics", "mq", "orders"), {"spec": {"readQueues": 4}})
        refused = await wait_for(
            lambda: (c := _cond(k8s)) and c["status"] == "False" and "billing=12" in c["message"] and c,
            what="read cut refused",
        )
        assert "queues 4..7" in refused["message"]
        assert brokers.topics[A0]["orders"]["readQueueNums"] == 8
        assert _cond(k8s, "Degraded")["reason"] == "QueueCountMismatch"
        await wait_for(lambda: "QueueShrinkRefused" in event_reasons(k8s, "mq"), what="event")

        # consumers catch up: the cut goes through with no annotation
        brokers.offsets[A0] = {"billing": {"offsets": [{"topic": "orders", "queueId": q, "lag": 0} for q in range(8)]}}
        await wait_for(lambda: brokers.topics[A0]["orders"]["readQueueNums"] == 4, what="readQueues lowered")
        await wait_for(lambda: _cond(k8s)["status"] == "True", what="Ready again")
        assert _cond(k8s, "Degraded")["status"] == "False"


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_system_topic_refused_in_a_topic_resource(k8s):
    brokers = QueueBrokers()
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "brokergroups", "mq", _group_body("broker-a"))
        await create(k8s, "topics", "mq", _topic_body(topicName="%RETRY%billing"))
        refused = await wait_for(lambda: (c := _cond(k8s)) and c, what="condition")
        assert (refused["status"], refused["reason"]) == ("False", "InvalidSpec")
        assert "system topic" in refused["message"]
        assert "%RETRY%billing" not in brokers.topics.get(A0, {})
