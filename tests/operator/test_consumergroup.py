"""ConsumerGroup against kmock's emulator with FakeBrokers: the subscription group on every selected master,
the lag read from the brokers, a Deployment scaled through its scale subresource (up, then down after the
window), events and status; unreachable brokers keep the replicas; deletion removes the group. Namespace cg:
the operator's metrics registry is process-wide, and other tests look for readiness series of mq resources."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from krocket.operator import autoscale
from krocket.operator import conditions as cond
from krocket.operator import status_consumergroup as cgs
from krocket.operator.kube import DEPLOYMENTS, Credentials, KubeClient

from tests.operator.api import CGS, G, bg_body, create, patch, path, post
from tests.operator.bodies import make_body
from tests.operator.crdschema import apply_defaults, cel_rules, load_crds, validate_cr, version_schema
from tests.operator.kopf_harness import (
    FAST,
    FakeBrokers,
    StampingEmulator,
    condition,
    event_reasons,
    get,
    running_operator,
    wait_for,
)

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

DEPLOYS = "apps/v1/deployments"
INTERVAL = 0.3
CONFIG = dataclasses.replace(FAST, autoscale_interval=INTERVAL)
MASTER_A, MASTER_B, MASTER_C = "fake://cg/broker-a/0", "fake://cg/broker-b/0", "fake://cg/broker-c/0"


async def brokergroup(k, name: str, cluster: str) -> None:
    await create(k, "brokergroups", "cg", bg_body(name, cluster=cluster))


async def deployment(k, name: str = "consumer", replicas: int = 1) -> None:
    await post(k, "/apis/apps/v1/namespaces/cg/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}}})  # fmt: skip


def cg_body(name: str = "orders", autoscaling: dict | None = None, **spec) -> dict:
    body = {"clusterName": "c1", "topics": [{"topic": "Orders"}], "retryMaxTimes": 5, "consumeMessageOrderly": True,
            "deletionPolicy": "Delete", **spec}  # fmt: skip
    if autoscaling is not None:
        body["autoscaling"] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer"},
                               **autoscaling}  # fmt: skip
    return {"apiVersion": G, "kind": "ConsumerGroup", "metadata": {"name": name}, "spec": body}


def set_lag(brokers: FakeBrokers, url: str, group: str, *lags: int) -> None:
    """The group's offsets on one master: one row per queue of Orders with the given lag."""
    rows = [{"topic": "Orders", "queueId": q, "brokerOffset": 100 + lag, "consumerOffset": 100, "lag": lag}
            for q, lag in enumerate(lags)]  # fmt: skip
    with brokers.lock:
        brokers.offsets.setdefault(url, {})[group] = {"group": group, "clients": [], "offsets": rows}


async def patch_cg(k, body: dict, name: str = "orders") -> None:
    await patch(k, path("consumergroups", "cg", name), body)


def with_topic(brokers: FakeBrokers, url: str, queues: int) -> None:
    with brokers.lock:
        brokers.topics.setdefault(url, {})["Orders"] = {"topicName": "Orders", "readQueueNums": queues,
                                                        "writeQueueNums": queues, "perm": 6}  # fmt: skip


def consumergroup_events(k) -> list[dict]:
    posted = [r.data for r in k[k.resource("v1/events"), "post"] if isinstance(r.data, dict)]
    return [e for e in posted if (e.get("involvedObject") or {}).get("kind") == "ConsumerGroup"]


def replicas(k) -> int:
    return int(get(k, DEPLOYS, "cg", "consumer")["spec"]["replicas"])


def status(k, name: str = "orders") -> dict:
    return (get(k, CGS, "cg", name) or {}).get("status") or {}


async def test_group_applied_on_every_selected_master_and_deleted_with_the_resource(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers, config=CONFIG):
        await brokergroup(k8s, "broker-a", "c1")
        await brokergroup(k8s, "broker-b", "c1")
        await brokergroup(k8s, "broker-c", "c2")  # another cluster: not selected
        await post(k8s, f"/apis/{G}/namespaces/cg/consumergroups", cg_body(groupName="orders-consumer"))

        await wait_for(lambda: condition(get(k8s, CGS, "cg", "orders"))["status"] == "True", what="Ready")
        for url in (MASTER_A, MASTER_B):
            held = brokers.groups[url]["orders-consumer"]
            assert held["groupName"] == "orders-consumer"
            assert (held["retryMaxTimes"], held["consumeMessageOrderly"], held["retryQueueNums"]) == (5, True, 1)
        assert MASTER_C not in brokers.groups
        st = status(k8s)
        assert st["groupName"] == "orders-consumer"
        assert [(b["brokerGroup"], b["state"]) for b in st["brokers"]] == [
            ("broker-a", "Applied"),
            ("broker-b", "Applied"),
        ]
        assert condition(get(k8s, CGS, "cg", "orders"), cgs.SCALING_ACTIVE) is None  # not autoscaled
        await wait_for(lambda: event_reasons(k8s, "cg").count("GroupApplied") == 2, what="2 GroupApplied events")

        # drift: the group removed from a broker out of band is written again by the timer (resync interval)
        with brokers.lock:
            del brokers.groups[MASTER_A]["orders-consumer"]
        await wait_for(lambda: "orders-consumer" in brokers.groups[MASTER_A], timeout=10, what="group re-applied")

        await k8s.delete(f"/apis/{G}/namespaces/cg/consumergroups/orders")
        await wait_for(lambda: get(k8s, CGS, "cg", "orders") is None, what="ConsumerGroup gone")
        assert all("orders-consumer" not in brokers.groups[url] for url in (MASTER_A, MASTER_B))
        await wait_for(lambda: event_reasons(k8s, "cg").count("GroupDeleted") == 2, what="2 GroupDeleted events")


async def test_replicas_follow_the_lag_up_to_the_queue_count_and_down_after_the_window(k8s):
    brokers = FakeBrokers()
    window = 3.0
    with_topic(brokers, MASTER_A, 4)
    with_topic(brokers, MASTER_B, 4)  # 8 queues of Orders in all
    set_lag(brokers, MASTER_A, "orders", 10, 5)
    set_lag(brokers, MASTER_B, "orders", 10, 10)  # 35 messages
    async with running_operator(k8s, admin=brokers, config=CONFIG):
        await brokergroup(k8s, "broker-a", "c1")
        await brokergroup(k8s, "broker-b", "c1")
        await deployment(k8s, replicas=1)
        policy = {"minReplicas": 1, "maxReplicas": 20, "lagPerReplica": 10, "scaleDownStabilizationSeconds": window}
        await post(k8s, f"/apis/{G}/namespaces/cg/consumergroups", cg_body(autoscaling=policy))

        await wait_for(lambda: replicas(k8s) == 4, what="scaled up to ceil(35/10)")
        st = await wait_for(lambda: (s := status(k8s)).get("currentReplicas") == 4 and s, what="status caught up")
        assert st["lag"] == {"total": 35, "topics": [{"topic": "Orders", "lag": 35, "queues": 8},
                                                     {"topic": "%RETRY%orders", "lag": 0}]}  # fmt: skip
        assert (st["desiredReplicas"], st["queues"]) == (4, 8) and st["lastScaleTime"]
        active = condition(get(k8s, CGS, "cg", "orders"), cgs.SCALING_ACTIVE)
        assert (active["status"], active["reason"]) == ("True", cgs.REASON_VALID_LAG)
        assert condition(get(k8s, CGS, "cg", "orders"))["status"] == "True"

        # a bigger backlog: capped at the 8 queues, not maxReplicas 20
        set_lag(brokers, MASTER_A, "orders", 500, 500)
        await wait_for(lambda: replicas(k8s) == 8, what="scaled up to the queue count")
        limited = await wait_for(
            lambda: (c := condition(get(k8s, CGS, "cg", "orders"), cgs.SCALING_LIMITED))["status"] == "True" and c,
            what="ScalingLimited",
        )
        assert limited["reason"] == autoscale.TOO_FEW_QUEUES

        # the backlog is consumed: held for the window, then minReplicas
        set_lag(brokers, MASTER_A, "orders", 0, 0)
        set_lag(brokers, MASTER_B, "orders", 0, 0)
        await wait_for(lambda: replicas(k8s) == 1, timeout=window + 10, what="scaled down to minReplicas")
        history = [v.raw.get("status") or {} for v in k8s.objects[k8s.resource(CGS), "cg", "orders"].history]
        assert any("scale-down window" in (s.get("lastDecision") or "") and s.get("desiredReplicas") == 8
                   for s in history), "a decision held the replicas for the window"  # fmt: skip

        await wait_for(lambda: event_reasons(k8s, "cg").count("ScaledDown") == 1, what="a ScaledDown event")
        assert event_reasons(k8s, "cg").count("ScaledUp") == 2
        down = [r.data for r in k8s[k8s.resource("v1/events"), "post"] if r.data.get("reason") == "ScaledDown"]
        assert "Deployment/consumer" in down[0]["message"] and "lag 0" in down[0]["message"]
        assert "8 -> 1" in down[0]["message"]

        # steady: no more scale patches and no more events
        await wait_for(lambda: status(k8s).get("currentReplicas") == 1, what="status at 1")
        scale_patches = list(k8s[k8s.resource(DEPLOYS), "patch"])
        assert [(r.subresource, r.data["spec"]) for r in scale_patches] == [
            ("scale", {"replicas": n}) for n in (4, 8, 1)
        ], "every change through the scale subresource, one PATCH each"
        patches = len(scale_patches)
        events = len(consumergroup_events(k8s))
        steady_since = time.monotonic()
        await wait_for(lambda: time.monotonic() - steady_since > 5 * INTERVAL, what="a few ticks")
        assert len(k8s[k8s.resource(DEPLOYS), "patch"]) == patches and len(consumergroup_events(k8s)) == events


async def test_unreachable_broker_keeps_the_replicas_and_says_so(k8s):
    brokers = FakeBrokers()
    with_topic(brokers, MASTER_A, 8)
    set_lag(brokers, MASTER_A, "orders", 30)
    async with running_operator(k8s, admin=brokers, config=CONFIG):
        await brokergroup(k8s, "broker-a", "c1")
        await deployment(k8s, replicas=1)
        await post(k8s, f"/apis/{G}/namespaces/cg/consumergroups", cg_body(autoscaling={
            "maxReplicas": 8, "lagPerReplica": 10, "scaleDownStabilizationSeconds": 0}))  # fmt: skip
        await wait_for(lambda: replicas(k8s) == 3, what="scaled to 3")

        brokers.down.add(MASTER_A)
        set_lag(brokers, MASTER_A, "orders", 0)  # would scale down at once (window 0) if it were read
        active = await wait_for(
            lambda: (c := condition(get(k8s, CGS, "cg", "orders"), cgs.SCALING_ACTIVE))["status"] == "False" and c,
            what="ScalingActive=False",
        )
        assert (
            active["reason"] == cond.REASON_BROKER_UNAVAILABLE
            and "keeping Deployment/consumer at 3" in active["message"]
        )
        ready = condition(get(k8s, CGS, "cg", "orders"))
        assert ready["status"] == "False" and ready["reason"] == cond.REASON_BROKER_UNAVAILABLE
        ticks = len(k8s[k8s.resource(CGS), "patch"])
        await wait_for(lambda: len(k8s[k8s.resource(CGS), "patch"]) >= ticks + 3, what="more ticks while down")
        assert replicas(k8s) == 3
        assert status(k8s)["desiredReplicas"] == 3
        await wait_for(lambda: cond.REASON_BROKER_UNAVAILABLE in event_reasons(k8s, "cg"), what="a Warning event")

        brokers.down.discard(MASTER_A)
        await wait_for(lambda: replicas(k8s) == 1, what="scaled down once the lag is readable again")
        await wait_for(lambda: condition(get(k8s, CGS, "cg", "orders"))["status"] == "True", what="Ready again")


async def test_missing_target_and_bad_spec_reach_status(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers, config=CONFIG):
        await brokergroup(k8s, "broker-a", "c1")
        await post(k8s, f"/apis/{G}/namespaces/cg/consumergroups", cg_body(autoscaling={
            "maxReplicas": 4, "lagPerReplica": 10}))  # fmt: skip
        active = await wait_for(
            lambda: (c := condition(get(k8s, CGS, "cg", "orders"), cgs.SCALING_ACTIVE)) and c, what="ScalingActive"
        )
        assert active["reason"] == cgs.REASON_FAILED_GET_SCALE and "Deployment/consumer not found" in active["message"]
        assert condition(get(k8s, CGS, "cg", "orders"))["reason"] == cgs.REASON_FAILED_GET_SCALE
        assert brokers.groups[MASTER_A]["orders"]["groupName"] == "orders"  # the group itself is applied

        # minReplicas above maxReplicas (the CRD's CEL rule refuses it; the operator too)
        await post(k8s, f"/apis/{G}/namespaces/cg/consumergroups", cg_body("bad", autoscaling={
            "minReplicas": 5, "maxReplicas": 2, "lagPerReplica": 10}, groupName="bad-group"))  # fmt: skip
        ready = await wait_for(lambda: condition(get(k8s, CGS, "cg", "bad")), what="bad: Ready condition")
        assert (ready["status"], ready["reason"]) == ("False", cond.REASON_INVALID)
        assert "must not exceed maxReplicas" in ready["message"]
        assert "bad-group" not in brokers.groups.get(MASTER_A, {})


def test_status_written_by_the_operator_matches_the_crd():
    crd = load_crds()["ConsumerGroup"]
    spec = {
        "clusterName": "c1",
        "topics": [{"topic": "T"}],
        "autoscaling": {"scaleTargetRef": {"name": "consumer"}, "maxReplicas": 4, "lagPerReplica": 10},
    }
    body = apply_defaults(crd, make_body("ConsumerGroup", "orders", spec))
    target = body["spec"]["autoscaling"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer"}
    assert body["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] == 300
    assert body["spec"]["topics"] == [{"topic": "T", "expression": "*"}]
    group = make_body("BrokerGroup", "broker-a", {"clusterName": "c1"})
    decision = autoscale.decide(current=1, lag=35, queues=8, history=[], now=1_700_000_000.0,
                                policy=autoscale.Policy.from_spec(body["spec"]["autoscaling"]))  # fmt: skip
    status = {
        "groupName": "orders",
        "brokers": [cgs.applied_entry(group), cgs.unavailable_entry(group, "down")],
        "lastSyncTime": "2023-11-14T22:13:20Z",
        "lag": cgs.lag_status({"T": 35, "%RETRY%orders": 0}, {"T": 8}),
        "queues": 8,
        "currentReplicas": 1,
        "desiredReplicas": decision.desired,
        "lastScaleTime": "2023-11-14T22:13:20Z",
        "lastDecision": decision.message,
        "recommendations": cgs.history_to_status(decision.history),
    }
    conditions = [
        cgs.ready_condition("orders", status["brokers"], None),
        cgs.scaling_active(cond.TRUE, cgs.REASON_VALID_LAG, "ok"),
        cgs.scaling_limited(decision.bounded),
    ]
    full = {**body, "status": cond.status_with_conditions(body, status, conditions)}
    assert validate_cr(crd, full) == []


def test_chart_rbac_grants_consumergroups_and_only_the_scale_subresource():
    pytest.importorskip("helm_python", reason="helm-python-sdk not installed; chart not rendered")
    from tests.operator.test_chart import render

    for values in ({}, {"watch": {"allNamespaces": False}}):
        rules = [r for d in render(values) if d["kind"] in ("Role", "ClusterRole") for r in d.get("rules", [])]
        granted = {(g, res): set(r["verbs"]) for r in rules for g in r["apiGroups"] for res in r["resources"]}
        assert granted[("krocket.io", "consumergroups")] >= {"get", "list", "watch", "patch"}
        assert granted[("krocket.io", "consumergroups/status")] == {"get", "patch"}
        assert granted[("apps", "deployments/scale")] == {"get", "patch"}
        assert ("apps", "deployments") not in granted, "the operator touches consumers' Deployments only via /scale"


def test_autoscale_interval_from_the_environment():
    from krocket.operator.main import config_from_env

    assert config_from_env({"KROCKET_OPERATOR_AUTOSCALE_SECONDS": "5"}).autoscale_interval == 5.0
    assert config_from_env({}).autoscale_interval == 15.0
    assert config_from_env({"KROCKET_OPERATOR_DRAIN_DEADLINE_SECONDS": "120"}).drain_deadline == 120.0


async def test_scale_target_kinds_from_discovery_and_the_scale_subresource(k8s):
    """A scaleTargetRef of any kind with a scale subresource is found through discovery; the emulator's
    /scale reads and writes only spec.replicas, as an API server does."""
    kube = KubeClient(Credentials(server=str(k8s.url).rstrip("/")))
    try:
        assert await kube.scalable_kind("apps/v1", "Deployment") == DEPLOYMENTS
        custom = await kube.scalable_kind(G, "NameServerSet")  # declared with a scale subresource
        assert custom is not None and (custom.plural, custom.api_version) == ("nameserversets", G)
        assert await kube.scalable_kind(G, "Topic") is None  # no scale subresource
        await deployment(k8s, replicas=2)
        scale = await kube.get_scale(DEPLOYMENTS, "cg", "consumer")
        assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 2)
        await kube.set_scale(DEPLOYMENTS, "cg", "consumer", 5)
        deploy = get(k8s, DEPLOYS, "cg", "consumer")
        assert deploy["spec"]["replicas"] == 5 and deploy["spec"]["selector"] == {"matchLabels": {"app": "consumer"}}
        assert await kube.get_scale(DEPLOYMENTS, "cg", "missing") is None
    finally:
        await kube.close()


class SlowBrokers(FakeBrokers):
    """Reading a group's offsets takes a while; counts how many reads of one group overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most_in_flight = 0

    async def group_offsets(self, url: str, group: str):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.4)
            return await super().group_offsets(url, group)
        finally:
            self.in_flight -= 1


async def test_change_handlers_and_the_timer_never_reconcile_one_group_at_once(k8s):
    """kopf runs the create/update handlers and the timer concurrently: without one run at a time per group
    both would read the same replicas and scale (and post ScaledUp) twice, and overlap their broker reads."""
    brokers = SlowBrokers()
    with_topic(brokers, MASTER_A, 8)
    set_lag(brokers, MASTER_A, "orders", 40)
    async with running_operator(k8s, admin=brokers, config=CONFIG):
        await brokergroup(k8s, "broker-a", "c1")
        await deployment(k8s, replicas=1)
        await post(k8s, f"/apis/{G}/namespaces/cg/consumergroups", cg_body(autoscaling={
            "maxReplicas": 8, "lagPerReplica": 10}))  # fmt: skip
        await wait_for(lambda: replicas(k8s) == 4, what="scaled to 4")
        for n in (6, 7, 8):  # spec changes: update handlers while the timer ticks
            await patch_cg(k8s, {"spec": {"retryMaxTimes": n}})
        await wait_for(lambda: brokers.groups[MASTER_A]["orders"]["retryMaxTimes"] == 8, what="last update applied")
        await wait_for(lambda: len(consumergroup_events(k8s)) >= 2, what="events posted")
        assert brokers.most_in_flight == 1
        assert [r.data["spec"]["replicas"] for r in k8s[k8s.resource(DEPLOYS), "patch"]] == [4]
        assert [e["reason"] for e in consumergroup_events(k8s)].count("ScaledUp") == 1


def test_crd_guards_the_group_name_and_the_replica_bounds():
    rules = cel_rules(version_schema(load_crds()["ConsumerGroup"]))
    assert ("spec.groupName", "self == oldSelf") in rules
    assert ("spec.autoscaling", "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas") in rules
    crd = load_crds()["ConsumerGroup"]
    bad = make_body("ConsumerGroup", "g", {"clusterName": "c", "topics": [], "groupName": "%RETRY%x"})
    errors = validate_cr(crd, bad)
    assert any("spec.topics" in e for e in errors) and any("spec.groupName" in e for e in errors)
