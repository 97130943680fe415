"""A Topic's `spec.messageType` on the brokers: the topic attribute `message.type` (what RocketMQ 5.x clients may
send to it). Pure decisions and status first, then kopf against kmock with in-memory brokers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE, TOPIC_MESSAGE_TYPES, topic_message_type
from krocket.common.topic import TopicConfig
from krocket.operator import conditions as cond
from krocket.operator import placement as pl
from krocket.operator import status_topic as ts

from tests.operator.api import TOPICS, create, patch, path
from tests.operator.bodies import make_body
from tests.operator.crdschema import version_schema
from tests.operator.kopf_harness import (
    FakeBrokers,
    StampingEmulator,
    condition,
    event_reasons,
    get,
    running_operator,
    wait_for,
)
from tests.operator.test_topic_shape import B0, QueueBrokers, _group_body, _topic_body

A0 = "fake://mq/broker-a/0"


def _typed(message_type: str | None, read: int = 8, write: int = 8) -> TopicConfig:
    attributes = {} if message_type is None else {MESSAGE_TYPE_ATTRIBUTE: message_type}
    return TopicConfig("orders", read, write, 6, attributes=attributes)


def _spec_topic(**spec: Any) -> dict[str, Any]:
    return make_body("Topic", "orders", {"placement": {"clusterName": "c1"}, **spec})


# --- pure: the desired topic and the plan ---------------------------------------------------------------


def test_crd_message_types_are_the_brokers(crds):
    field = version_schema(crds["Topic"])["properties"]["spec"]["properties"]["messageType"]
    assert tuple(field["enum"]) == TOPIC_MESSAGE_TYPES, "MIXED included, as the broker takes it"
    assert field["default"] == "NORMAL" and field["description"]


@pytest.mark.parametrize("message_type", TOPIC_MESSAGE_TYPES)
def test_desired_config_carries_the_message_type(defaulted, message_type):
    spec = {"placement": {"clusterName": "c1"}, "messageType": message_type}
    cfg = pl.desired_config(defaulted("Topic", "orders", spec))
    assert cfg.attributes == {MESSAGE_TYPE_ATTRIBUTE: message_type}
    assert cfg.to_json()["attributes"] == {"message.type": message_type}, "what the admin API is sent"


def test_unknown_message_type_is_refused():
    with pytest.raises(pl.TopicSpecError) as e:
        pl.desired_config(_spec_topic(messageType="BATCH"))
    assert e.value.reason == cond.REASON_INVALID and "NORMAL, FIFO, DELAY, TRANSACTION, MIXED" in str(e.value)
    assert pl.desired_config(_spec_topic()).attributes == {MESSAGE_TYPE_ATTRIBUTE: "NORMAL"}, "unset: NORMAL"


def test_a_changed_message_type_is_an_update_and_an_unchanged_one_is_not():
    update = pl.plan(_typed("TRANSACTION"), _typed("FIFO"), shrink_allowed=False)
    assert update.kind == "update" and update.apply == _typed("TRANSACTION")
    assert "message type FIFO->TRANSACTION" in update.message
    assert pl.plan(_typed("FIFO"), _typed("FIFO"), shrink_allowed=False).kind == "none"
    # a topic without the attribute is NORMAL to RocketMQ: a NORMAL Topic does not rewrite it
    assert pl.plan(_typed("NORMAL"), _typed(None), shrink_allowed=False).kind == "none"
    assert pl.plan(_typed("FIFO"), _typed(None), shrink_allowed=False).kind == "update"
    assert pl.plan(_typed("FIFO"), None, shrink_allowed=False).apply == _typed("FIFO"), "created with its type"


def test_a_refused_read_cut_still_applies_the_message_type():
    refused = pl.plan(_typed("FIFO", 4, 4), _typed("NORMAL", 8, 4), shrink_allowed=False, removed_lag={"billing": 3})
    assert refused.kind == "refuse" and refused.apply == _typed("FIFO", 8, 4), "readQueues kept, type applied"
    assert "writeQueues lowered" not in refused.message, "the write queues were already there"
    done = pl.plan(_typed("FIFO", 4, 4), _typed("FIFO", 8, 4), shrink_allowed=False, removed_lag={"billing": 3})
    assert done.kind == "refuse" and done.apply is None, "nothing left to send"


def test_the_attributes_a_broker_holds_are_kept_under_the_topics_own():
    held = _typed("FIFO")
    wanted = pl.with_attributes_of(_typed("DELAY"), held)
    assert wanted.attributes == {MESSAGE_TYPE_ATTRIBUTE: "DELAY"}
    assert pl.with_attributes_of(TopicConfig("orders", 8, 8, 6), held).attributes == held.attributes


# --- pure: status -------------------------------------------------------------------------------------


def test_placement_shows_the_held_type_and_a_mismatch_degrades():
    group = make_body("BrokerGroup", "broker-a", {"clusterName": "c1"})
    entry = ts.held_entry(group, _typed("FIFO"), pl.Action("none", "in sync"))
    assert entry["messageType"] == "FIFO"
    assert ts.held_entry(group, _typed(None), pl.Action("none", "in sync"))["messageType"] == "NORMAL"
    assert ts.degraded_condition(_typed("FIFO"), [entry], []).status == cond.FALSE
    degraded = ts.degraded_condition(_typed("TRANSACTION"), [entry], [])
    assert (degraded.status, degraded.reason) == (cond.TRUE, cond.REASON_MESSAGE_TYPE_MISMATCH)
    assert degraded.message == "broker-a holds message type FIFO, spec TRANSACTION"
    both = ts.degraded_condition(_typed("TRANSACTION", 8, 4), [entry], [])
    assert both.reason == cond.REASON_QUEUE_MISMATCH and "message type FIFO" in both.message


# --- kopf against kmock -------------------------------------------------------------------------------


class CountingBrokers(FakeBrokers):
    """FakeBrokers that record every topic write: (url, topic, message type sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str, str]] = []

    async def upsert_topic(self, url: str, cfg: TopicConfig) -> dict[str, Any]:
        self.writes.append((url, cfg.topic_name, topic_message_type(cfg)))
        return await super().upsert_topic(url, cfg)


class TypeBlindBrokers(CountingBrokers):
    """Brokers whose admin API keeps no topic attributes (what a broker without them does)."""

    async def upsert_topic(self, url: str, cfg: TopicConfig) -> dict[str, Any]:
        await super().upsert_topic(url, cfg)
        with self.lock:
            self.topics[url][cfg.topic_name]["attributes"] = {}
            return dict(self.topics[url][cfg.topic_name])


def _topic(k) -> dict[str, Any] | None:
    return get(k, TOPICS, "mq", "orders")


def _held_type(brokers: FakeBrokers, url: str = A0) -> str | None:
    return (brokers.topics.get(url, {}).get("orders") or {}).get("attributes", {}).get(MESSAGE_TYPE_ATTRIBUTE)


def _placed_types(k) -> list[str]:
    return [p.get("messageType") for p in ((_topic(k) or {}).get("status") or {}).get("placement") or []]


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_message_type_applied_changed_and_not_reapplied(k8s):
    brokers = CountingBrokers()
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "brokergroups", "mq", _group_body("broker-a"))
        await create(k8s, "topics", "mq", _topic_body(messageType="FIFO"))
        await wait_for(lambda: (c := condition(_topic(k8s))) and c["status"] == "True", what="Ready")
        assert _held_type(brokers) == "FIFO"
        await wait_for(lambda: _placed_types(k8s) == ["FIFO"], what="status.placement[].messageType")
        assert brokers.writes == [(A0, "orders", "FIFO")]

        await patch(k8s, path("topics", "mq", "orders"), {"spec": {"messageType": "TRANSACTION"}})
        await wait_for(lambda: _held_type(brokers) == "TRANSACTION", what="the brokers' topic updated")
        await wait_for(lambda: _placed_types(k8s) == ["TRANSACTION"], what="status follows")
        await wait_for(lambda: "TopicUpdated" in event_reasons(k8s, "mq"), what="event TopicUpdated")
        assert condition(_topic(k8s), "Degraded")["status"] == "False"

        await asyncio.sleep(2.5)  # two resyncs (FAST: every second)
        assert brokers.writes == [(A0, "orders", "FIFO"), (A0, "orders", "TRANSACTION")], "nothing re-applied"


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_normal_topic_already_on_the_brokers_is_left_alone(k8s):
    brokers = CountingBrokers()
    brokers.topics[A0] = {"orders": TopicConfig("orders", 8, 8, 6).to_json()}  # no message.type: NORMAL
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "brokergroups", "mq", _group_body("broker-a"))
        await create(k8s, "topics", "mq", _topic_body(messageType="NORMAL"))
        await wait_for(lambda: (c := condition(_topic(k8s))) and c["status"] == "True", what="Ready")
        assert _placed_types(k8s) == ["NORMAL"]
        assert brokers.writes == [], "no write just to spell out the default"


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_broker_that_drops_the_type_shows_as_degraded(k8s):
    brokers = TypeBlindBrokers()
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "brokergroups", "mq", _group_body("broker-a"))
        await create(k8s, "topics", "mq", _topic_body(messageType="FIFO"))
        degraded = await wait_for(
            lambda: (c := condition(_topic(k8s), "Degraded")) and c["status"] == "True" and c, what="Degraded"
        )
        assert degraded["reason"] == "MessageTypeMismatch"
        assert "broker-a holds message type NORMAL, spec FIFO" in degraded["message"]
        assert _placed_types(k8s) == ["NORMAL"], "status shows what the broker holds"


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_draining_group_keeps_the_topics_type(k8s):
    brokers = QueueBrokers()
    brokers.lag[B0] = [{"topic": "orders", "messages": 50, "groups": {"billing": 20}}]
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "brokergroups", "mq", _group_body("broker-a"))
        await create(k8s, "brokergroups", "mq", _group_body("broker-b"))
        await create(k8s, "topics", "mq", _topic_body(messageType="FIFO"))
        await wait_for(lambda: _held_type(brokers, B0) == "FIFO", what="FIFO on broker-b")
        await patch(k8s, path("brokergroups", "mq", "broker-b"), {"metadata": {"labels": {"tier": "bronze"}}})
        await patch(k8s, path("topics", "mq", "orders"), {"metadata": {"annotations": {"krocket.io/drain": "true"}}})
        await wait_for(lambda: brokers.topics[B0]["orders"]["perm"] == 4, what="read-only on the leaving group")
        assert _held_type(brokers, B0) == "FIFO", "made read-only, its message type kept"
