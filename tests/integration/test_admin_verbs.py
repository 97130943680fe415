"""mqadmin's verbs against real processes (one name server, two broker groups): ``krocket message by-offset``,
``producer connections``, ``stats``, ``topic status``, ``broker status|config get|config set``, TPS columns of
``cluster list`` and ``broker wipe-write-perm|add-write-perm`` (a krocket.client producer then sends to the other
group only), each through the real CLI with ``--json``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krocket.client import ConsumeStatus, Message, Producer, PushConsumer, SendResult

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until, wait_until_async

KROCKET = [sys.executable, "-m", "krocket.cli.main"]
SENT = 24


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = start_cluster(tmp_path_factory.mktemp("verbs") / "c", namesrvs=1, groups=2)
    yield running
    running.stop()


def krocket(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KROCKET, *args, "--namesrv", cluster.namesrv_addr],
        capture_output=True,
        text=True,
        timeout=60,
    )


def krocket_json(cluster: LocalCluster, *args: str) -> Any:
    result = krocket(cluster, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_inspection_verbs_show_the_traffic_a_producer_and_consumer_made(cluster: LocalCluster, tmp_path: Path) -> None:
    topic, group, pgroup = (f"{p}_{uuid.uuid4().hex[:8]}" for p in ("Verbs", "verbs_consumers", "verbs_producers"))

    async def produce_and_consume() -> list[SendResult]:
        await create_topic(cluster, topic, queues=2)
        producer = Producer(pgroup, cluster.namesrv_addr)
        await producer.start()
        try:
            sent = [await producer.send(Message(topic, f"m-{i}".encode(), keys=[f"k-{i}"])) for i in range(SENT)]
            got: list[bytes] = []

            async def listener(messages: list[Any]) -> ConsumeStatus:
                got.extend(m.body for m in messages)
                return ConsumeStatus.SUCCESS

            consumer = PushConsumer(group, cluster.namesrv_addr, consume_from="CONSUME_FROM_FIRST_OFFSET")
            consumer.subscribe(topic, "*")
            consumer.register_listener(listener)
            await consumer.start()
            try:
                await wait_until_async(lambda: len(got) >= SENT, timeout=30, message="every message consumed")

                def caught_up() -> bool:
                    _, groups = stats_rows()
                    return sum(g["lag"] for g in groups) == 0 and sum(g["outMsgTotal"] for g in groups) >= SENT

                await asyncio.to_thread(wait_until, caught_up, 30, 0.5, "committed offsets and counted pulls")
            finally:
                await consumer.shutdown()

            # The producer is online: its connection on both masters.
            producers = krocket_json(cluster, "producer", "connections", pgroup)
            rows = producers["connectionSet"]
            assert {r["brokerName"] for r in rows} == {"broker-a", "broker-b"}
            assert {r["clientId"] for r in rows} == {producer.client_id}
            assert all(r["language"] == "PYTHON" and r["lastUpdateTimestamp"] > 0 for r in rows)
            return sent
        finally:
            await producer.shutdown()

    def stats_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        data = krocket_json(cluster, "stats", "--topic", topic, "--group", group)
        return data["topics"], data["groups"]

    sent = asyncio.run(produce_and_consume())

    # stats: in and out per broker, lag 0, rates over the last minute.
    # The rates leave out the current second: wait until the second of the sends is over.
    wait_until(lambda: all(t["inTps"] > 0 for t in stats_rows()[0]), 10, 0.3, "a rate over the last minute")
    topics, groups = stats_rows()
    assert sum(t["inMsgTotal"] for t in topics) == SENT and {t["brokerName"] for t in topics} == {
        "broker-a",
        "broker-b",
    }
    assert sum(g["outMsgTotal"] for g in groups) == SENT and all(g["group"] == group for g in groups)

    # the older verbs' --json: brokerName next to queueId.
    consumed = krocket_json(cluster, "consumer", "stats", group, "--topic", topic)
    assert {r["brokerName"] for r in consumed} == {"broker-a", "broker-b"} and all("broker" not in r for r in consumed)
    [by_key] = krocket_json(cluster, "message", "query", "--topic", topic, "--key", "k-0")
    assert (by_key["brokerName"], by_key["queueId"]) == (sent[0].queue.broker_name, sent[0].queue.queue_id)

    # message by-offset: what the producer was told is at that queue offset.
    first = sent[0]
    shown = krocket_json(
        cluster, "message", "by-offset", "--topic", topic, "--broker", first.queue.broker_name,
        "--queue", str(first.queue.queue_id), "--offset", str(first.queue_offset),
    )  # fmt: skip
    assert (shown["body"], shown["msgId"], shown["brokerName"]) == ("m-0", first.msg_id, first.queue.broker_name)
    missing = krocket(
        cluster, "message", "by-offset", "--topic", topic, "--broker", "broker-a", "--queue", "0", "--offset", "9999"
    )
    assert missing.returncode == 1 and "no message at offset 9999" in missing.stderr

    # topic status: every queue of both brokers, the messages they hold, their last store time.
    status = krocket_json(cluster, "topic", "status", topic)["queues"]
    assert {(q["brokerName"], q["queueId"]) for q in status} == {
        (b, q) for b in ("broker-a", "broker-b") for q in (0, 1)
    }
    assert sum(q["maxOffset"] - q["minOffset"] for q in status) == SENT
    now_ms = time.time() * 1000
    assert all(now_ms - 120_000 < q["lastUpdateTimestamp"] <= now_ms + 1000 for q in status if q["maxOffset"])

    # broker status and cluster list: the traffic rates.
    table = krocket_json(cluster, "broker", "status", "--broker", "broker-a")["broker-a/0"]
    assert float(table["putTps"].split()[-1]) > 0 and "getTransferedTps" in table
    listed = krocket_json(cluster, "cluster", "list")["brokers"]
    assert all(listed[b]["0"]["inTps"] > 0 and listed[b]["0"]["outTps"] > 0 for b in ("broker-a", "broker-b"))
    assert "IN_TPS" in krocket(cluster, "cluster", "list").stdout


def test_broker_config_get_and_set_apply_only_runtime_keys(cluster: LocalCluster) -> None:
    got = krocket_json(cluster, "broker", "config", "get", "--broker", "broker-a", "--key", "shortPollingTimeMills")
    assert got == {"broker-a/0": {"shortPollingTimeMills": "1000"}}
    set_ = krocket_json(cluster, "broker", "config", "set", "shortPollingTimeMills", "400", "--broker", "broker-a")
    assert set_["brokers"] == ["broker-a/0"]
    after = krocket_json(cluster, "broker", "config", "get", "--broker", "broker-a")["broker-a/0"]
    assert after["shortPollingTimeMills"] == "400" and after["brokerName"] == "broker-a"
    other = krocket_json(cluster, "broker", "config", "get", "--broker", "broker-b", "--key", "shortPollingTimeMills")
    assert other == {"broker-b/0": {"shortPollingTimeMills": "1000"}}
    by_addr = krocket_json(cluster, "broker", "status", cluster.brokers[1].addr)
    assert list(by_addr) == ["broker-b/0"] and by_addr["broker-b/0"]["brokerName"] == "broker-b"
    refused = krocket(cluster, "broker", "config", "set", "listenPort", "1", "--broker", "broker-a")
    assert refused.returncode == 1
    assert "listenPort cannot change while the broker runs" in refused.stderr
    assert "shortPollingTimeMills" in refused.stderr
    bad = krocket(cluster, "broker", "config", "set", "shortPollingTimeMills", "soon", "--broker", "broker-a")
    assert bad.returncode == 1 and "shortPollingTimeMills" in bad.stderr


def test_wipe_write_perm_moves_sends_to_the_other_group_and_add_brings_them_back(cluster: LocalCluster) -> None:
    topic = f"Perm_{uuid.uuid4().hex[:8]}"

    async def sends_go_to(producer: Producer, n: int) -> set[str]:
        await producer.instance.refresh_routes()
        return {(await producer.send(Message(topic, b"x"))).queue.broker_name for _ in range(n)}

    async def run() -> None:
        await create_topic(cluster, topic, queues=2)
        producer = Producer("perm_producers", cluster.namesrv_addr)
        await producer.start()
        try:
            assert await sends_go_to(producer, 8) == {"broker-a", "broker-b"}
            wiped = await asyncio.to_thread(krocket_json, cluster, "broker", "wipe-write-perm", "broker-a")
            assert wiped["brokerName"] == "broker-a"
            assert [n["wipeTopicCount"] >= 1 for n in wiped["namesrv"]] == [True]
            assert await sends_go_to(producer, 8) == {"broker-b"}
            added = await asyncio.to_thread(krocket_json, cluster, "broker", "add-write-perm", "broker-a")
            assert [n["addTopicCount"] >= 1 for n in added["namesrv"]] == [True]
            assert await sends_go_to(producer, 8) == {"broker-a", "broker-b"}
        finally:
            await producer.shutdown()

    asyncio.run(run())
