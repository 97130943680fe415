"""kopf against kmock's emulator: children, updates, status, finalizers, isolation between clusters."""

from __future__ import annotations

import pytest
from kopf_harness import (
    FakeBrokers,
    StampingEmulator,
    condition,
    declare_resources,
    event_reasons,
    get,
    running_operator,
    wait_for,
)

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

G = "krocket.io/v1alpha1"
NSS, BGS, TOPICS = f"{G}/nameserversets", f"{G}/brokergroups", f"{G}/topics"
STS = "apps/v1/statefulsets"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture()
def k8s(kmock):
    declare_resources(kmock)
    return kmock


async def create(k, plural: str, ns: str, body: dict) -> None:
    group_path = "/api/v1" if plural in ("pods",) else f"/apis/{G}"
    resp = await k.post(f"{group_path}/namespaces/{ns}/{plural}", json=body)
    assert resp.status < 300, await resp.text()


async def patch(k, path: str, body: dict) -> None:
    resp = await k.patch(path, json=body, headers=MERGE)
    assert resp.status < 300, await resp.text()


def nss_body(name="namesrv", replicas=2):
    return {"apiVersion": G, "kind": "NameServerSet", "metadata": {"name": name}, "spec": {"replicas": replicas}}


def bg_body(name, cluster="c1", slaves=1, **spec):
    return {
        "apiVersion": G,
        "kind": "BrokerGroup",
        "metadata": {"name": name, "labels": {"tier": "gold"}},
        "spec": {
            "nameServerSetRef": {"name": "namesrv"},
            "clusterName": cluster,
            "slaves": slaves,
            "image": "krocket/broker:0.1.0",
            "storage": {"size": "10Gi", "ephemeral": False},
            **spec,
        },
    }


def topic_body(name, **spec):
    body = {"placement": {"clusterName": "c1"}, "readQueues": 4, "writeQueues": 4, "perm": 6, **spec}
    body.setdefault("deletionPolicy", "Delete")
    return {"apiVersion": G, "kind": "Topic", "metadata": {"name": name}, "spec": body}


async def test_nameserverset_children_status_and_update(k8s):
    async with running_operator(k8s):
        await create(k8s, "nameserversets", "mq", nss_body())
        sts = await wait_for(lambda: get(k8s, STS, "mq", "namesrv"), what="name server StatefulSet")
        assert sts["spec"]["replicas"] == 2
        assert sts["metadata"]["ownerReferences"][0]["kind"] == "NameServerSet"
        assert get(k8s, "v1/services", "mq", "namesrv-headless")["spec"]["clusterIP"] == "None"
        assert get(k8s, "v1/services", "mq", "namesrv") is not None
        assert get(k8s, "policy/v1/poddisruptionbudgets", "mq", "namesrv") is not None
        nss = await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv")) and get(k8s, NSS, "mq", "namesrv"))
        assert nss["status"]["address"] == "namesrv-headless.mq.svc:9876"
        assert condition(nss)["status"] == "False" and condition(nss)["reason"] == "WaitingForReplicas"

        # the StatefulSet controller would report ready pods: the NameServerSet turns Ready
        await patch(k8s, "/apis/apps/v1/namespaces/mq/statefulsets/namesrv/status",
                    {"status": {"replicas": 2, "readyReplicas": 2}})
        await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv"))["status"] == "True", what="Ready=True")
        assert get(k8s, NSS, "mq", "namesrv")["status"]["readyReplicas"] == 2

        # spec change: scale and new image
        await patch(k8s, f"/apis/{G}/namespaces/mq/nameserversets/namesrv",
                    {"spec": {"replicas": 3, "image": "krocket/namesrv:0.2.0"}})
        sts = await wait_for(
            lambda: (s := get(k8s, STS, "mq", "namesrv"))["spec"]["replicas"] == 3 and s, what="scaled sts"
        )
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "krocket/namesrv:0.2.0"
        await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv"))["status"] == "False", what="Ready=False")
        assert get(k8s, NSS, "mq", "namesrv")["status"]["observedGeneration"] == 2
