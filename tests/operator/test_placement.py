"""Topic validation, placement over BrokerGroups and the per-broker action (pure)."""

from __future__ import annotations

import pytest

from krocket.common.topic import TopicConfig
from krocket.operator import conditions as cond
from krocket.operator import placement as pl

from tests.operator.bodies import make_body


def _group(name: str, cluster: str = "c1", ns: str = "mq", labels: dict | None = None) -> dict:
    return make_body(
        "BrokerGroup", name, {"clusterName": cluster, "nameServerSetRef": {"name": "n"}}, ns, labels=labels or {}
    )


def test_desired_config_defaults(defaulted):
    cfg = pl.desired_config(defaulted("Topic", "orders", {"placement": {"clusterName": "c1"}}))
    assert cfg == TopicConfig("orders", 8, 8, 6, attributes={"message.type": "NORMAL"})
    assert {k: cfg.to_json()[k] for k in ("topicName", "readQueueNums", "writeQueueNums", "perm", "attributes")} == {
        "topicName": "orders",
        "readQueueNums": 8,
        "writeQueueNums": 8,
        "perm": 6,
        "attributes": {"message.type": "NORMAL"},
    }


@pytest.mark.parametrize(
    ("spec", "reason", "text"),
    [
        ({"readQueues": 4, "writeQueues": 8}, "InvalidSpec", "must not exceed"),
        ({"topicName": "bad name!"}, "InvalidSpec", "may only contain"),
        ({"topicName": "x" * 128}, "InvalidSpec", "at most 127"),
        ({"perm": 1}, "InvalidSpec", "perm"),
        ({"perm": 7}, "InvalidSpec", "perm must be 2 \\(write\\), 4 \\(read\\) or 6"),
    ],
)
def test_desired_config_refusals(defaulted, spec, reason, text):
    with pytest.raises(pl.TopicSpecError, match=text) as e:
        pl.desired_config(defaulted("Topic", "t", {"placement": {"clusterName": "c1"}, **spec}))
    assert e.value.reason == reason


def test_topic_name_is_immutable_against_status(defaulted):
    body = defaulted("Topic", "t", {"placement": {"clusterName": "c1"}, "topicName": "New"})
    body["status"] = {"topicName": "Old"}
    with pytest.raises(pl.TopicSpecError) as e:
        pl.desired_config(body)
    assert e.value.reason == cond.REASON_NOT_SUPPORTED


def test_select_by_cluster_and_selector(defaulted):
    groups = [
        _group("b", labels={"tier": "gold"}),
        _group("a", labels={"tier": "silver"}),
        _group("x", cluster="c2", labels={"tier": "gold"}),
        _group("other-ns", ns="elsewhere"),
    ]
    by_cluster = pl.select_groups(defaulted("Topic", "t", {"placement": {"clusterName": "c1"}}), groups)
    assert [g["metadata"]["name"] for g in by_cluster] == ["a", "b"]
    sel = {"brokerGroupSelector": {"matchLabels": {"tier": "gold"}}}
    assert [g["metadata"]["name"] for g in pl.select_groups(defaulted("Topic", "t", {"placement": sel}), groups)] == [
        "b",
        "x",
    ]
    both = {"clusterName": "c1", **sel}
    assert [g["metadata"]["name"] for g in pl.select_groups(defaulted("Topic", "t", {"placement": both}), groups)] == [
        "b"
    ]


def test_a_refused_cluster_change_does_not_move_a_group_between_clusters(defaulted):
    """clusterName is immutable once applied: the recorded one (status.identity) decides placement, not an edit."""
    moved = _group("a", cluster="c2")
    moved["status"] = {"identity": {"clusterName": "c1", "brokerName": "a", "nameServerSetRef": {"name": "n"}}}
    fresh = _group("b", cluster="c2")
    c1 = pl.select_groups(defaulted("Topic", "t", {"placement": {"clusterName": "c1"}}), [moved, fresh])
    c2 = pl.select_groups(defaulted("Topic", "t", {"placement": {"clusterName": "c2"}}), [moved, fresh])
    assert ([g["metadata"]["name"] for g in c1], [g["metadata"]["name"] for g in c2]) == (["a"], ["b"])


def test_label_selector_expressions():
    labels = {"tier": "gold", "zone": "a"}
    sel = lambda *e: {"matchExpressions": list(e)}  # noqa: E731
    assert pl.matches_selector(labels, sel({"key": "tier", "operator": "In", "values": ["gold", "x"]}))
    assert not pl.matches_selector(labels, sel({"key": "tier", "operator": "NotIn", "values": ["gold"]}))
    assert pl.matches_selector(labels, sel({"key": "zone", "operator": "Exists"}))
    assert not pl.matches_selector(labels, sel({"key": "zone", "operator": "DoesNotExist"}))
    assert pl.matches_selector(labels, {})


def test_plan_actions():
    want = TopicConfig("t", 8, 8, 6)
    assert pl.plan(want, None, shrink_allowed=False).kind == "create"
    assert pl.plan(want, TopicConfig("t", 8, 8, 6), shrink_allowed=False).kind == "none"
    assert pl.plan(want, TopicConfig("t", 4, 4, 6), shrink_allowed=False).kind == "update"
    assert pl.plan(want, TopicConfig("t", 8, 8, 4), shrink_allowed=False).kind == "update"
    refused = pl.plan(want, TopicConfig("t", 16, 8, 6), shrink_allowed=False)
    assert refused.kind == "refuse" and "krocket.io/allow-queue-shrink" in refused.message
    assert pl.plan(want, TopicConfig("t", 16, 8, 6), shrink_allowed=True).kind == "update"


def test_broker_topic_reads_the_admin_api_answer():
    answer = {"topicName": "t", "readQueueNums": 4, "writeQueueNums": 2, "perm": 4, "queues": []}
    assert pl.broker_topic(answer) == TopicConfig("t", 4, 2, 4)
    assert pl.broker_topic(None) is None


def test_allow_shrink_annotation(defaulted):
    t = defaulted(
        "Topic", "t", {"placement": {"clusterName": "c1"}}, annotations={"krocket.io/allow-queue-shrink": "true"}
    )
    assert pl.allow_shrink(t)
    assert not pl.allow_shrink(defaulted("Topic", "t", {"placement": {"clusterName": "c1"}}))


def test_conflict_oldest_wins(defaulted):
    old = defaulted(
        "Topic", "a", {"placement": {"clusterName": "c1"}, "topicName": "T"}, creationTimestamp="2026-01-01T00:00:00Z"
    )
    new = defaulted(
        "Topic", "b", {"placement": {"clusterName": "c1"}, "topicName": "T"}, creationTimestamp="2026-01-02T00:00:00Z"
    )
    assert pl.find_conflict(new, [old, new])["metadata"]["name"] == "a"
    assert pl.find_conflict(old, [old, new]) is None


def test_conditions_keep_transition_time():
    first = cond.merge_conditions(None, [cond.Condition("Ready", "False", "X")], now="t1", observed_generation=1)
    same = cond.merge_conditions(first, [cond.Condition("Ready", "False", "Y")], now="t2", observed_generation=2)
    flip = cond.merge_conditions(same, [cond.Condition("Ready", "True", "Z")], now="t3")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "Y" and same[0]["observedGeneration"] == 2
    assert flip[0]["lastTransitionTime"] == "t3"
    assert cond.is_true(flip, "Ready")
