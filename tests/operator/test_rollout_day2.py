"""Day-two rolls of a BrokerGroup: a broken master can be rolled, write permission around the master's restart,
pause and manual roll, config per revision, SYNC needs a slave, a fixed identity, PVCs expanded once.

Pure decisions first (rollout, identity), then kopf against kmock's emulator with FakeBrokers, where the test
plays the StatefulSet controller by patching the StatefulSet's status and the Pods.
"""

from __future__ import annotations

import datetime

import pytest

from krocket.operator import build_brokergroup as bg
from krocket.operator import identity
from krocket.operator import rollout as rl
from krocket.operator.reconcile_brokergroup import sync_needs_slave

from tests.operator.api import BGS, STS, G, bg_body, patch, post
from tests.operator.bodies import make_body
from tests.operator.crdschema import load_crds, validate_cr
from tests.operator.kopf_harness import (
    FakeBrokers,
    StampingEmulator,
    condition,
    event_reasons,
    get,
    running_operator,
    wait_for,
)

PVCS = "v1/persistentvolumeclaims"
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
URL0, URL1 = "fake://mq/broker-a/0", "fake://mq/broker-a/1"

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


# --- pure decisions ---------------------------------------------------------------------------------


def _sts(partition: int, **status: object) -> dict:
    return {"spec": {"updateStrategy": {"rollingUpdate": {"partition": partition}}}, "status": status}


HELD = _sts(1, updatedReplicas=1, readyReplicas=1, currentRevision="r1", updateRevision="r2")


def _plan(sts: dict, *, state: rl.RollState, now: datetime.datetime = NOW, **kw: object) -> rl.RollPlan:
    base = bg.rollout(replica_count=2, template_changed=False, sts=sts, slave_in_sync=False)
    args: dict = dict(
        base=base,
        sts=sts,
        template_changed=False,
        desired_hash="h2",
        master_ready=False,
        master_writable=None,
        force=False,
        deadline=600.0,
        write_grace=0.0,
        state=state,
        now=now,
    )
    args.update(kw)
    return rl.plan_roll(**args)


def test_a_not_ready_master_is_held_until_the_deadline_then_forced():
    first = _plan(HELD, state=rl.RollState())
    assert (first.partition, first.forced_now) == (1, False)
    assert first.state.master_wait_since == "2026-01-01T12:00:00Z" and first.retry_after == 600.0
    # the wait start comes back from status (an operator restart in between): the deadline still counts from it
    restored = rl.RollState.from_status({"rollout": first.state.as_status()})
    later = _plan(HELD, state=restored, now=NOW + datetime.timedelta(seconds=601))
    assert later.withdraw_write and later.forced_now, "forced: withdraw the master's write permission first"
    # the master does not answer (nothing to withdraw): it is released in the same reconcile
    later = _plan(HELD, state=restored, now=NOW + datetime.timedelta(seconds=601), master_writable=False)
    assert (later.partition, later.forced_now, later.reason) == (0, True, "ForcedMasterRoll")
    assert later.state.forced and later.state.master_wait_since == first.state.master_wait_since
    # a Ready master waiting for a slave in sync is never forced by the deadline
    ready = _plan(HELD, state=restored, now=NOW + datetime.timedelta(days=1), master_ready=True)
    assert ready.partition == 1
    # a new target revision starts a new wait
    other = _plan(HELD, state=restored, now=NOW + datetime.timedelta(seconds=601), desired_hash="h3")
    assert other.partition == 1 and other.state.master_wait_since == "2026-01-01T12:10:01Z"


def test_force_roll_releases_the_master_at_once_after_withdrawing_its_write_permission():
    plan = _plan(HELD, state=rl.RollState(), master_ready=True, master_writable=True, force=True, write_grace=5.0)
    assert plan.withdraw_write and plan.partition == 1, "write permission first, the master still held"
    assert plan.reason == "WithdrawingWritePermission" and plan.forced_now
    state = rl.after_withdrawal(plan.state, NOW)
    within = _plan(HELD, state=state, master_ready=True, master_writable=False, force=True, write_grace=5.0)
    assert (within.partition, within.withdraw_write, within.retry_after) == (1, False, 5.0)
    past = _plan(
        HELD,
        state=state,
        now=NOW + datetime.timedelta(seconds=5),
        master_ready=True,
        master_writable=False,
        force=True,
        write_grace=5.0,
    )
    assert past.partition == 0 and not past.forced_now, "the ForcedMasterRoll event is emitted once"


def test_the_normal_master_turn_also_withdraws_write_and_a_group_without_slaves_too():
    base = bg.rollout(
        replica_count=2,
        template_changed=False,
        sts=_sts(1, updatedReplicas=1, readyReplicas=2, currentRevision="r1", updateRevision="r2"),
        slave_in_sync=True,
    )
    assert base.partition == 0
    sts = _sts(1, updatedReplicas=1, readyReplicas=2, currentRevision="r1", updateRevision="r2")
    plan = _plan(sts, state=rl.RollState(), base=base, master_ready=True, master_writable=True)
    assert plan.withdraw_write and plan.partition == 1
    single = bg.rollout(replica_count=1, template_changed=True, sts=_sts(0), slave_in_sync=False)
    plan = _plan(_sts(0), state=rl.RollState(), base=single, template_changed=True, master_writable=True)
    assert plan.withdraw_write and plan.partition == 1, "a single master is held by partition 1 meanwhile"
    # already not writable (a drain withdrew it): no call, no grace
    plan = _plan(sts, state=rl.RollState(), base=base, master_ready=True, master_writable=False, write_grace=30.0)
    assert (plan.partition, plan.withdraw_write) == (0, False)


def test_write_permission_is_restored_only_when_steady_and_not_draining():
    ok = dict(rolling=False, master_ready=True, master_writable=False, draining=False, paused=False)
    assert rl.should_restore_write(**ok)
    assert not rl.should_restore_write(**{**ok, "rolling": True})
    assert not rl.should_restore_write(**{**ok, "draining": True})
    assert not rl.should_restore_write(**{**ok, "paused": True})
    assert not rl.should_restore_write(**{**ok, "master_writable": None}), "unknown: leave it"
    assert rl.writable_of({"brokerPermission": 6}) is True and rl.writable_of({"brokerPermission": 4}) is False


def test_durations_and_manual_roll_tokens():
    assert rl.parse_duration("90") == 90 and rl.parse_duration("10m") == 600 and rl.parse_duration("1h") == 3600
    with pytest.raises(ValueError):
        rl.parse_duration("soon")
    token, state = rl.restart_token(requested=True, state=rl.RollState(), live_token=None)
    assert token == "1" and state.manual_token == "1"
    again, _ = rl.restart_token(requested=True, state=state, live_token=token)
    assert again == "1", "one request, one roll"
    # a reconcile that has not seen the status yet adopts the roll another one just started
    racing, _ = rl.restart_token(requested=True, state=rl.RollState(manual_done="1"), live_token="2")
    assert racing == "2"
    nxt, _ = rl.restart_token(requested=True, state=rl.RollState(manual_done="2"), live_token="2")
    assert nxt == "3", "the next request after a finished roll is a new number"
    kept, _ = rl.restart_token(requested=False, state=rl.RollState(), live_token="2")
    assert kept == "2", "the live annotation is kept: nothing rolls on an operator restart"


def test_identity_is_fixed_once_applied():
    body = make_body("BrokerGroup", "broker-a", {"clusterName": "c1", "nameServerSetRef": {"name": "ns1"}})
    first = identity.check(body, identity.recorded(body, sts_exists=False))
    assert first.refusals == [] and first.identity["clusterName"] == "c1"
    changed = make_body("BrokerGroup", "broker-a", {"clusterName": "c2", "nameServerSetRef": {"name": "ns2"}})
    changed["status"] = {"identity": first.identity}
    check = identity.check(changed, identity.recorded(changed, sts_exists=True))
    assert len(check.refusals) == 2 and "'c1' -> 'c2'" in check.refusals[0]
    assert bg.cluster_name(check.body) == "c1" and bg.namesrv_address(check.body) == "ns1-headless.mq.svc:9876"
    # a group an older operator made: its status names are the record
    legacy = make_body("BrokerGroup", "broker-a", {"clusterName": "c2", "nameServerSetRef": {"name": "ns1"}})
    legacy["status"] = {"clusterName": "c1", "brokerName": "broker-a"}
    assert identity.check(legacy, identity.recorded(legacy, sts_exists=True)).refusals


def test_sync_replication_needs_a_slave():
    sync0 = make_body("BrokerGroup", "b", {"replicationMode": "SYNC", "slaves": 0})
    assert "SLAVE_NOT_AVAILABLE" in (sync_needs_slave(sync0) or "")
    assert sync_needs_slave(make_body("BrokerGroup", "b", {"replicationMode": "SYNC", "slaves": 1})) is None
    assert sync_needs_slave(make_body("BrokerGroup", "b", {"replicationMode": "ASYNC", "slaves": 0})) is None


# --- against the emulator ---------------------------------------------------------------------------


def _group(slaves: int = 1, annotations: dict | None = None, **spec: object) -> dict:
    spec = {"image": "krocket/broker:0.1.0", "storage": {"size": "10Gi"}, **spec}
    return bg_body(
        "broker-a",
        ref={"address": "ns.example:9876"},
        slaves=slaves,
        metadata={"annotations": annotations or {}},
        **spec,
    )


BG_PATH = f"/apis/{G}/namespaces/mq/brokergroups/broker-a"
STS_STATUS = "/apis/apps/v1/namespaces/mq/statefulsets/broker-a/status"


def _sts_live(k) -> dict:
    return get(k, STS, "mq", "broker-a")


def _partition(k) -> int:
    return _sts_live(k)["spec"]["updateStrategy"]["rollingUpdate"]["partition"]


async def _controller_reports(k, **status: object) -> None:
    """Play the StatefulSet controller: it has seen the live generation and reports these counts."""
    await patch(k, STS_STATUS, {"status": {"observedGeneration": _sts_live(k)["metadata"]["generation"], **status}})


async def _pod(k, ordinal: int, revision: str, ready: bool) -> None:
    labels = {**bg.selector_labels("broker-a", bg.COMPONENT), "controller-revision-hash": revision}
    await post(
        k,
        "/api/v1/namespaces/mq/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"broker-a-{ordinal}", "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        },
    )


async def _more_reconciles(k, count: int) -> None:
    """Wait until the operator has read the StatefulSet `count` more times (each reconcile reads it)."""
    start = len(k[k.resource(STS), "get"])
    await wait_for(lambda: len(k[k.resource(STS), "get"]) >= start + count, what=f"{count} more reconciles")


def _bg(k) -> dict:
    return get(k, BGS, "mq", "broker-a")


async def test_a_broken_master_is_rolled_after_the_deadline(k8s):
    brokers = FakeBrokers()
    brokers.down.add(URL0)  # the master does not answer
    async with running_operator(k8s, admin=brokers):
        await post(
            k8s,
            "/apis/krocket.io/v1alpha1/namespaces/mq/brokergroups",
            _group(annotations={"krocket.io/master-roll-deadline": "2s"}),
        )
        await wait_for(lambda: _sts_live(k8s), what="sts")
        await _pod(k8s, 0, "r1", ready=False)
        await _pod(k8s, 1, "r1", ready=True)
        await _controller_reports(
            k8s, replicas=2, readyReplicas=1, updatedReplicas=2, currentRevision="r1", updateRevision="r1"
        )
        # the fix: a new image. Slaves first; the slave rolls, the master is not Ready
        await patch(k8s, BG_PATH, {"spec": {"image": "krocket/broker:0.1.1"}})
        await wait_for(lambda: _sts_live(k8s)["spec"]["template"]["spec"]["containers"][0]["image"].endswith("0.1.1"))
        assert _partition(k8s) == 1
        await _controller_reports(k8s, readyReplicas=1, updatedReplicas=1, updateRevision="r2")
        await wait_for(
            lambda: (
                (b := _bg(k8s))["status"]["rollout"].get("masterWaitSince")
                and "not Ready" in condition(b, "RollingUpdate")["message"]
            ),
            what="the wait kept in status",
        )
        # past the deadline the master rolls too: partition 0, a Warning, and the stuck pod is deleted
        await wait_for(lambda: _partition(k8s) == 0, timeout=20, what="master released after the deadline")
        await wait_for(lambda: "ForcedMasterRoll" in event_reasons(k8s, "mq"), what="ForcedMasterRoll event")
        await wait_for(lambda: get(k8s, "v1/pods", "mq", "broker-a-0") is None, what="stuck master pod deleted")
        assert get(k8s, "v1/pods", "mq", "broker-a-1") is not None, "the Ready slave is left alone"
        assert _bg(k8s)["status"]["rollout"]["forced"] is True


async def test_write_permission_is_withdrawn_before_the_master_restarts_and_restored_after(k8s):
    brokers = FakeBrokers()
    for url in (URL0, URL1):
        brokers.info[url] = {"registered": True, "maxPhyOffset": 1000}
    async with running_operator(k8s, admin=brokers):
        await post(k8s, "/apis/krocket.io/v1alpha1/namespaces/mq/brokergroups", _group())
        await wait_for(lambda: _sts_live(k8s), what="sts")
        await _controller_reports(
            k8s, replicas=2, readyReplicas=2, updatedReplicas=2, currentRevision="r1", updateRevision="r1"
        )
        await wait_for(lambda: _bg(k8s)["status"]["master"].get("writable") is True, what="master writable")
        assert brokers.permission_calls == []
        await patch(k8s, BG_PATH, {"spec": {"image": "krocket/broker:0.1.1"}})
        await wait_for(lambda: _partition(k8s) == 1, what="slaves first")
        assert brokers.permission_calls == [], "slaves restart with the master still writable"
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=1, updateRevision="r2")
        await wait_for(lambda: _partition(k8s) == 0, what="master released")
        assert brokers.permission_calls[0] == (URL0, False), "write withdrawn before the partition dropped to 0"
        await wait_for(lambda: _bg(k8s)["status"]["master"].get("writable") is False, what="status shows it")
        # the new master is Ready (this broker did not come back writable by itself): write is restored
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=2, currentRevision="r2")
        await wait_for(lambda: brokers.permission_calls[-1] == (URL0, True), what="write restored")
        await wait_for(lambda: _bg(k8s)["status"]["master"].get("writable") is True, what="status writable")
        await wait_for(
            lambda: "WritePermissionRestored" in event_reasons(k8s, "mq"), what="event WritePermissionRestored"
        )
        # a drain keeps write off: nothing restores it while the annotation is "true"
        await patch(k8s, BG_PATH, {"metadata": {"annotations": {"krocket.io/drain": "true"}}})
        await _more_reconciles(k8s, 6)  # none still runs with the body from before the annotation
        seen = len(brokers.permission_calls)
        brokers.writable[URL0] = False
        await wait_for(lambda: _bg(k8s)["status"]["master"].get("writable") is False, what="not writable shown")
        await _more_reconciles(k8s, 6)
        assert (URL0, True) not in brokers.permission_calls[seen:]
        assert _bg(k8s)["status"]["master"]["writable"] is False
        assert validate_cr(load_crds()["BrokerGroup"], _bg(k8s)) == []


async def test_pause_then_a_manual_rolling_update(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await post(k8s, "/apis/krocket.io/v1alpha1/namespaces/mq/brokergroups", _group())
        await wait_for(lambda: _sts_live(k8s), what="sts")
        await _controller_reports(
            k8s, replicas=2, readyReplicas=2, updatedReplicas=2, currentRevision="r1", updateRevision="r1"
        )
        await patch(
            k8s, BG_PATH, {"metadata": {"annotations": {"krocket.io/paused": "true"}}, "spec": {"image": "x/y:2"}}
        )
        await wait_for(lambda: condition(_bg(k8s), "Paused")["status"] == "True", what="Paused condition")
        assert _sts_live(k8s)["spec"]["template"]["spec"]["containers"][0]["image"] == "krocket/broker:0.1.0"
        assert _bg(k8s)["status"]["readyReplicas"] == 2, "status is still updated"
        await patch(k8s, BG_PATH, {"metadata": {"annotations": {"krocket.io/paused": None}}})
        await wait_for(lambda: _sts_live(k8s)["spec"]["template"]["spec"]["containers"][0]["image"] == "x/y:2")
        await wait_for(lambda: condition(_bg(k8s), "Paused")["status"] == "False", what="unpaused")
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=1, updateRevision="r2")
        await wait_for(lambda: _partition(k8s) == 0, what="image roll reaches the master")
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=2, currentRevision="r2")

        # manual rolling update: a template annotation bump, slaves first, and the request annotation removed
        await patch(k8s, BG_PATH, {"metadata": {"annotations": {"krocket.io/manual-rolling-update": "true"}}})
        sts = await wait_for(
            lambda: (
                (s := _sts_live(k8s))["spec"]["template"]["metadata"]["annotations"].get("krocket.io/manual-roll") and s
            ),
            what="template bumped",
        )
        token = sts["spec"]["template"]["metadata"]["annotations"]["krocket.io/manual-roll"]
        assert _partition(k8s) == 1
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=1, updateRevision="r3")
        await wait_for(lambda: _partition(k8s) == 0, what="master's turn")
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=2, currentRevision="r3")
        await wait_for(
            lambda: "krocket.io/manual-rolling-update" not in (_bg(k8s)["metadata"].get("annotations") or {}),
            what="annotation removed",
        )
        await wait_for(
            lambda: "ManualRollingUpdateDone" in event_reasons(k8s, "mq"), what="event ManualRollingUpdateDone"
        )
        await wait_for(lambda: _bg(k8s)["status"]["rollout"].get("manualRollToken") is None, what="roll closed")
        assert _sts_live(k8s)["spec"]["template"]["metadata"]["annotations"]["krocket.io/manual-roll"] == token
        assert validate_cr(load_crds()["BrokerGroup"], _bg(k8s)) == [], "the status the operator writes fits the CRD"


async def test_config_per_revision_and_volumes_expanded_once(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await post(k8s, "/apis/krocket.io/v1alpha1/namespaces/mq/brokergroups", _group())
        await wait_for(lambda: _sts_live(k8s), what="sts")
        await _controller_reports(
            k8s, replicas=2, readyReplicas=2, updatedReplicas=2, currentRevision="r1", updateRevision="r1"
        )

        def config_map_name() -> str:
            vols = _sts_live(k8s)["spec"]["template"]["spec"]["volumes"]
            return next(v for v in vols if v["name"] == "config")["configMap"]["name"]

        old = config_map_name()
        old_text = get(k8s, "v1/configmaps", "mq", old)["data"]["broker.yaml"]
        await patch(k8s, BG_PATH, {"spec": {"brokerConfig": {"fileReservedTime": 48}}})
        await wait_for(lambda: config_map_name() != old, what="template points at a new config revision")
        new = config_map_name()
        assert "fileReservedTime: 48" in get(k8s, "v1/configmaps", "mq", new)["data"]["broker.yaml"]
        assert get(k8s, "v1/configmaps", "mq", old)["data"]["broker.yaml"] == old_text, (
            "the unrolled master still reads its own revision's config"
        )
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=1, updateRevision="r2")
        await wait_for(lambda: _partition(k8s) == 0, what="master's turn")
        assert get(k8s, "v1/configmaps", "mq", old) is not None, "kept until the roll is done"
        await _controller_reports(k8s, readyReplicas=2, updatedReplicas=2, currentRevision="r2")
        await wait_for(lambda: get(k8s, "v1/configmaps", "mq", old) is None, what="old revision deleted")
        assert get(k8s, "v1/configmaps", "mq", new) is not None

        # PVC expansion: patched once, one event, however many reconciles follow
        for i in (0, 1):
            await post(
                k8s,
                "/api/v1/namespaces/mq/persistentvolumeclaims",
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": f"data-broker-a-{i}"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
                },
            )
        await patch(k8s, BG_PATH, {"spec": {"storage": {"size": "20Gi"}}})
        for i in (0, 1):
            await wait_for(
                lambda i=i: (
                    get(k8s, PVCS, "mq", f"data-broker-a-{i}")["spec"]["resources"]["requests"]["storage"] == "20Gi"
                ),
                what="PVC expanded",
            )
        patches = len(k8s[k8s.resource(PVCS), "patch"])
        await _more_reconciles(k8s, 10)
        assert len(k8s[k8s.resource(PVCS), "patch"]) == patches == 2
        assert event_reasons(k8s, "mq").count("VolumesExpanding") == 1


async def test_sync_without_slaves_and_identity_changes_are_refused(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await post(k8s, "/apis/krocket.io/v1alpha1/namespaces/mq/brokergroups", _group(replicationMode="SYNC"))
        await wait_for(lambda: (_bg(k8s).get("status") or {}).get("identity"), what="identity recorded")
        assert _sts_live(k8s)["spec"]["replicas"] == 2
        # kubectl scale bg --replicas=0 on a SYNC group: refused, the shape stays
        await patch(k8s, BG_PATH, {"spec": {"slaves": 0}})
        refused = await wait_for(
            lambda: (c := condition(_bg(k8s), "Reconciled")) and c["reason"] == "SyncNeedsSlave" and c,
            what="SyncNeedsSlave",
        )
        assert refused["status"] == "False" and "SLAVE_NOT_AVAILABLE" in refused["message"]
        assert _sts_live(k8s)["spec"]["replicas"] == 2
        await wait_for(lambda: "SyncNeedsSlave" in event_reasons(k8s, "mq"), what="event SyncNeedsSlave")
        await patch(k8s, BG_PATH, {"spec": {"slaves": 1}})
        await wait_for(lambda: condition(_bg(k8s), "Reconciled")["status"] == "True", what="accepted again")

        # clusterName is fixed: refused, the children keep c1, and other changes still go through
        await patch(k8s, BG_PATH, {"spec": {"clusterName": "c2", "image": "krocket/broker:0.1.1"}})
        refused = await wait_for(
            lambda: (c := condition(_bg(k8s), "Reconciled")) and c["reason"] == "ImmutableFieldChanged" and c,
            what="clusterName change refused",
        )
        assert "'c1' -> 'c2'" in refused["message"]
        await wait_for(lambda: _sts_live(k8s)["spec"]["template"]["spec"]["containers"][0]["image"].endswith("0.1.1"))
        sts = _sts_live(k8s)
        assert sts["metadata"]["labels"]["krocket.io/cluster"] == "c1"
        vols = sts["spec"]["template"]["spec"]["volumes"]
        cm = get(k8s, "v1/configmaps", "mq", next(v for v in vols if v["name"] == "config")["configMap"]["name"])
        assert "brokerClusterName: c1" in cm["data"]["broker.yaml"]
        status = _bg(k8s)["status"]
        assert status["identity"]["clusterName"] == "c1" and status["clusterName"] == "c1"
        await wait_for(lambda: "ImmutableFieldRefused" in event_reasons(k8s, "mq"), what="event ImmutableFieldRefused")
