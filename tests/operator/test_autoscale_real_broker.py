"""ConsumerGroup autoscaling against a real broker process with a backlog: the operator (kopf against kmock) reads
the group's lag from the broker's admin API, the Deployment's replicas rise as the lag rises (capped at the
topic's 4 queues) and fall to minReplicas once the backlog is consumed and the scale-down window has passed."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from krocket.client import Producer, PullConsumer
from krocket.client.types import PullStatus
from krocket.common.message import Message
from krocket.operator.broker_admin import BrokerAdmin

from tests.operator.api import CGS, G
from tests.operator.kopf_harness import FAST, StampingEmulator, condition, get
from tests.operator.kopf_harness import wait_for as wait_for_state
from tests.operator.real_broker import admin_base, brokergroup, operator_on
from tests.support.cluster import create_topic, wait_until_async

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

DEPLOYS = "apps/v1/deployments"
TOPIC, GROUP = "Backlog", "backlog-workers"
WINDOW = 3.0
CONFIG = dataclasses.replace(FAST, autoscale_interval=0.3)


WORKERS = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "workers"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "workers"}},
        "template": {"metadata": {"labels": {"app": "workers"}}, "spec": {"containers": []}},
    },
}
CONSUMER_GROUP = {
    "apiVersion": G,
    "kind": "ConsumerGroup",
    "metadata": {"name": "workers"},
    "spec": {
        "groupName": GROUP,
        "clusterName": "DefaultCluster",
        "topics": [{"topic": TOPIC}],
        "retryMaxTimes": 3,
        "autoscaling": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "lagPerReplica": 10,
            "scaleDownStabilizationSeconds": WINDOW,
        },
    },
}


def replicas(k) -> int:
    return int(get(k, DEPLOYS, "cg", "workers")["spec"]["replicas"])


async def produce(producer: Producer, n: int) -> None:
    for i in range(n):
        await producer.send(Message(TOPIC, f"job {i}".encode()))


async def test_broker_group_admin_contract(cluster):
    """The calls the ConsumerGroup reconciler makes, against the real broker."""
    base = admin_base(cluster)
    async with aiohttp.ClientSession() as session:
        admin = BrokerAdmin(session)
        held = await admin.upsert_group(base, {"groupName": GROUP, "retryMaxTimes": 3, "consumeMessageOrderly": True})
        assert (held["groupName"], held["retryMaxTimes"], held["consumeMessageOrderly"]) == (GROUP, 3, True)
        offsets = await admin.group_offsets(base, GROUP)
        assert offsets is not None and offsets["offsets"] == []  # known, nothing committed yet
        # A group the broker never saw has no rows and no clients (200, as RocketMQ's consumer stats are empty).
        assert await admin.group_offsets(base, "never-seen") == {"group": "never-seen", "clients": [], "offsets": []}
        assert await admin.delete_group(base, GROUP) is True
        assert await admin.delete_group(base, GROUP) is False


async def test_replicas_rise_with_the_backlog_and_fall_after_the_window(kmock, cluster):
    base = admin_base(cluster)
    await create_topic(cluster, TOPIC, queues=4)

    async with (
        Producer("backlog-producer", cluster.namesrv_addr) as producer,
        PullConsumer(GROUP, cluster.namesrv_addr) as consumer,
        operator_on(kmock, base, ns="cg", config=CONFIG),
    ):
        queues = await consumer.fetch_queues(TOPIC)
        assert len(queues) == 4
        for q in queues:  # the group exists on the broker with its offsets at 0: all that is sent is its lag
            await consumer.update_offset(q, 0)

        await kmock.post(f"/apis/{G}/namespaces/cg/brokergroups", json=brokergroup(cluster.namesrv_addr))
        await kmock.post("/apis/apps/v1/namespaces/cg/deployments", json=WORKERS)
        await kmock.post(f"/apis/{G}/namespaces/cg/consumergroups", json=CONSUMER_GROUP)

        def cg() -> dict:
            return get(kmock, CGS, "cg", "workers") or {}

        await wait_for_state(lambda: (condition(cg()) or {}).get("status") == "True", what="ConsumerGroup Ready")
        async with aiohttp.ClientSession() as s, s.get(f"{base}/api/v1/groups/{GROUP}") as r:
            assert r.status == 200 and (await r.json())["retryMaxTimes"] == 3  # the subscription group on the broker
        assert replicas(kmock) == 1 and cg()["status"]["lag"]["total"] == 0

        # the backlog grows: 15 messages -> 2 replicas, 35 -> 4
        await produce(producer, 15)
        await wait_for_state(lambda: replicas(kmock) == 2, what="2 replicas for a lag of 15")
        await wait_for_state(lambda: cg()["status"]["lag"]["total"] == 15, what="lag 15 in status")
        await produce(producer, 20)
        await wait_for_state(lambda: replicas(kmock) == 4, what="4 replicas for a lag of 35")
        # more backlog: still 4, the topic's queue count, although maxReplicas is 10
        await produce(producer, 40)
        await wait_for_state(lambda: cg()["status"]["lag"]["total"] == 75, what="lag 75 in status")
        await wait_for_state(lambda: (condition(cg(), "ScalingLimited") or {}).get("reason") == "TooFewQueues",
                             what="capped at the queue count")  # fmt: skip
        assert replicas(kmock) == 4 and cg()["status"]["queues"] == 4

        # consume everything and commit: the lag drops to 0, the replicas fall after the window
        consumed = 0
        for q in queues:
            offset = 0
            while True:
                result = await consumer.pull(q, "*", offset, 32)
                if result.status is not PullStatus.FOUND:
                    break
                consumed += len(result.messages)
                offset = result.next_begin_offset
            await consumer.update_offset(q, offset)
        assert consumed == 75
        await wait_for_state(lambda: cg()["status"]["lag"]["total"] == 0, what="lag 0 in status")
        await wait_for_state(lambda: replicas(kmock) == 1, timeout=WINDOW + 15, what="scaled down to minReplicas")
        history = [v.raw.get("status") or {} for v in kmock.objects[kmock.resource(CGS), "cg", "workers"].history]
        held = [s for s in history if (s.get("lag") or {}).get("total") == 0 and s.get("desiredReplicas") == 4]
        assert held and "scale-down window (3s) has not passed" in held[0]["lastDecision"], "held for the window"
        assert cg()["status"]["lastDecision"].startswith("lag 0 at 10 per replica recommends 1 replica")

        # deleting the resource deletes the subscription group from the broker
        await kmock.delete(f"/apis/{G}/namespaces/cg/consumergroups/workers")
        await wait_for_state(lambda: get(kmock, CGS, "cg", "workers") is None, what="ConsumerGroup gone")

        async def group_gone() -> bool:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/api/v1/groups/{GROUP}") as r:
                return r.status == 404

        await wait_until_async(group_gone, timeout=10, message="subscription group deleted on the broker")
