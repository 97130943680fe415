"""kopf against kmock's emulator: children, updates, status, finalizers, isolation between clusters."""

from __future__ import annotations

import pytest

from tests.operator import api
from tests.operator.api import BGS, NSS, STS, TOPICS, G, create, delete_and_wait, nss_body, patch, topic_body
from tests.operator.kopf_harness import (
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

NAMESRV = {"name": "namesrv"}


def bg_body(name, cluster="c1", slaves=1, **spec):
    spec = {"image": "krocket/broker:0.1.0", "storage": {"size": "10Gi", "ephemeral": False}, **spec}
    return api.bg_body(name, ref=NAMESRV, cluster=cluster, slaves=slaves, metadata={"labels": {"tier": "gold"}}, **spec)


async def test_nameserverset_children_status_and_update(k8s):
    async with running_operator(k8s):
        await create(k8s, "nameserversets", "mq", nss_body())
        await wait_for(lambda: get(k8s, "policy/v1/poddisruptionbudgets", "mq", "namesrv"), what="all children")
        sts = get(k8s, STS, "mq", "namesrv")
        assert sts["spec"]["replicas"] == 2
        assert sts["metadata"]["ownerReferences"][0]["kind"] == "NameServerSet"
        assert get(k8s, "v1/services", "mq", "namesrv-headless")["spec"]["clusterIP"] == "None"
        assert get(k8s, "v1/services", "mq", "namesrv") is not None
        assert get(k8s, "policy/v1/poddisruptionbudgets", "mq", "namesrv") is not None
        nss = await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv")) and get(k8s, NSS, "mq", "namesrv"))
        assert nss["status"]["address"] == "namesrv-headless.mq.svc:9876"
        assert condition(nss)["status"] == "False" and condition(nss)["reason"] == "WaitingForReplicas"

        # the StatefulSet controller would report ready pods: the NameServerSet turns Ready
        await patch(
            k8s,
            "/apis/apps/v1/namespaces/mq/statefulsets/namesrv/status",
            {"status": {"replicas": 2, "readyReplicas": 2}},
        )
        await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv"))["status"] == "True", what="Ready=True")
        assert get(k8s, NSS, "mq", "namesrv")["status"]["readyReplicas"] == 2

        # spec change: scale and new image
        await patch(
            k8s,
            f"/apis/{G}/namespaces/mq/nameserversets/namesrv",
            {"spec": {"replicas": 3, "image": "krocket/namesrv:0.2.0"}},
        )
        sts = await wait_for(
            lambda: (s := get(k8s, STS, "mq", "namesrv"))["spec"]["replicas"] == 3 and s, what="scaled sts"
        )
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "krocket/namesrv:0.2.0"
        await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv"))["status"] == "False", what="Ready=False")
        assert get(k8s, NSS, "mq", "namesrv")["status"]["observedGeneration"] == 2


async def test_brokergroup_children_rolling_update_and_status(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "nameserversets", "mq", nss_body())
        await create(k8s, "brokergroups", "mq", bg_body("broker-a", slaves=2))
        await wait_for(lambda: get(k8s, "policy/v1/poddisruptionbudgets", "mq", "broker-a"), what="all children")
        sts = get(k8s, STS, "mq", "broker-a")
        assert sts["spec"]["replicas"] == 3
        assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 0
        config = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        cm_name = config["configMap"]["name"]  # one ConfigMap per config revision
        cm = get(k8s, "v1/configmaps", "mq", cm_name)
        assert "brokerName: broker-a" in cm["data"]["broker.yaml"]
        assert "namesrvAddr: namesrv-headless.mq.svc:9876" in cm["data"]["broker.yaml"]
        assert get(k8s, "v1/services", "mq", "broker-a-headless") is not None
        assert get(k8s, "policy/v1/poddisruptionbudgets", "mq", "broker-a")["spec"]["maxUnavailable"] == 1
        group = await wait_for(
            lambda: condition(get(k8s, BGS, "mq", "broker-a"), "Reconciled") and get(k8s, BGS, "mq", "broker-a")
        )
        assert condition(group, "Reconciled")["status"] == "True"
        assert condition(group)["status"] == "False"
        assert group["status"]["master"]["pod"] == "broker-a-0"

        # pods become ready, and the brokers report offsets: slaves in sync
        brokers.info["fake://mq/broker-a/0"] = {"registered": True, "maxPhyOffset": 5000}
        brokers.info["fake://mq/broker-a/1"] = {"registered": True, "maxPhyOffset": 5000}
        brokers.info["fake://mq/broker-a/2"] = {"registered": True, "maxPhyOffset": 4000}
        await patch(
            k8s,
            "/apis/apps/v1/namespaces/mq/statefulsets/broker-a/status",
            {
                "status": {
                    "replicas": 3,
                    "readyReplicas": 3,
                    "updatedReplicas": 3,
                    "currentRevision": "r1",
                    "updateRevision": "r1",
                }
            },
        )
        group = await wait_for(
            lambda: (
                (g := get(k8s, BGS, "mq", "broker-a"))
                and condition(g)["status"] == "True"
                and g["status"].get("replicationLagBytes") == 1000
                and g
            ),
            what="group Ready",
        )
        assert group["status"]["registered"] is True
        assert group["status"]["replicationLagBytes"] == 1000
        assert [s["pod"] for s in group["status"]["slaves"]] == ["broker-a-1", "broker-a-2"]

        # image bump: slaves roll first (partition 1), the master is held
        await patch(k8s, f"/apis/{G}/namespaces/mq/brokergroups/broker-a", {"spec": {"image": "krocket/broker:0.2.0"}})
        sts = await wait_for(
            lambda: (
                (s := get(k8s, STS, "mq", "broker-a"))["spec"]["template"]["spec"]["containers"][0]["image"]
                == "krocket/broker:0.2.0"
                and s
            ),
            what="new image",
        )
        assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 1
        await wait_for(lambda: "RollingUpdate" in event_reasons(k8s, "mq"), what="event RollingUpdate")
        # slaves updated and ready, but no slave in sync yet (lag too big): master still held
        brokers.info["fake://mq/broker-a/1"] = {"registered": True, "maxPhyOffset": 0}
        brokers.info["fake://mq/broker-a/2"] = {"registered": True, "maxPhyOffset": 0}
        brokers.info["fake://mq/broker-a/0"] = {"registered": True, "maxPhyOffset": 10 * 1024 * 1024}
        await patch(
            k8s,
            "/apis/apps/v1/namespaces/mq/statefulsets/broker-a/status",
            {
                "status": {
                    "updatedReplicas": 2,
                    "readyReplicas": 3,
                    "updateRevision": "r2",
                    "observedGeneration": get(k8s, STS, "mq", "broker-a")["metadata"]["generation"],
                }
            },
        )
        await wait_for(
            lambda: condition(get(k8s, BGS, "mq", "broker-a"), "RollingUpdate")["reason"] == "WaitingForSlaveInSync",
            what="waiting for slave sync",
        )
        assert get(k8s, STS, "mq", "broker-a")["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 1
        # a slave catches up: the operator releases the master (partition 0)
        brokers.info["fake://mq/broker-a/1"] = {"registered": True, "maxPhyOffset": 10 * 1024 * 1024}
        await wait_for(
            lambda: get(k8s, STS, "mq", "broker-a")["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 0,
            what="master released",
        )
        await patch(
            k8s,
            "/apis/apps/v1/namespaces/mq/statefulsets/broker-a/status",
            {"status": {"updatedReplicas": 3, "currentRevision": "r2"}},
        )
        await wait_for(
            lambda: condition(get(k8s, BGS, "mq", "broker-a"), "RollingUpdate")["status"] == "False",
            what="roll finished",
        )


async def test_brokergroup_scale_down_and_storage_guards(k8s):
    brokers = FakeBrokers()
    brokers.down.add("fake://mq/broker-a/0")  # master not reachable, no pods: master not ready
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "nameserversets", "mq", nss_body())
        await create(k8s, "brokergroups", "mq", bg_body("broker-a", slaves=2))
        await wait_for(lambda: get(k8s, STS, "mq", "broker-a"), what="sts")

        await patch(k8s, f"/apis/{G}/namespaces/mq/brokergroups/broker-a", {"spec": {"slaves": 1}})
        blocked = await wait_for(
            lambda: (c := condition(get(k8s, BGS, "mq", "broker-a"), "ScaleBlocked")) and c["status"] == "True" and c,
            what="ScaleBlocked",
        )
        assert "krocket.io/skip-drain-check" in blocked["message"]
        assert get(k8s, STS, "mq", "broker-a")["spec"]["replicas"] == 3
        await wait_for(lambda: "ScaleDownBlocked" in event_reasons(k8s, "mq"), what="event ScaleDownBlocked")
        # the master comes back: the slave is removed (highest ordinal, by the StatefulSet controller)
        brokers.down.clear()
        await wait_for(lambda: get(k8s, STS, "mq", "broker-a")["spec"]["replicas"] == 2, what="scaled down")

        # storage may only grow: a shrink is refused with a condition and an event; growth expands PVCs
        await k8s.post(
            "/api/v1/namespaces/mq/persistentvolumeclaims",
            json={
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data-broker-a-0"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
            },
        )
        await patch(k8s, f"/apis/{G}/namespaces/mq/brokergroups/broker-a", {"spec": {"storage": {"size": "5Gi"}}})
        refused = await wait_for(
            lambda: (c := condition(get(k8s, BGS, "mq", "broker-a"), "Reconciled")) and c["status"] == "False" and c,
            what="storage refusal",
        )
        assert refused["reason"] == "NotSupported" and "cannot shrink" in refused["message"]
        await wait_for(lambda: "StorageChangeRefused" in event_reasons(k8s, "mq"), what="event StorageChangeRefused")
        await patch(k8s, f"/apis/{G}/namespaces/mq/brokergroups/broker-a", {"spec": {"storage": {"size": "20Gi"}}})
        await wait_for(
            lambda: (
                get(k8s, "v1/persistentvolumeclaims", "mq", "data-broker-a-0")["spec"]["resources"]["requests"][
                    "storage"
                ]
                == "20Gi"
            ),
            what="PVC expanded",
        )
        sts = get(k8s, STS, "mq", "broker-a")
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi", (
            "volumeClaimTemplates are immutable: never patched"
        )


async def test_topic_placement_drift_shrink_and_finalizer(k8s):
    brokers = FakeBrokers()
    a0, b0 = "fake://mq/broker-a/0", "fake://mq/broker-b/0"
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "nameserversets", "mq", nss_body())
        await create(k8s, "brokergroups", "mq", bg_body("broker-a"))
        await create(k8s, "brokergroups", "mq", bg_body("broker-b"))
        await create(k8s, "brokergroups", "mq", bg_body("broker-x", cluster="other"))
        await create(k8s, "topics", "mq", topic_body("orders", topicName="Orders"))

        t = await wait_for(
            lambda: (t := get(k8s, TOPICS, "mq", "orders")) and condition(t) and condition(t)["status"] == "True" and t,
            what="topic Ready",
        )
        assert brokers.topics[a0]["Orders"]["readQueueNums"] == 4 and "Orders" in brokers.topics[b0]
        assert "fake://mq/broker-x/0" not in brokers.topics
        assert [p["brokerName"] for p in t["status"]["placement"]] == ["broker-a", "broker-b"]
        assert t["status"]["topicName"] == "Orders" and t["status"]["queues"] == 8
        assert "krocket.io/finalizer" in t["metadata"]["finalizers"]
        await wait_for(lambda: "TopicCreated" in event_reasons(k8s, "mq"), what="event TopicCreated")

        # drift: deleted out of band on one broker, queues lowered on the other -> repaired by the timer
        await brokers.delete_topic(a0, "Orders")
        brokers.topics[b0]["Orders"]["writeQueueNums"] = 2
        await wait_for(
            lambda: "Orders" in brokers.topics[a0] and brokers.topics[b0]["Orders"]["writeQueueNums"] == 4,
            what="drift repaired",
        )

        # growing is applied; shrinking is refused without the annotation
        await patch(k8s, f"/apis/{G}/namespaces/mq/topics/orders", {"spec": {"readQueues": 8, "writeQueues": 8}})
        await wait_for(lambda: brokers.topics[a0]["Orders"]["readQueueNums"] == 8, what="queues grown")
        await patch(k8s, f"/apis/{G}/namespaces/mq/topics/orders", {"spec": {"readQueues": 2, "writeQueues": 2}})
        refused = await wait_for(
            lambda: (c := condition(get(k8s, TOPICS, "mq", "orders")))["reason"] == "NotSupported" and c,
            what="shrink refused",
        )
        assert "krocket.io/allow-queue-shrink" in refused["message"]
        assert brokers.topics[a0]["Orders"]["readQueueNums"] == 8
        await wait_for(lambda: "QueueShrinkRefused" in event_reasons(k8s, "mq"), what="event QueueShrinkRefused")
        await patch(
            k8s,
            f"/apis/{G}/namespaces/mq/topics/orders",
            {"metadata": {"annotations": {"krocket.io/allow-queue-shrink": "true"}}},
        )
        await wait_for(lambda: brokers.topics[a0]["Orders"]["readQueueNums"] == 2, what="shrink allowed")

        # a group that is down gives a condition, then recovers
        brokers.down.add(b0)
        await patch(k8s, f"/apis/{G}/namespaces/mq/topics/orders", {"spec": {"perm": 4}})
        down = await wait_for(
            lambda: (
                (c := condition(get(k8s, TOPICS, "mq", "orders")))["reason"] == "BrokerUnavailable"
                and brokers.topics[a0]["Orders"]["perm"] == 4
                and c
            ),
            what="BrokerUnavailable",
        )
        assert "broker-b" in down["message"]
        brokers.down.clear()
        await wait_for(lambda: condition(get(k8s, TOPICS, "mq", "orders"))["status"] == "True", what="recovered")
        assert brokers.topics[b0]["Orders"]["perm"] == 4

        # deletion: the finalizer removes the topic from every broker, then the resource goes away
        await delete_and_wait(
            k8s, f"/apis/{G}/namespaces/mq/topics/orders", lambda: get(k8s, TOPICS, "mq", "orders") is None, "deleted"
        )
        assert "Orders" not in brokers.topics[a0] and "Orders" not in brokers.topics[b0]


async def test_topic_retain_conflict_and_no_groups(k8s):
    brokers = FakeBrokers()
    a0 = "fake://mq/broker-a/0"
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "topics", "mq", topic_body("lonely"))
        none = await wait_for(lambda: (c := condition(get(k8s, TOPICS, "mq", "lonely"))) and c, what="no groups")
        assert none["reason"] == "NoBrokerGroupsSelected"

        await create(k8s, "nameserversets", "mq", nss_body())
        await create(k8s, "brokergroups", "mq", bg_body("broker-a"))
        await wait_for(lambda: "lonely" in brokers.topics.get(a0, {}), what="placed on a new group")

        sel = {"placement": {"brokerGroupSelector": {"matchLabels": {"tier": "gold"}}}, "deletionPolicy": "Retain"}
        await create(k8s, "topics", "mq", topic_body("keep", **sel))
        await wait_for(lambda: "keep" in brokers.topics[a0], what="keep placed")
        await create(k8s, "topics", "mq", topic_body("keep-dup", topicName="keep"))
        dup = await wait_for(lambda: (c := condition(get(k8s, TOPICS, "mq", "keep-dup"))) and c, what="conflict")
        assert dup["reason"] == "ResourceConflict" and "mq/keep" in dup["message"]

        # deleting the duplicate never deletes the topic the other resource manages
        await delete_and_wait(
            k8s, f"/apis/{G}/namespaces/mq/topics/keep-dup", lambda: get(k8s, TOPICS, "mq", "keep-dup") is None, "dup"
        )
        assert "keep" in brokers.topics[a0]
        # Retain keeps the topic on the broker
        await delete_and_wait(
            k8s, f"/apis/{G}/namespaces/mq/topics/keep", lambda: get(k8s, TOPICS, "mq", "keep") is None, "keep"
        )
        assert "keep" in brokers.topics[a0]
        await wait_for(lambda: "TopicRetained" in event_reasons(k8s, "mq"), what="event TopicRetained")


async def test_two_clusters_in_two_namespaces_do_not_interfere(k8s):
    brokers = FakeBrokers()
    # cluster-wide: kmock cannot serve kopf's namespace observer (GET /api/v1/namespaces), which kopf uses
    # for a namespace list; isolation between the two namespaces is what is under test here
    async with running_operator(k8s, admin=brokers):
        for ns in ("team-a", "team-b"):
            await create(k8s, "nameserversets", ns, nss_body())
            await create(k8s, "brokergroups", ns, bg_body("broker-a", slaves=0 if ns == "team-a" else 2))
        await create(k8s, "topics", "team-a", topic_body("orders"))
        for ns, replicas in (("team-a", 1), ("team-b", 3)):
            sts = await wait_for(lambda ns=ns: get(k8s, STS, ns, "broker-a"), what=f"sts in {ns}")
            assert sts["spec"]["replicas"] == replicas
            env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["KROCKET_NAMESRV_ADDR"] == f"namesrv-headless.{ns}.svc:9876"
            owner = get(k8s, BGS, ns, "broker-a")["metadata"]["uid"]
            assert sts["metadata"]["ownerReferences"][0]["uid"] == owner
        await wait_for(lambda: "orders" in brokers.topics.get("fake://team-a/broker-a/0", {}), what="topic in a")
        assert "fake://team-b/broker-a/0" not in brokers.topics
        # deleting one cluster's NameServerSet leaves the other alone (children are garbage-collected by owner)
        await patch(k8s, f"/apis/{G}/namespaces/team-b/nameserversets/namesrv", {"spec": {"replicas": 5}})
        await wait_for(lambda: get(k8s, STS, "team-b", "namesrv")["spec"]["replicas"] == 5, what="b scaled")
        assert get(k8s, STS, "team-a", "namesrv")["spec"]["replicas"] == 2
