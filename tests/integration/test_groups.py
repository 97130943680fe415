"""Subscription groups and consumer tooling against real processes (one name server, one master, one slave):
the CLI and Admin manage groups, the slave copies them, consumeEnable=false stops a consumer, consume stats and
connections show a running consumer, and an offset reset by time makes a running PushConsumer re-consume."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import Admin, ConsumeStatus, Message, MessageExt, Producer, PushConsumer, broker_api
from krocket.common.codes import RequestCode
from krocket.common.remoting import ConnectionPool
from krocket.common.subscription_group import SubscriptionGroupConfig

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until_async

KROCKET = [sys.executable, "-m", "krocket.cli.main"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("groups")
    config = root / "broker.yaml"
    config.write_text("metadataSyncPeriodMills: 1000\n")
    running = start_cluster(root / "c", namesrvs=1, groups=1, slaves=1, extra_broker_args=["--config", str(config)])
    yield running
    running.stop()


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def krocket_json(cluster: LocalCluster, *args: str) -> object:
    result = subprocess.run(
        [*KROCKET, *args, "--namesrv", cluster.namesrv_addr, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def groups_on(addr: str) -> dict[str, dict]:
    pool = ConnectionPool()
    try:
        response = await broker_api.invoke(pool, addr, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
        return dict(broker_api.json_body(response)["subscriptionGroupTable"])
    finally:
        await pool.close()


class Receiver:
    def __init__(self) -> None:
        self.got: list[MessageExt] = []

    def __call__(self, messages: list[MessageExt]) -> ConsumeStatus:
        self.got.extend(messages)
        return ConsumeStatus.SUCCESS

    def bodies(self) -> list[bytes]:
        return [m.body for m in self.got]


def consumer(cluster: LocalCluster, group: str, topic: str, receiver: Receiver) -> PushConsumer:
    push = PushConsumer(group, cluster.namesrv_addr, consume_from="CONSUME_FROM_FIRST_OFFSET", rebalance_interval=1.0)
    push.subscribe(topic)
    push.register_listener(receiver)
    return push


def test_cli_creates_updates_lists_and_deletes_groups_and_the_slave_copies_them(cluster: LocalCluster) -> None:
    master, slave = cluster.brokers
    group = name("cli_group")
    created = krocket_json(cluster, "group", "create", group, "--retry-max-times", "3", "--orderly")
    assert created["group"]["retryMaxTimes"] == 3  # type: ignore[index]
    listed = krocket_json(cluster, "group", "list")
    row = listed["broker-a"][group]  # type: ignore[index]
    assert (row["retryMaxTimes"], row["consumeMessageOrderly"], row["consumeEnable"]) == (3, True, True)

    async def slave_has(retry_max_times: int | None) -> None:
        async def copied() -> bool:
            table = await groups_on(slave.addr)
            if retry_max_times is None:
                return group not in table
            return table.get(group, {}).get("retryMaxTimes") == retry_max_times

        await wait_until_async(copied, timeout=15, message=f"the slave's copy of {group}")

    asyncio.run(slave_has(3))
    krocket_json(cluster, "group", "update", group, "--retry-max-times", "5", "--disable-broadcast")
    row = krocket_json(cluster, "group", "list")["broker-a"][group]  # type: ignore[index]
    assert (row["retryMaxTimes"], row["consumeBroadcastEnable"]) == (5, False)
    asyncio.run(slave_has(5))
    krocket_json(cluster, "group", "delete", group)
    assert group not in krocket_json(cluster, "group", "list")["broker-a"]  # type: ignore[index]
    asyncio.run(slave_has(None))
    assert group not in asyncio.run(groups_on(master.addr))


def test_consume_disabled_stops_a_consumer_until_enabled(cluster: LocalCluster) -> None:
    topic, group = name("GroupsOff"), name("off_group")

    async def run() -> None:
        await create_topic(cluster, topic, queues=2)
        async with Admin(cluster.namesrv_addr) as admin:
            await admin.create_group(SubscriptionGroupConfig(group, consume_enable=False))
            receiver = Receiver()
            async with Producer(name("pg"), cluster.namesrv_addr) as producer:
                for i in range(4):
                    await producer.send(Message(topic, f"off-{i}".encode()))
            async with consumer(cluster, group, topic, receiver):
                await asyncio.sleep(4.0)
                assert receiver.got == []  # every pull answered NO_PERMISSION
                await admin.update_group(SubscriptionGroupConfig(group, consume_enable=True))
                await wait_until_async(lambda: len(receiver.got) >= 4, timeout=20, message="consumption after enable")
            assert sorted(receiver.bodies()) == [f"off-{i}".encode() for i in range(4)]

    asyncio.run(run())


def test_stats_connections_reset_by_time_and_messages_of_a_running_consumer(cluster: LocalCluster) -> None:
    topic, group = name("GroupsReset"), name("reset_group")

    async def run() -> None:
        await create_topic(cluster, topic, queues=2)
        receiver = Receiver()
        async with Producer(name("pg"), cluster.namesrv_addr) as producer:
            early = [await producer.send(Message(topic, f"early-{i}".encode(), keys="k-early")) for i in range(6)]
            await asyncio.sleep(0.3)
            reset_at = int(time.time() * 1000)
            await asyncio.sleep(0.3)
            late = [await producer.send(Message(topic, f"late-{i}".encode(), keys="k-late")) for i in range(6)]
        async with consumer(cluster, group, topic, receiver) as push:
            await wait_until_async(lambda: len(receiver.got) >= 12, timeout=30, message="first consumption")
            async with Admin(cluster.namesrv_addr) as admin:

                async def committed() -> bool:
                    rows = await admin.consume_stats(group, topic)
                    return sum(r["consumerOffset"] for r in rows) == 12

                await wait_until_async(committed, timeout=20, message="offsets committed")
                rows = await admin.consume_stats(group, topic)
                assert sum(r["brokerOffset"] for r in rows) == 12 and all(r["lag"] == 0 for r in rows)
                assert all(r["lastTimestamp"] > 0 for r in rows if r["consumerOffset"] > 0)

            connections = krocket_json(cluster, "consumer", "connections", group)
            assert [c["clientId"] for c in connections["connectionSet"]] == [push.client_id]  # type: ignore[index]
            assert connections["connectionSet"][0]["language"] == "PYTHON"  # type: ignore[index]
            assert topic in connections["subscriptionTable"]  # type: ignore[index]
            assert connections["consumeFromWhere"] == "CONSUME_FROM_FIRST_OFFSET"  # type: ignore[index]
            stats = krocket_json(cluster, "consumer", "stats", group, "--topic", topic)
            assert sum(r["consumerOffset"] for r in stats) == 12  # type: ignore[union-attr]

            before = len(receiver.got)
            reset = krocket_json(cluster, "consumer", "reset", group, "--topic", topic, "--to", str(reset_at))
            assert sum(r["offset"] for r in reset) == 6  # type: ignore[union-attr]
            await wait_until_async(lambda: len(receiver.got) >= before + 6, timeout=20, message="re-consumption")
            await asyncio.sleep(1.0)
            again = sorted(receiver.bodies()[before:])
            assert again == sorted(f"late-{i}".encode() for i in range(6))

        shown = krocket_json(cluster, "message", "show", early[0].offset_msg_id)
        assert shown["body"] == "early-0" and shown["topic"] == topic  # type: ignore[index]
        by_unique_id = krocket_json(cluster, "message", "show", late[1].msg_id, "--topic", topic)
        assert by_unique_id["body"] == "late-1" and by_unique_id["msgId"] == late[1].msg_id  # type: ignore[index]
        queried = krocket_json(cluster, "message", "query", "--topic", topic, "--key", "k-late")
        assert sorted(m["body"] for m in queried) == sorted(f"late-{i}" for i in range(6))  # type: ignore[union-attr]
        assert {m["offsetMsgId"] for m in queried} == {r.offset_msg_id for r in late}  # type: ignore[union-attr]

    asyncio.run(run())


def test_reset_by_time_over_two_broker_groups_is_reconsumed_once(tmp_path: Path) -> None:
    two = start_cluster(tmp_path / "two", namesrvs=1, groups=2)
    topic, group = name("GroupsTwo"), name("two_group")

    async def run() -> None:
        await create_topic(two, topic, queues=2)
        receiver = Receiver()
        async with Producer(name("pg"), two.namesrv_addr) as producer:
            for i in range(8):
                await producer.send(Message(topic, f"early-{i}".encode()))
            await asyncio.sleep(0.3)
            reset_at = int(time.time() * 1000)
            await asyncio.sleep(0.3)
            late = [await producer.send(Message(topic, f"late-{i}".encode())) for i in range(8)]
        assert {r.queue.broker_name for r in late} == {"broker-a", "broker-b"}
        async with consumer(two, group, topic, receiver):
            await wait_until_async(lambda: len(receiver.got) >= 16, timeout=30, message="first consumption")
            async with Admin(two.namesrv_addr) as admin:

                async def committed() -> bool:
                    return sum(r["consumerOffset"] for r in await admin.consume_stats(group, topic)) == 16

                await wait_until_async(committed, timeout=20, message="offsets committed")
                table = await admin.reset_offset_by_time(group, topic, reset_at)
                assert {q.broker_name for q in table} == {"broker-a", "broker-b"} and sum(table.values()) == 8
            await wait_until_async(lambda: len(receiver.got) >= 24, timeout=20, message="re-consumption")
            await asyncio.sleep(1.5)
        assert sorted(receiver.bodies()[16:]) == sorted(f"late-{i}".encode() for i in range(8))

    try:
        asyncio.run(run())
    finally:
        two.stop()
