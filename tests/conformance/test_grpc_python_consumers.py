"""The official RocketMQ 5.x Python SDK's consumers (``rocketmq-python-client==5.1.2``, unmodified, in its own
process) against krocket's brokers over gRPC, no proxy: SimpleConsumer receive, ack, invisible-time expiry and
redelivery, changed invisible time, a second ack refused; PushConsumer with a tag filter, retries through the
server's retry policy and the dead-letter queue after the group's max attempts; FIFO groups; messages from 4.x
producers (the RocketMQ C++ client and krocket.client) received by a 5.x consumer with ids, tags, keys and
properties intact."""

from __future__ import annotations

import asyncio
from pathlib import Path

from krocket.client import Admin, Message, Producer
from krocket.common.subscription_group import SubscriptionGroupConfig

from tests.conformance.test_rocketmq_cpp_client import read_all, run_driver
from tests.support.cluster import LocalCluster, create_topic
from tests.support.rmq5 import run_sdk


def sdk(cluster: LocalCluster, home: Path, *args: str, timeout: float = 90) -> list[dict]:
    return run_sdk(home, "--endpoints", f"127.0.0.1:{cluster.brokers[0].grpc_port}", *args, timeout=timeout)


def produce(cluster: LocalCluster, home: Path, topic: str, count: int, *extra: str) -> list[dict]:
    lines = sdk(cluster, home, "produce", "--topic", topic, "--count", str(count), *extra)
    assert not [line for line in lines if "error" in line], lines
    return [line for line in lines if "sent" in line]


def deliveries(lines: list[dict]) -> list[dict]:
    assert not [line for line in lines if "receive_error" in line], lines
    return [line for line in lines if "got" in line]


def test_simple_consumer_receives_acks_and_gets_nothing_twice(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic, group = "V5Simple", "v5-simple"
    asyncio.run(create_topic(grpc_cluster, topic, queues=4))
    sent = produce(grpc_cluster, tmp_path / "p", topic, 10, "--tag", "TagA", "--keys", "k", "--prop", "color=blue")
    got = deliveries(sdk(grpc_cluster, tmp_path / "c", "simple", "--topic", topic, "--group", group, "--expect", "10",
                         "--ack-twice"))  # fmt: skip
    assert sorted((g["got"], g["id"]) for g in got) == sorted((s["sent"], s["id"]) for s in sent)
    for g in got:
        assert g["attempt"] == 1 and g["acked"] and g["tag"] == "TagA" and g["props"]["color"] == "blue"
        assert g["keys"] == [f"k-{g['props']['seq']}"]
        assert "INVALID_RECEIPT_HANDLE" in g["second_ack"] or "40013" in g["second_ack"], g["second_ack"]
    again = deliveries(sdk(grpc_cluster, tmp_path / "c", "simple", "--topic", topic, "--group", group, "--expect", "1",
                           "--timeout", "4"))  # fmt: skip
    assert again == []  # all acked: nothing comes back


def test_unacked_messages_come_back_after_their_invisible_time_with_the_next_attempt(
    grpc_cluster: LocalCluster, tmp_path: Path
) -> None:
    topic, group = "V5Redeliver", "v5-redeliver"
    asyncio.run(create_topic(grpc_cluster, topic, queues=2))
    sent = produce(grpc_cluster, tmp_path / "p", topic, 3)
    got = deliveries(
        sdk(grpc_cluster, tmp_path / "c", "simple", "--topic", topic, "--group", group, "--expect", "6",
            "--ack-from-attempt", "2", "--change-to", "15", "--timeout", "60")
    )  # fmt: skip
    firsts = [g for g in got if g["attempt"] == 1]
    seconds = [g for g in got if g["attempt"] == 2]
    assert sorted(g["id"] for g in firsts) == sorted(g["id"] for g in seconds) == sorted(s["id"] for s in sent)
    by_id = {g["id"]: g for g in firsts}
    for g in seconds:
        assert g["at_ms"] - by_id[g["id"]]["at_ms"] >= 9_500  # not before its 10 s invisible time
        assert g["acked"] and g["changed"]  # acked with the handle the change gave
    late = sdk(grpc_cluster, tmp_path / "c", "simple", "--topic", topic, "--group", group, "--timeout", "4")
    assert deliveries(late) == []


def test_push_consumer_with_a_tag_filter_retries_then_dead_letters(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic, group = "V5Push", "v5-push"
    asyncio.run(create_topic(grpc_cluster, topic, queues=4))

    async def one_retry() -> None:
        async with Admin(grpc_cluster.namesrv_addr) as admin:
            await admin.create_group(SubscriptionGroupConfig(group, retry_max_times=1))

    asyncio.run(one_retry())
    wanted = produce(grpc_cluster, tmp_path / "p", topic, 4, "--tag", "Keep", "--prefix", "keep")
    doomed = produce(grpc_cluster, tmp_path / "p", topic, 2, "--tag", "Keep", "--prefix", "dead")
    produce(grpc_cluster, tmp_path / "p", topic, 4, "--tag", "Skip", "--prefix", "skip")
    lines = sdk(grpc_cluster, tmp_path / "c", "push", "--topic", topic, "--group", group, "--tag", "Keep",
                "--expect", "4", "--fail-times", "1", "--always-fail", "dead", "--linger", "6",
                "--timeout", "60")  # fmt: skip
    got = deliveries(lines)
    assert all(g["tag"] == "Keep" for g in got)  # the filter holds back the Skip messages
    assert sorted(g["got"] for g in got if g["ok"]) == sorted(s["sent"] for s in wanted)
    attempts = {(g["got"], g["attempt"]) for g in got}
    for s in wanted + doomed:  # the first delivery failed, the server's retry came with attempt 2
        assert (s["sent"], 1) in attempts and (s["sent"], 2) in attempts, (s["sent"], sorted(attempts))
    assert not [g for g in got if g["attempt"] > 2]  # max attempts 2 (retryMaxTimes 1)
    dead = asyncio.run(read_all(grpc_cluster.namesrv_addr, f"%DLQ%{group}"))
    assert sorted(m.body.decode() for m in dead) == sorted(s["sent"] for s in doomed)
    assert {m.properties["UNIQ_KEY"] for m in dead} == {s["id"] for s in doomed}


def test_fifo_group_consumes_each_message_group_in_order_and_dead_letters_a_poison_message(
    grpc_cluster: LocalCluster, tmp_path: Path
) -> None:
    topic, group = "V5FifoConsume", "v5-fifo"
    asyncio.run(create_topic(grpc_cluster, topic, queues=2))

    async def fifo_group_and_topic() -> None:
        async with Admin(grpc_cluster.namesrv_addr) as admin:
            await admin.update_topic(topic, attributes={"message.type": "FIFO"})
            await admin.create_group(SubscriptionGroupConfig(group, consume_message_orderly=True, retry_max_times=1))

    asyncio.run(fifo_group_and_topic())
    sent: dict[str, list[str]] = {}
    for key in ("ga", "gb", "gc"):
        sent[key] = [
            s["sent"] for s in produce(grpc_cluster, tmp_path / "p", topic, 8, "--group", key, "--prefix", key)
        ]
    lines = sdk(grpc_cluster, tmp_path / "c", "push", "--topic", topic, "--group", group, "--expect", "23",
                "--always-fail", "gb-3", "--linger", "2", "--timeout", "60")  # fmt: skip
    got = deliveries(lines)
    for key, bodies in sent.items():
        consumed = [g["got"] for g in got if g["group"] == key and g["ok"]]
        expected = [b for b in bodies if b != "gb-3"]
        assert consumed == expected, (key, consumed)  # in send order, once each, the poison message skipped
    poison = [g for g in got if g["got"] == "gb-3"]
    assert len(poison) == 2  # max attempts 2: retried in place by the client (the SDK keeps attempt 1), given up
    dead = asyncio.run(read_all(grpc_cluster.namesrv_addr, f"%DLQ%{group}"))
    assert [m.body.decode() for m in dead] == ["gb-3"]


def test_a_5x_consumer_receives_what_4x_producers_sent_intact(grpc_cluster: LocalCluster, tmp_path: Path) -> None:
    topic, group = "V5From4x", "v5-from-4x"
    asyncio.run(create_topic(grpc_cluster, topic, queues=4))
    namesrv = grpc_cluster.namesrv_addr.split(";")[0]
    driven = run_driver(tmp_path, "produce", "--namesrv", namesrv, "--topic", topic, "--count", "4",
                        "--prefix", "cpp", "--tag", "FromCpp", "--keys", "ck")  # fmt: skip
    cpp = [line for line in driven if "sent" in line]
    assert [line["status"] for line in cpp] == [0] * 4  # SEND_OK

    async def send_with_krocket() -> list[str]:
        async with Producer("v5-from-4x-producer", namesrv) as producer:
            sent = []
            for i in range(2):
                msg = Message(topic, f"kr-{i}".encode(), tags="FromKrocket", keys=[f"kk-{i}", "shared"])
                msg.properties.update({"seq": str(i), "color": "green"})
                sent.append((await producer.send(msg)).msg_id)
            return sent

    krocket_ids = asyncio.run(send_with_krocket())
    got = deliveries(sdk(grpc_cluster, tmp_path / "c", "simple", "--topic", topic, "--group", group, "--expect", "6",
                         "--timeout", "40"))  # fmt: skip
    by_body = {g["got"]: g for g in got}
    assert sorted(by_body) == ["cpp-0", "cpp-1", "cpp-2", "cpp-3", "kr-0", "kr-1"], got
    for i, line in enumerate(cpp):
        g = by_body[f"cpp-{i}"]  # the 5.x message id is the 4.x client's message id (UNIQ_KEY)
        assert (g["id"], g["tag"], g["keys"], g["props"]["seq"]) == (line["id"], "FromCpp", [f"ck-{i}"], str(i))
    for i, msg_id in enumerate(krocket_ids):
        g = by_body[f"kr-{i}"]
        assert (g["id"], g["tag"], sorted(g["keys"])) == (msg_id, "FromKrocket", sorted([f"kk-{i}", "shared"]))
        assert (g["props"]["seq"], g["props"]["color"]) == (str(i), "green")
    assert all(g["attempt"] == 1 and g["acked"] for g in got)
