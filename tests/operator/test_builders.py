"""Pure builders: spec in, manifests out."""

from __future__ import annotations

import pytest
import yaml

from krocket.operator import build_brokergroup as bg
from krocket.operator import build_common, build_namesrv
from krocket.operator import constants as c
from krocket.operator.quantity import parse_quantity

# --- NameServerSet ----------------------------------------------------------------------------------


def test_namesrv_defaults(defaulted):
    body = defaulted("NameServerSet", "ns1", {})
    sts, headless, client, pdb = (
        build_namesrv.statefulset(body),
        build_namesrv.headless_service(body),
        build_namesrv.client_service(body),
        build_namesrv.disruption_budget(body),
    )
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["serviceName"] == "ns1-headless" == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    assert client["metadata"]["name"] == "ns1" and client["spec"]["type"] == "ClusterIP"
    sel = sts["spec"]["selector"]["matchLabels"]
    assert sel.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert headless["spec"]["selector"] == sel == pdb["spec"]["selector"]["matchLabels"]
    ctr = sts["spec"]["template"]["spec"]["containers"][0]
    assert ctr["image"] == "krocket/namesrv:0.1.0"
    assert ctr["args"] == ["namesrv", "--listen-port", "9876", "--http-port", "9877"]
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for obj in (sts, headless, client, pdb):
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "NameServerSet" and ref["uid"] == body["metadata"]["uid"] and ref["controller"]
        assert obj["metadata"]["namespace"] == "mq"
    assert pdb["spec"]["maxUnavailable"] == 1


def test_namesrv_addresses_are_headless_dns(defaulted):
    assert build_namesrv.address("ns1", "mq") == "ns1-headless.mq.svc:9876"
    assert build_namesrv.pod_addresses("ns1", "mq", 3)[2] == "ns1-2.ns1-headless.mq.svc:9876"
    assert build_namesrv.service_address("ns1", "mq") == "ns1.mq.svc:9876"
    assert build_namesrv.replicas(defaulted("NameServerSet", "ns1", {"replicas": 3})) == 3


def test_namesrv_overrides(defaulted):
    body = defaulted(
        "NameServerSet",
        "ns1",
        {
            "replicas": 3,
            "image": "reg.local/namesrv:9",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "service": {"type": "LoadBalancer", "annotations": {"a": "b"}},
            "podTemplate": {
                "metadata": {"labels": {"team": "mq", c.LABEL_INSTANCE: "hijack"}},
                "spec": {
                    "nodeSelector": {"disk": "ssd"},
                    "containers": [{"name": "namesrv", "env": [{"name": "X", "value": "1"}]}],
                },
            },
        },
    )
    sts = build_namesrv.statefulset(body)
    tpl = sts["spec"]["template"]
    assert tpl["metadata"]["labels"]["team"] == "mq"
    assert tpl["metadata"]["labels"][c.LABEL_INSTANCE] == "ns1", "selector labels cannot be overridden"
    assert tpl["spec"]["nodeSelector"] == {"disk": "ssd"}
    (ctr,) = tpl["spec"]["containers"]
    assert ctr["image"] == "reg.local/namesrv:9" and ctr["env"] == [{"name": "X", "value": "1"}]
    assert ctr["resources"]["requests"]["cpu"] == "100m"
    assert ctr["args"][0] == "namesrv", "override merges into the container, keeps the rest"
    svc = build_namesrv.client_service(body)
    assert svc["spec"]["type"] == "LoadBalancer" and svc["metadata"]["annotations"] == {"a": "b"}


def test_template_hash_changes_with_image_only(defaulted):
    a = build_namesrv.statefulset(defaulted("NameServerSet", "n", {}))
    b = build_namesrv.statefulset(defaulted("NameServerSet", "n", {"replicas": 5}))
    d = build_namesrv.statefulset(defaulted("NameServerSet", "n", {"image": "x:2"}))
    key = c.ANN_TEMPLATE_HASH
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key]
    assert a["metadata"]["annotations"][key] != d["metadata"]["annotations"][key]


def test_owner_reference_requires_uid():
    with pytest.raises(ValueError):
        build_common.owner_reference({"kind": "X", "metadata": {"name": "a"}})


def test_deep_merge_named_lists_and_scalars():
    base = {"a": [{"name": "x", "v": 1}], "b": [1, 2], "c": {"d": 1}}
    out = build_common.deep_merge(base, {"a": [{"name": "x", "w": 2}, {"name": "y"}], "b": [3], "c": {"e": 2}})
    assert out == {"a": [{"name": "x", "v": 1, "w": 2}, {"name": "y"}], "b": [3], "c": {"d": 1, "e": 2}}
    assert base["a"] == [{"name": "x", "v": 1}], "input untouched"


# --- BrokerGroup ------------------------------------------------------------------------------------

BG = {"nameServerSetRef": {"name": "ns1"}, "clusterName": "c1"}


def test_brokergroup_defaults(defaulted):
    body = defaulted("BrokerGroup", "broker-a", BG)
    cm, svc, sts, pdb = bg.children(body)
    assert sts["spec"]["replicas"] == 2, "1 master + 1 slave by default"
    assert sts["spec"]["serviceName"] == "broker-a-headless" == svc["metadata"]["name"]
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "data" and vct["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in vct["spec"]
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    pod = sts["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    env = {e["name"]: e for e in ctr["env"]}
    assert env["KROCKET_BROKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["KROCKET_ADVERTISE_HOST"]["value"] == "$(POD_NAME).broker-a-headless.$(POD_NAMESPACE).svc"
    assert env["KROCKET_NAMESRV_ADDR"]["value"] == "ns1-headless.mq.svc:9876"
    assert ctr["args"] == ["broker", "--config", "/etc/krocket/broker.yaml"]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in ctr["ports"]} == {
        "remoting": 10911,
        "ha": 10912,
        "http": 10913,
        "grpc": 8081,
    }
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert {v["name"] for v in pod["volumes"]} == {"config", "tmp"}
    assert pod["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["metadata"]["name"].startswith("broker-a-config-") and cm["immutable"] is True, "one per config revision"
    assert pdb["spec"]["maxUnavailable"] == 1
    cfg = yaml.safe_load(cm["data"]["broker.yaml"])
    assert cfg == {
        "brokerClusterName": "c1",
        "brokerName": "broker-a",
        "brokerRole": "ASYNC_MASTER",
        "flushDiskType": "ASYNC_FLUSH",
        "namesrvAddr": "ns1-headless.mq.svc:9876",
        "listenPort": 10911,
        "haListenPort": 10912,
        "httpPort": 10913,
        "grpcListenPort": 8081,
        "storePathRootDir": "/var/lib/krocket",
        "autoCreateTopicEnable": False,
        "fileReservedTime": 72,
        "diskMaxUsedSpaceRatio": 75,
    }
    assert sts["metadata"]["labels"][c.LABEL_CLUSTER] == "c1"


def test_brokergroup_overrides(defaulted):
    body = defaulted(
        "BrokerGroup",
        "broker-b",
        {
            **BG,
            "brokerName": "bb",
            "slaves": 2,
            "replicationMode": "SYNC",
            "flushMode": "SYNC",
            "podAntiAffinity": "preferred",
            "storage": {"storageClassName": "fast", "size": "50Gi", "retentionPolicy": {"whenScaled": "Delete"}},
            "brokerConfig": {"autoCreateTopicEnable": True, "extra": {"maxMessageSize": "1048576", "brokerName": "x"}},
        },
    )
    sts = bg.statefulset(body)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete"
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    cfg = bg.broker_config(body)
    assert cfg["brokerRole"] == "SYNC_MASTER" and cfg["flushDiskType"] == "SYNC_FLUSH"
    assert cfg["brokerName"] == "bb", "extra cannot override operator-owned keys"
    assert cfg["maxMessageSize"] == "1048576" and cfg["autoCreateTopicEnable"] is True


def test_brokergroup_ephemeral_has_no_pvc(defaulted):
    sts = bg.statefulset(defaulted("BrokerGroup", "e", {**BG, "storage": {"ephemeral": True}}))
    assert "volumeClaimTemplates" not in sts["spec"]
    assert any(v["name"] == "data" and "emptyDir" in v for v in sts["spec"]["template"]["spec"]["volumes"])


def test_config_change_changes_pod_template(defaulted):
    a = bg.statefulset(defaulted("BrokerGroup", "g", BG))
    b = bg.statefulset(defaulted("BrokerGroup", "g", {**BG, "brokerConfig": {"fileReservedTime": 24}}))
    ann = c.ANN_CONFIG_HASH
    assert (
        a["spec"]["template"]["metadata"]["annotations"][ann] != b["spec"]["template"]["metadata"]["annotations"][ann]
    )
    assert a["metadata"]["annotations"][c.ANN_TEMPLATE_HASH] != b["metadata"]["annotations"][c.ANN_TEMPLATE_HASH]


def test_scaling_nameservers_does_not_touch_brokers(defaulted):
    """Brokers address name servers by DNS: the broker template does not depend on the name server count."""
    g = defaulted("BrokerGroup", "g", BG)
    before = bg.statefulset(g)["metadata"]["annotations"][c.ANN_TEMPLATE_HASH]
    assert "ns1-headless.mq.svc:9876" in yaml.safe_dump(bg.broker_config(g))
    assert bg.statefulset(g)["metadata"]["annotations"][c.ANN_TEMPLATE_HASH] == before


def _sts_with_storage(size: str, cls: str | None = None) -> dict:
    spec = {"resources": {"requests": {"storage": size}}}
    if cls:
        spec["storageClassName"] = cls
    return {"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": spec}]}}


def test_storage_grow_shrink_and_class_change(defaulted):
    grow = defaulted("BrokerGroup", "g", {**BG, "storage": {"size": "20Gi", "storageClassName": "fast"}})
    assert bg.check_storage_change(grow, _sts_with_storage("10Gi", "fast")) == "20Gi"
    assert bg.check_storage_change(grow, _sts_with_storage("20Gi", "fast")) is None
    assert bg.check_storage_change(grow, None) is None
    with pytest.raises(bg.SpecError, match="cannot shrink") as e:
        bg.check_storage_change(grow, _sts_with_storage("30Gi", "fast"))
    assert e.value.reason == "NotSupported"
    with pytest.raises(bg.SpecError, match="storageClassName cannot change"):
        bg.check_storage_change(grow, _sts_with_storage("10Gi", "slow"))


def test_quantity_parsing():
    assert parse_quantity("1Gi") == 1024**3
    assert parse_quantity("500M") == 500 * 10**6
    assert parse_quantity("100m") * 10 == 1
    assert parse_quantity("1.5Ti") > parse_quantity("1500Gi")
    with pytest.raises(ValueError):
        parse_quantity("ten")


# --- rolling update and scaling decisions -----------------------------------------------------------


def _sts(partition: int, **status) -> dict:
    return {"spec": {"updateStrategy": {"rollingUpdate": {"partition": partition}}}, "status": status}


def test_rollout_holds_master_until_slaves_done_and_in_sync():
    r = bg.rollout(replica_count=3, template_changed=True, sts=_sts(0), slave_in_sync=True)
    assert (r.partition, r.rolling) == (1, True), "template change: slaves first"
    rolling = dict(currentRevision="a", updateRevision="b")
    r = bg.rollout(
        replica_count=3,
        template_changed=False,
        sts=_sts(1, updatedReplicas=1, readyReplicas=3, **rolling),
        slave_in_sync=True,
    )
    assert r.partition == 1, "one slave still on the old revision"
    r = bg.rollout(
        replica_count=3,
        template_changed=False,
        sts=_sts(1, updatedReplicas=2, readyReplicas=2, **rolling),
        slave_in_sync=True,
    )
    assert r.partition == 1, "a slave is not ready yet"
    r = bg.rollout(
        replica_count=3,
        template_changed=False,
        sts=_sts(1, updatedReplicas=2, readyReplicas=3, **rolling),
        slave_in_sync=False,
    )
    assert (r.partition, r.reason) == (1, "WaitingForSlaveInSync")
    r = bg.rollout(
        replica_count=3,
        template_changed=False,
        sts=_sts(1, updatedReplicas=2, readyReplicas=3, **rolling),
        slave_in_sync=True,
    )
    assert r.partition == 0, "now the master may roll"
    r = bg.rollout(
        replica_count=3,
        template_changed=False,
        sts=_sts(0, updatedReplicas=2, readyReplicas=3, **rolling),
        slave_in_sync=False,
    )
    assert r.partition == 0, "once released, the master roll is never re-held"
    racing = {"metadata": {"generation": 3}, **_sts(1, updatedReplicas=3, readyReplicas=3, observedGeneration=2)}
    r = bg.rollout(replica_count=3, template_changed=False, sts=racing, slave_in_sync=True)
    assert r.partition == 1, "the controller has not seen the new template yet: its counts are stale"
    done = bg.rollout(
        replica_count=3,
        template_changed=False,
        sts=_sts(0, currentRevision="b", updateRevision="b"),
        slave_in_sync=False,
    )
    assert (done.partition, done.rolling) == (0, False)


def test_rollout_without_slaves_rolls_master():
    r = bg.rollout(replica_count=1, template_changed=True, sts=_sts(0), slave_in_sync=False)
    assert (r.partition, r.rolling) == (0, True)


def test_scale_down_waits_for_master():
    assert bg.scale(desired=3, current=2, master_ready=False, skip_check=False).replicas == 3
    blocked = bg.scale(desired=2, current=4, master_ready=False, skip_check=False)
    assert blocked.blocked and blocked.replicas == 4 and "[2, 3]" in blocked.message
    assert c.ANN_SKIP_DRAIN_CHECK in blocked.message
    assert bg.scale(desired=2, current=4, master_ready=True, skip_check=False).replicas == 2
    assert bg.scale(desired=2, current=4, master_ready=False, skip_check=True).replicas == 2
    assert bg.scale(desired=2, current=None, master_ready=False, skip_check=False).replicas == 2
