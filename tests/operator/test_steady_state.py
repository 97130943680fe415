"""No spurious drift: a steady state reconciles with zero writes to children and zero events.

The API server stores quantities in canonical form (`cpu: 1000m` reads back as `1`, `memory: 4096Mi` as `4Gi`); the
emulator does the same here (`normalise_quantities`), and the operator must not see that as drift.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from krocket.operator.apply import is_subset

from tests.operator.api import BGS, NSS, STS, G, create
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

CHILDREN = [STS, "v1/services", "v1/configmaps", "policy/v1/poddisruptionbudgets", "v1/persistentvolumeclaims"]
RESOURCES = {"requests": {"cpu": "1000m", "memory": "4096Mi"}, "limits": {"cpu": "2000m", "memory": "4096Mi"}}
STEADY = dataclasses.replace(FAST, resync_interval=0.3, status_interval=0.3)
STEADY_RECONCILES = 10


@pytest.fixture()
def k8s(k8s):
    k8s.normalise_quantities = True
    return k8s


def child_writes(k) -> int:
    return sum(len(k[k.resource(res), "patch"]) for res in CHILDREN)


def status_writes(k) -> int:
    """PATCHes of the resources themselves: the status a reconcile computed is written only when it changed."""
    return sum(len(k[k.resource(res), "patch"]) for res in (NSS, BGS))


def events(k) -> list[Any]:
    return [(r.data or {}).get("reason") for r in k[k.resource("v1/events"), "post"]]


def event_messages(k) -> list[str]:
    return [str((r.data or {}).get("message")) for r in k[k.resource("v1/events"), "post"]]


async def settle(k, name: str, quiet_reconciles: int = 3, attempts: int = 10) -> None:
    """Until `quiet_reconciles` reconciles of `name` in a row posted no event."""
    for _ in range(attempts):
        posted, start = len(event_messages(k)), statefulset_reads(k, name)
        until = start + quiet_reconciles
        await wait_for(lambda u=until: statefulset_reads(k, name) >= u, what="reconciles")
        if len(event_messages(k)) == posted:
            return
    raise AssertionError(f"events kept coming: {event_messages(k)}")


def statefulset_reads(k, name: str) -> int:
    """Every reconcile reads its StatefulSet: a count of reconciles of `name`."""
    return sum(1 for r in k[k.resource(STS), "get"] if r.name == name)


async def test_ten_steady_reconciles_with_normalised_quantities_write_nothing_and_post_no_events(k8s):
    async with running_operator(k8s, admin=FakeBrokers(), config=STEADY):
        nss = {"replicas": 1, "resources": RESOURCES}
        await create(
            k8s,
            "nameserversets",
            "mq",
            {"apiVersion": G, "kind": "NameServerSet", "metadata": {"name": "namesrv"}, "spec": nss},
        )
        group = {
            "nameServerSetRef": {"name": "namesrv"},
            "clusterName": "c1",
            "slaves": 1,
            "resources": RESOURCES,
            "storage": {"size": "1Gi", "ephemeral": False},
        }
        await create(
            k8s,
            "brokergroups",
            "mq",
            {"apiVersion": G, "kind": "BrokerGroup", "metadata": {"name": "broker-a"}, "spec": group},
        )
        await wait_for(lambda: condition(get(k8s, BGS, "mq", "broker-a"), "Reconciled"), what="the group reconciled")
        await wait_for(lambda: condition(get(k8s, NSS, "mq", "namesrv"), "Reconciled"), what="name servers reconciled")
        stored = get(k8s, STS, "mq", "broker-a")["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert stored["requests"] == {"cpu": "1", "memory": "4Gi"}  # what an API server would hand back

        # kopf posts events in the background: first let every reconcile that created something be announced
        await settle(k8s, "broker-a")
        writes, posted, status_written = child_writes(k8s), len(events(k8s)), status_writes(k8s)
        start_nss, start_bg = statefulset_reads(k8s, "namesrv"), statefulset_reads(k8s, "broker-a")
        await wait_for(
            lambda: (
                statefulset_reads(k8s, "namesrv") >= start_nss + STEADY_RECONCILES
                and statefulset_reads(k8s, "broker-a") >= start_bg + STEADY_RECONCILES
            ),
            timeout=30,
            what=f"{STEADY_RECONCILES} steady reconciles of each",
        )
        assert child_writes(k8s) == writes, [
            (res, r.name, r.data) for res in CHILDREN for r in k8s[k8s.resource(res), "patch"]
        ][writes:]
        assert event_messages(k8s)[posted:] == []
        assert status_writes(k8s) == status_written


@pytest.mark.parametrize(
    ("desired", "live"),
    [
        ({"cpu": "1000m", "memory": "4096Mi"}, {"cpu": "1", "memory": "4Gi"}),
        ({"cpu": 2, "memory": "1.5Gi"}, {"cpu": "2", "memory": "1536Mi"}),
        ({"cpu": "0.5"}, {"cpu": "500m"}),
    ],
)
def test_quantities_compare_by_value(desired, live):
    assert is_subset({"resources": {"requests": desired}}, {"resources": {"requests": live}})


def test_a_real_change_of_a_quantity_is_drift():
    assert not is_subset({"resources": {"limits": {"cpu": "1500m"}}}, {"resources": {"limits": {"cpu": "1"}}})
    assert not is_subset({"resources": {"limits": {"memory": "4Gi"}}}, {"resources": {"limits": {"memory": "4G"}}})


def test_server_defaults_and_equivalent_forms_are_not_drift():
    desired = {
        "spec": {
            "publishNotReadyAddresses": False,  # omitempty: a real API server does not return it
            "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
            "template": {"spec": {"containers": [{"name": "c", "args": [], "env": []}]}},
        }
    }
    live = {
        "spec": {
            "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
            "sessionAffinity": "None",
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                        }
                    ]
                }
            },
        }
    }
    assert is_subset(desired, live)
    assert is_subset({"spec": {"maxUnavailable": 1}}, {"spec": {"maxUnavailable": "1"}})  # int-or-string


def test_changes_that_matter_are_still_drift():
    assert not is_subset({"spec": {"replicas": 0}}, {"spec": {}})  # a missing count is not zero
    assert not is_subset({"spec": {"paused": True}}, {"spec": {}})
    assert not is_subset({"spec": {"image": "a:2"}}, {"spec": {"image": "a:1"}})
    assert not is_subset({"spec": {"ports": [{"port": 1}]}}, {"spec": {"ports": [{"port": 1}, {"port": 2}]}})
    assert not is_subset({"spec": {"flag": True}}, {"spec": {"flag": "True"}})
