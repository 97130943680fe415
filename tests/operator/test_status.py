"""Pure status functions: what each resource shows from what its reconciler observed."""

from __future__ import annotations

from krocket.common.topic import TopicConfig
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator import status_brokergroup as bg_status
from krocket.operator import status_nameserverset as nss_status
from krocket.operator import status_topic as topic_status
from krocket.operator.placement import Action
from krocket.operator.status_brokergroup import PodView
from krocket.operator.status_common import label_selector, statefulset_count

from tests.operator.bodies import make_body

# --- shared -----------------------------------------------------------------------------------------


def test_statefulset_count_reads_status_or_zero():
    assert statefulset_count({"status": {"readyReplicas": 2}}, "readyReplicas") == 2
    assert statefulset_count({"status": {"readyReplicas": None}}, "readyReplicas") == 0
    assert statefulset_count({}, "replicas") == 0
    assert statefulset_count(None, "replicas") == 0


def test_label_selector_string():
    assert label_selector({"a": "1", "b": "2"}) == "a=1,b=2"


def test_status_with_conditions_sets_generation_and_keeps_transition_time():
    body = make_body("NameServerSet", "n", {}, generation=3)
    first = cond.status_with_conditions(body, {}, [cond.Condition(cond.READY, cond.FALSE, "A")], now="t1")
    assert first["observedGeneration"] == 3
    assert first["conditions"][0]["observedGeneration"] == 3
    body["status"] = first
    again = cond.status_with_conditions(body, {"x": 1}, [cond.Condition(cond.READY, cond.FALSE, "B")], now="t2")
    assert again["x"] == 1
    assert (again["conditions"][0]["reason"], again["conditions"][0]["lastTransitionTime"]) == ("B", "t1")


def test_status_with_conditions_without_generation():
    body = make_body("Topic", "t", {})
    del body["metadata"]["generation"]
    status = cond.status_with_conditions(body, {}, [cond.Condition(cond.READY, cond.TRUE, "Ok")], now="t")
    assert "observedGeneration" not in status and "observedGeneration" not in status["conditions"][0]


# --- NameServerSet ----------------------------------------------------------------------------------


def test_namesrv_status_addresses_and_counts(defaulted):
    body = defaulted("NameServerSet", "ns1", {"replicas": 3})
    st = nss_status.status(body, {"status": {"replicas": 3, "readyReplicas": 1}})
    assert st["address"] == "ns1-headless.mq.svc:9876"
    assert st["serviceAddress"] == "ns1.mq.svc:9876"
    assert st["addresses"][2] == "ns1-2.ns1-headless.mq.svc:9876"
    assert st["nsAddr"] == ";".join(st["addresses"]) and st["nsAddr"].count(";") == 2
    assert (st["replicas"], st["readyReplicas"]) == (3, 1)
    assert "app.kubernetes.io/instance=ns1" in st["labelSelector"].split(",")
    assert nss_status.status(body, None)["readyReplicas"] == 0


def test_namesrv_ready_condition(defaulted):
    body = defaulted("NameServerSet", "ns1", {"replicas": 2})
    ready = nss_status.ready_condition(body, {"status": {"readyReplicas": 2}})
    assert (ready.status, ready.reason, ready.message) == (cond.TRUE, cond.REASON_ALL_READY, "2/2 name servers ready")
    waiting = nss_status.ready_condition(body, {"status": {"readyReplicas": 1}})
    assert (waiting.status, waiting.reason) == (cond.FALSE, cond.REASON_WAITING)
    assert "kubectl describe pods -l app.kubernetes.io/instance=ns1,app.kubernetes.io/component=namesrv" in (
        waiting.message
    )
    zero = nss_status.ready_condition(defaulted("NameServerSet", "ns1", {"replicas": 0}), None)
    assert (zero.status, zero.reason) == (cond.FALSE, cond.REASON_NO_REPLICAS)


# --- BrokerGroup ------------------------------------------------------------------------------------


def _group(defaulted, **spec):
    return defaulted("BrokerGroup", "g", {"nameServerSetRef": {"name": "n"}, **spec})


def _pod(ready: str | None) -> dict:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {"metadata": {"name": "g-0"}, "status": {"conditions": conditions}}


def test_pod_ready_reads_the_ready_condition():
    assert bg_status.pod_ready(_pod("True"))
    assert not bg_status.pod_ready(_pod("False"))
    assert not bg_status.pod_ready(_pod(None))
    assert not bg_status.pod_ready(None)


def test_pod_view_falls_back_to_the_broker_without_a_pod(defaulted):
    group = _group(defaulted)
    view = bg_status.pod_view(group, 1, _pod("False"), {"registered": True})
    assert view == PodView(1, "g-1", "g-1.g-headless.mq.svc:10911", False, {"registered": True})
    assert bg_status.pod_view(group, 1, None, {"registered": True}).ready
    assert not bg_status.pod_view(group, 1, None, None).ready


def test_group_status_master_slaves_and_lag(defaulted):
    group = _group(defaulted, slaves=2)
    sts = {
        "status": {"replicas": 3, "readyReplicas": 2},
        "spec": {"template": {"spec": {"containers": [{"name": "broker", "image": "krocket/broker:1"}]}}},
    }
    pods = [
        PodView(0, "g-0", "a0", True, {"maxPhyOffset": 1000, "registered": True}),
        PodView(1, "g-1", "a1", True, {"maxPhyOffset": 990, "registered": True}),
        PodView(2, "g-2", "a2", False, {"maxPhyOffset": 1200, "registered": False}),
    ]
    st = bg_status.status(group, sts, pods, lag_limit=5)
    assert st["master"] == {"pod": "g-0", "brokerId": 0, "address": "a0", "ready": True, "registered": True}
    assert [(s["lagBytes"], s["inSync"]) for s in st["slaves"]] == [(10, False), (0, True)]
    assert st["replicationLagBytes"] == 10
    assert (st["replicas"], st["readyReplicas"], st["slaveReplicas"]) == (3, 2, 2)
    assert (st["brokerName"], st["clusterName"], st["registered"]) == ("g", "DefaultCluster", True)
    assert st["currentImage"] == "krocket/broker:1"
    assert not bg_status.has_slave_in_sync(st)  # the one in sync is not ready
    assert bg_status.has_slave_in_sync(bg_status.status(group, sts, pods, lag_limit=10))


def test_group_status_before_any_pod(defaulted):
    st = bg_status.status(_group(defaulted), None, [], lag_limit=5)
    assert st["master"] == {"pod": "g-0", "ready": False}
    assert st["slaves"] == [] and st["registered"] is False and st["slaveReplicas"] == 0
    assert "currentImage" not in st and "replicationLagBytes" not in st
    assert bg_status.current_image(None) is None


def test_group_status_without_broker_answers_has_no_lag(defaulted):
    pods = [PodView(0, "g-0", "a0", True, None), PodView(1, "g-1", "a1", True, None)]
    st = bg_status.status(_group(defaulted), {"status": {"replicas": 2}}, pods, lag_limit=5)
    assert "registered" not in st["master"] and "lagBytes" not in st["slaves"][0]
    assert "replicationLagBytes" not in st


def test_group_ready_condition(defaulted):
    group = _group(defaulted, slaves=1)
    ready = bg_status.ready_condition(group, {"status": {"readyReplicas": 2}})
    assert (ready.status, ready.message) == (cond.TRUE, "master and 1 slave(s) ready")
    waiting = bg_status.ready_condition(group, {"status": {"readyReplicas": 1}})
    assert (waiting.status, waiting.reason) == (cond.FALSE, cond.REASON_WAITING)
    assert "1/2 broker pods ready" in waiting.message and "kubectl describe pod g-0" in waiting.message


def test_scale_and_rollout_conditions():
    blocked = bg_status.scale_condition(bg.ScaleDecision(3, True, "wait"))
    assert (blocked.type, blocked.status, blocked.reason) == (cond.SCALE_BLOCKED, cond.TRUE, cond.REASON_SCALE_BLOCKED)
    free = bg_status.scale_condition(bg.ScaleDecision(2, False, ""))
    assert (free.status, free.reason) == (cond.FALSE, "NotBlocked")
    rolling = bg_status.rollout_condition(bg.Rollout(1, True, cond.REASON_ROLLING, "slaves first"))
    assert (rolling.type, rolling.status, rolling.reason, rolling.message) == (
        cond.ROLLING_UPDATE,
        cond.TRUE,
        cond.REASON_ROLLING,
        "slaves first",
    )
    assert bg_status.rollout_condition(bg.Rollout(0, False, "Idle", "")).status == cond.FALSE


def test_reconciled_condition_names_the_first_reason_and_every_message():
    ok = bg_status.reconciled_condition([])
    assert (ok.type, ok.status, ok.reason) == ("Reconciled", cond.TRUE, "ReconcileSucceeded")
    bad = bg_status.reconciled_condition([("A", "first"), ("B", "second")])
    assert (bad.status, bad.reason, bad.message) == (cond.FALSE, "A", "first; second")


# --- Topic ------------------------------------------------------------------------------------------


def _broker(name: str) -> dict:
    return make_body("BrokerGroup", name, {"brokerName": f"broker-{name}"})


def test_placement_entries():
    want = TopicConfig("t", 8, 8, 6)
    applied = topic_status.held_entry(_broker("a"), TopicConfig("t", 8, 4, 6), Action("none", "in sync"))
    assert applied == {
        "brokerGroup": "a",
        "brokerName": "broker-a",
        "readQueues": 8,
        "writeQueues": 4,
        "perm": 6,
        "messageType": "NORMAL",
        "state": "Applied",
    }
    refused = topic_status.held_entry(_broker("a"), want, Action("refuse", "would shrink"))
    assert (refused["state"], refused["message"]) == ("Refused", "would shrink")
    assert topic_status.unavailable_entry(_broker("a"), "down") == {
        "brokerGroup": "a",
        "brokerName": "broker-a",
        "state": "Unavailable",
        "message": "down",
    }
    assert topic_status.rejected_entry(_broker("a"), "no")["state"] == "Rejected"
    assert topic_status.total_queues([applied, refused, topic_status.rejected_entry(_broker("b"), "x")]) == 12


def test_topic_ready_condition_worst_state_wins():
    applied = {"brokerName": "a", "state": "Applied"}
    down = {"brokerName": "b", "state": "Unavailable", "message": "m"}
    refused = {"brokerName": "c", "state": "Refused", "message": "shrink"}
    rejected = {"brokerName": "d", "state": "Rejected", "message": "bad"}
    ready = topic_status.ready_condition("T", [applied, applied])
    assert (ready.status, ready.reason, ready.message) == (
        cond.TRUE,
        cond.REASON_IN_SYNC,
        "T in sync on 2 broker group(s)",
    )
    unreachable = topic_status.ready_condition("T", [applied, refused, down])
    assert (unreachable.reason, unreachable.status) == (cond.REASON_BROKER_UNAVAILABLE, cond.FALSE)
    assert "cannot reach the master of b" in unreachable.message
    shrink = topic_status.ready_condition("T", [applied, rejected, refused])
    assert (shrink.reason, shrink.message) == (cond.REASON_NOT_SUPPORTED, "shrink")
    broken = topic_status.ready_condition("T", [rejected, {**rejected, "message": "worse"}])
    assert (broken.reason, broken.message) == ("BrokerRejected", "bad; worse")


def test_topic_conflict_and_no_groups_conditions():
    conflict = topic_status.conflict_condition("T", "mq", make_body("Topic", "older", {}))
    assert (conflict.reason, conflict.message) == (
        cond.REASON_CONFLICT,
        "topic 'T' is already managed by Topic mq/older; delete one of them",
    )
    none = topic_status.no_groups_condition()
    assert (none.status, none.reason) == (cond.FALSE, cond.REASON_NO_BROKER_GROUPS)
    assert "spec.placement" in none.message
