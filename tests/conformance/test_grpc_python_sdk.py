"""The official RocketMQ 5.x Python SDK (``rocketmq-python-client==5.1.2``, unmodified, in its own process) against
krocket's brokers over gRPC, with no proxy: it finds every broker group from one broker's endpoint and sends
NORMAL, FIFO, DELAY and TRANSACTION messages; 4.x clients (krocket.client, and the RocketMQ C++ client) read
exactly what it sent: body, the 5.x message id as ``UNIQ_KEY``, tag, keys and properties."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

from krocket.client import Admin
from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE

from tests.conformance.test_rocketmq_cpp_client import read_all, run_driver
from tests.support.cluster import LocalCluster, create_topic, wait_until
from tests.support.rmq5 import run_sdk, sdk_log


def grpc_endpoint(cluster: LocalCluster, index: int = 0) -> str:
    broker = cluster.brokers[index]
    assert broker.grpc_port, f"{broker.name} serves no gRPC port"
    return f"127.0.0.1:{broker.grpc_port}"


def typed_topic(cluster: LocalCluster, topic: str, message_type: str, queues: int = 4) -> None:
    async def create() -> None:
        await create_topic(cluster, topic, queues=queues)
        async with Admin(cluster.namesrv_addr) as admin:
            await admin.update_topic(topic, attributes={MESSAGE_TYPE_ATTRIBUTE: message_type})

    asyncio.run(create())


def sdk(cluster: LocalCluster, home: Path, *args: str, timeout: float = 60) -> list[dict]:
    """The SDK given one broker's endpoint only: the route names every group's master."""
    return run_sdk(home, "--endpoints", grpc_endpoint(cluster), *args, timeout=timeout)


def sent_ok(lines: list[dict]) -> list[dict]:
    assert not [line for line in lines if "error" in line], lines
    return [line for line in lines if "sent" in line]


def test_normal_messages_reach_4x_consumers_intact(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic, count = "V5Normal", 12
    asyncio.run(create_topic(grpc_cluster, topic, queues=4))
    sent = sent_ok(
        sdk(grpc_cluster, tmp_path / "sdk", "produce", "--topic", topic, "--count", str(count), "--tag", "TagA",
            "--keys", "order", "--prop", "color=red")
    )  # fmt: skip
    assert len(sent) == count and len({s["id"] for s in sent}) == count
    assert {s["broker"] for s in sent} == {"broker-a", "broker-b"}  # both groups from one endpoint
    got = asyncio.run(read_all(grpc_cluster.namesrv_addr, topic))
    by_body = {m.body.decode(): m for m in got}
    assert sorted(by_body) == sorted(s["sent"] for s in sent)
    for s in sent:
        m, seq = by_body[s["sent"]], s["sent"].rsplit("-", 1)[1]
        assert m.properties["UNIQ_KEY"] == s["id"] == m.msg_id  # the 5.x id is the 4.x unique key
        assert m.tags == "TagA" and m.keys == [f"order-{seq}"]
        assert m.properties["color"] == "red" and m.properties["seq"] == seq
        assert m.queue_offset == s["offset"]


def test_the_rocketmq_cpp_client_consumes_what_a_5x_producer_sent(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic = "V5ToCpp"
    asyncio.run(create_topic(grpc_cluster, topic, queues=2))
    sent = sent_ok(sdk(grpc_cluster, tmp_path / "sdk", "produce", "--topic", topic, "--count", "6", "--tag", "T1"))
    got = run_driver(
        tmp_path, "push", "--namesrv", grpc_cluster.namesrv_addr, "--topic", topic, "--group", "cpp-from-v5",
        "--expect", "6", "--timeout", "60", "--linger", "1", timeout=90,
    )  # fmt: skip
    assert sorted((g["got"], g["id"], g["tags"]) for g in got) == sorted((s["sent"], s["id"], "T1") for s in sent)


def test_fifo_messages_of_a_group_land_on_one_queue_in_send_order(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic = "V5Fifo"
    typed_topic(grpc_cluster, topic, "FIFO")
    sent: dict[str, list[str]] = {}
    for group in ("g1", "g2", "g3"):
        lines = sent_ok(
            sdk(grpc_cluster, tmp_path / "sdk", "produce", "--topic", topic, "--count", "10", "--group", group,
                "--prefix", group)
        )  # fmt: skip
        sent[group] = [s["sent"] for s in lines]
    by_group: dict[str, list] = defaultdict(list)
    for m in asyncio.run(read_all(grpc_cluster.namesrv_addr, topic)):
        by_group[m.properties["__SHARDINGKEY"]].append(m)
    for group, bodies in sent.items():
        messages = by_group[group]
        assert len({(m.store_host, m.queue_id) for m in messages}) == 1, f"{group} spread over queues"
        assert [m.body.decode() for m in sorted(messages, key=lambda m: m.queue_offset)] == bodies


def test_a_normal_message_to_a_fifo_topic_is_refused_by_the_type_check(
    grpc_cluster: LocalCluster, tmp_path: Path
) -> None:
    topic = "V5FifoOnly"
    typed_topic(grpc_cluster, topic, "FIFO")
    lines = sdk(grpc_cluster, tmp_path / "sdk", "produce", "--topic", topic, "--count", "1")
    assert len(lines) == 1 and "error" in lines[0] and "FIFO" in lines[0]["error"], lines
    assert asyncio.run(read_all(grpc_cluster.namesrv_addr, topic)) == []


def test_delay_messages_are_delivered_at_their_time_not_before(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic = "V5Delay"
    typed_topic(grpc_cluster, topic, "DELAY")
    sent = sent_ok(sdk(grpc_cluster, tmp_path / "sdk", "produce", "--topic", topic, "--count", "3", "--delay-s", "3"))
    assert asyncio.run(read_all(grpc_cluster.namesrv_addr, topic)) == []  # still waiting
    got: list = []

    def delivered() -> bool:
        got[:] = asyncio.run(read_all(grpc_cluster.namesrv_addr, topic))
        return len(got) == 3

    wait_until(delivered, timeout=20, message="the delayed messages")
    for m in got:  # the delivered copy is stored at its time (the waiting marks are gone, as in RocketMQ)
        assert m.store_timestamp >= m.born_timestamp + 3000 - 50, "delivered before its time"
    assert sorted(m.msg_id for m in got) == sorted(s["id"] for s in sent)


def test_transactions_commit_roll_back_and_an_orphan_is_checked_back(
    grpc_cluster: LocalCluster, tmp_path: Path
) -> None:
    topic = "V5Tx"
    typed_topic(grpc_cluster, topic, "TRANSACTION")
    home = tmp_path / "sdk"
    committed = sent_ok(
        sdk(grpc_cluster, home, "produce", "--topic", topic, "--prefix", "commit", "--transaction", "commit")
    )
    sent_ok(sdk(grpc_cluster, home, "produce", "--topic", topic, "--prefix", "rollback", "--transaction", "rollback"))
    orphan = sent_ok(
        sdk(grpc_cluster, home, "produce", "--topic", topic, "--prefix", "orphan", "--transaction", "orphan")
    )
    assert orphan[0]["transaction_id"] == orphan[0]["id"]
    # The producer that sent the orphan is gone; another producer of the topic is asked, and commits.
    checks = sdk(grpc_cluster, home, "check", "--topic", topic, "--expect", "1", "--timeout", "30", timeout=60)
    assert [c["checked"] for c in checks] == ["orphan-0"] and checks[0]["id"] == orphan[0]["id"]
    got: list = []

    def settled() -> bool:
        got[:] = asyncio.run(read_all(grpc_cluster.namesrv_addr, topic))
        return len(got) >= 2

    wait_until(settled, timeout=20, message="the committed and the checked-back messages")
    time.sleep(1.0)  # a rolled-back message would have shown by now
    got = asyncio.run(read_all(grpc_cluster.namesrv_addr, topic))
    assert sorted(m.body for m in got) == [b"commit-0", b"orphan-0"]
    assert {m.msg_id for m in got} == {committed[0]["id"], orphan[0]["id"]}


def test_a_topic_no_broker_carries_gets_topic_not_found_and_is_not_created(
    grpc_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The SDK starts (5.1.2 only logs a failed route query at startup) but every send fails; the route query was
    answered TOPIC_NOT_FOUND (40402) with the reason, and it did not create the topic."""
    home = tmp_path / "sdk"
    lines = sdk(grpc_cluster, home, "produce", "--topic", "NoSuchV5", "--count", "2")
    assert len(lines) == 2 and all("NoSuchV5" in line.get("error", "") for line in lines), lines
    log = sdk_log(home)
    assert "40402, topic NoSuchV5 does not exist" in log, log[-2000:]

    async def listed() -> list[str]:
        async with Admin(grpc_cluster.namesrv_addr) as admin:
            return await admin.list_topics()

    assert "NoSuchV5" not in asyncio.run(listed()), "a 5.x route query created the topic"
