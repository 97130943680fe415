"""Every failure reaches the resource's status and events (kopf against kmock's emulator).

- names the children cannot have are refused before anything is created (nothing half-made);
- an API server error while applying children (422 Invalid, 403 Forbidden) becomes Reconciled=False with the
  server's reason and message, a Warning event and retries, and clears once the API server accepts;
- a BrokerGroup may register with another namespace's name servers only when they allow it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest

from tests.operator import api
from tests.operator.api import BGS, NSS, STS, TOPICS, G, create, patch
from tests.operator.kopf_harness import (
    FAST,
    FakeBrokers,
    StampingEmulator,
    condition,
    get,
    running_operator,
    wait_for,
)

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CMS, SVCS = "v1/configmaps", "v1/services"


def nss_body(name: str = "namesrv", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return api.nss_body(name, replicas=1, annotations=annotations)


def bg_body(name: str, ref: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    spec = {"storage": {"size": "1Gi", "ephemeral": True}, **spec}
    return api.bg_body(name, ref=ref or {"name": "namesrv"}, **spec)


def warnings(k, ns: str) -> list[tuple[str, str]]:
    out = []
    for req in k[k.resource("v1/events"), "post"]:
        data = req.data if isinstance(req.data, dict) else {}
        if data.get("type") == "Warning" and data.get("metadata", {}).get("namespace", ns) == ns:
            out.append((str(data.get("reason")), str(data.get("message"))))
    return out


def children_in(k, ns: str) -> list[str]:
    """Names of every StatefulSet, Service and ConfigMap the operator left in `ns`."""
    found = []
    for res in (STS, SVCS, CMS):
        for key in list(k.objects):
            if key[0] == k.resource(res) and key[1] == ns and not k.objects[key].deleted:
                found.append(f"{res}:{key[2]}")
    return found


# --- names the children cannot have -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("nameserversets", nss_body("rmq.a"), "metadata.name"),
        ("nameserversets", nss_body("9rmq"), "metadata.name"),
        ("brokergroups", bg_body("b" * 60), "metadata.name"),
        ("brokergroups", bg_body("broker-a", clusterName="payments_"), "spec.clusterName"),
    ],
    ids=["dot", "digit-first", "60-characters", "clusterName-underscore"],
)
async def test_names_children_cannot_have_are_refused_before_anything_is_created(k8s, kind, body, field):
    name = body["metadata"]["name"]
    res = NSS if kind == "nameserversets" else BGS
    async with running_operator(k8s, admin=FakeBrokers()):
        await create(k8s, kind, "mq", body)
        ready = await wait_for(lambda: condition(get(k8s, res, "mq", name)), what="a Ready condition")
        assert ready["status"] == "False" and ready["reason"] == "InvalidName", ready
        assert field in ready["message"]
        reconciled = condition(get(k8s, res, "mq", name), "Reconciled")
        assert reconciled is not None and reconciled["reason"] == "InvalidName"
        await wait_for(lambda: ("InvalidName", ready["message"]) in warnings(k8s, "mq"), what="a Warning event")
        # resyncs later (an absence: nothing to wait for), still nothing was created, and the refusal is not
        # re-announced on every resync
        await asyncio.sleep(FAST.resync_interval * 2.5)
        assert children_in(k8s, "mq") == []
        assert [w for w in warnings(k8s, "mq") if w[0] == "InvalidName"] == [("InvalidName", ready["message"])]


# --- API server errors ------------------------------------------------------------------------------


def refuse_statefulsets(k, status: int, reason: str, message: str):
    def refuse(request: Any) -> kmock.KubernetesError | None:
        if request.resource == k.resource(STS) and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            return kmock.KubernetesError(status=status, reason=reason, message=message)
        return None

    return refuse


async def test_a_422_from_the_api_server_becomes_a_condition_an_event_and_retries(k8s):
    api_message = (
        'StatefulSet.apps "namesrv" is invalid: spec.template.spec.containers[0].resources.requests: '
        'Invalid value: "2": must be less than or equal to cpu limit of 1'
    )
    k8s.refuse = refuse_statefulsets(k8s, 422, "Invalid", api_message)
    async with running_operator(k8s):
        await create(k8s, "nameserversets", "mq", nss_body())
        reconciled = await wait_for(
            lambda: condition(get(k8s, NSS, "mq", "namesrv"), "Reconciled"), what="a Reconciled condition"
        )
        assert reconciled["status"] == "False" and reconciled["reason"] == "Invalid"
        assert "cannot create StatefulSet mq/namesrv" in reconciled["message"]
        assert api_message in reconciled["message"]
        assert condition(get(k8s, NSS, "mq", "namesrv"))["reason"] == "Invalid"  # Ready too: nothing runs yet
        await wait_for(lambda: any(r == "Invalid" for r, _ in warnings(k8s, "mq")), what="a Warning event")
        # retried with backoff (kopf's retries of the create handler), not once a resync interval
        await wait_for(lambda: len(k8s[k8s.resource(STS), "post"]) >= 3, what="retries", timeout=20)

        k8s.refuse = None  # the cause is fixed (e.g. a quota or an admission policy changed)
        await wait_for(lambda: get(k8s, STS, "mq", "namesrv"), what="the StatefulSet")
        reconciled = await wait_for(
            lambda: (x := condition(get(k8s, NSS, "mq", "namesrv"), "Reconciled"))["status"] == "True" and x,
            what="Reconciled=True",
        )
        assert reconciled["reason"] == "ReconcileSucceeded"
        assert condition(get(k8s, NSS, "mq", "namesrv"))["reason"] == "WaitingForReplicas"


async def test_a_forbidden_patch_of_a_running_group_keeps_ready_and_reports_reconciled_false(k8s):
    brokers = FakeBrokers()
    async with running_operator(k8s, admin=brokers):
        await create(k8s, "nameserversets", "mq", nss_body())
        await create(k8s, "brokergroups", "mq", bg_body("broker-a"))
        await wait_for(lambda: get(k8s, STS, "mq", "broker-a"), what="the StatefulSet")
        await patch(k8s, "/apis/apps/v1/namespaces/mq/statefulsets/broker-a/status", {"status": {"readyReplicas": 1}})
        await wait_for(lambda: condition(get(k8s, BGS, "mq", "broker-a"))["status"] == "True", what="Ready")

        k8s.refuse = refuse_statefulsets(
            k8s, 403, "Forbidden", 'statefulsets.apps "broker-a" is forbidden: User "krocket" cannot patch'
        )
        await patch(k8s, f"/apis/{G}/namespaces/mq/brokergroups/broker-a", {"spec": {"image": "krocket/broker:0.2"}})
        reconciled = await wait_for(
            lambda: (x := condition(get(k8s, BGS, "mq", "broker-a"), "Reconciled"))["reason"] == "Forbidden" and x,
            what="Reconciled=False Forbidden",
        )
        assert reconciled["status"] == "False"
        assert "cannot patch StatefulSet mq/broker-a" in reconciled["message"] and "forbidden" in reconciled["message"]
        assert condition(get(k8s, BGS, "mq", "broker-a"))["status"] == "True"  # the running group is still Ready
        await wait_for(lambda: any(r == "Forbidden" for r, _ in warnings(k8s, "mq")), what="a Warning event")


async def test_an_api_error_while_reconciling_a_topic_reaches_its_status(k8s):
    def refuse(request: Any) -> kmock.KubernetesError | None:
        if request.resource == k8s.resource(BGS) and request.action == kmock.action.LIST and request.namespace == "mq":
            return kmock.KubernetesError(status=403, reason="Forbidden", message="cannot list brokergroups")
        return None

    # kopf lists cluster-wide; only the operator's own namespaced list is refused
    async with running_operator(k8s, admin=FakeBrokers()):
        k8s.refuse = refuse
        topic = {"placement": {"clusterName": "c1"}, "readQueues": 4, "writeQueues": 4}
        await create(k8s, "topics", "mq", {"apiVersion": G, "kind": "Topic", "metadata": {"name": "t1"}, "spec": topic})
        reconciled = await wait_for(lambda: condition(get(k8s, TOPICS, "mq", "t1"), "Reconciled"), what="Reconciled")
        assert reconciled["status"] == "False" and reconciled["reason"] == "Forbidden"
        assert "cannot list brokergroups" in reconciled["message"]
        k8s.refuse = None
        await wait_for(
            lambda: condition(get(k8s, TOPICS, "mq", "t1"), "Reconciled")["status"] == "True", what="cleared"
        )


# --- references into other namespaces ---------------------------------------------------------------


async def test_a_reference_into_another_namespace_needs_the_targets_consent(k8s):
    async with running_operator(k8s, admin=FakeBrokers()):
        await create(k8s, "nameserversets", "mq", nss_body())
        await create(k8s, "brokergroups", "team-a", bg_body("broker-a", {"name": "namesrv", "namespace": "mq"}))
        ready = await wait_for(lambda: condition(get(k8s, BGS, "team-a", "broker-a")), what="a Ready condition")
        assert ready["status"] == "False" and ready["reason"] == "ReferenceNotPermitted"
        assert "krocket.io/allowed-namespaces" in ready["message"] and "mq/namesrv" in ready["message"]
        assert children_in(k8s, "team-a") == []

        await patch(
            k8s,
            f"/apis/{G}/namespaces/mq/nameserversets/namesrv",
            {"metadata": {"annotations": {"krocket.io/allowed-namespaces": "team-b, team-a"}}},
        )
        sts = await wait_for(lambda: get(k8s, STS, "team-a", "broker-a"), what="the group's StatefulSet")
        env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KROCKET_NAMESRV_ADDR"] == "namesrv-headless.mq.svc:9876"
        await wait_for(
            lambda: condition(get(k8s, BGS, "team-a", "broker-a"), "Reconciled")["reason"] != "ReferenceNotPermitted",
            what="the refusal cleared",
        )


async def test_an_address_of_another_namespaces_name_servers_is_held_to_the_same_rule(k8s):
    async with running_operator(k8s, admin=FakeBrokers()):
        await create(k8s, "nameserversets", "mq", nss_body())
        address = "namesrv-0.namesrv-headless.mq.svc.cluster.local:9876"
        await create(k8s, "brokergroups", "team-b", bg_body("sneaky", {"address": address}))
        await create(k8s, "brokergroups", "team-b", bg_body("outside", {"address": "10.1.2.3:9876;10.1.2.4:9876"}))
        ready = await wait_for(lambda: condition(get(k8s, BGS, "team-b", "sneaky")), what="a Ready condition")
        assert ready["reason"] == "ReferenceNotPermitted" and address in ready["message"]
        # name servers outside the cluster are allowed, and status shows where the group registers
        await wait_for(lambda: get(k8s, STS, "team-b", "outside"), what="the outside group's StatefulSet")
        outside = await wait_for(
            lambda: (b := get(k8s, BGS, "team-b", "outside"))["status"].get("nameServerAddress") and b,
            what="status.nameServerAddress",
        )
        assert outside["status"]["nameServerAddress"] == "10.1.2.3:9876;10.1.2.4:9876"
        assert get(k8s, STS, "team-b", "sneaky") is None
