"""Conformance with an unmodified RocketMQ client: ``rocketmq==0.4.4`` (the C++ core, version 63, JSON headers).

The C++ client runs in its own process (``rmq_driver.py``); krocket's servers run as real processes too.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from krocket.client import Credentials, Message, Producer, PullConsumer
from krocket.client.types import PullStatus
from krocket.common.errors import TopicNotExistError

pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")

DRIVER = Path(__file__).with_name("rmq_driver.py")


def run_driver(tmp_path: Path, *args: str, timeout: float = 60.0) -> list[dict]:
    home = tmp_path / "cpp-home"  # the C++ client writes its logs under $HOME/logs
    home.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *args],
        capture_output=True,
        timeout=timeout,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("done"), f"driver failed (rc {proc.returncode}): {proc.stderr.decode()[-2000:]}"
    return lines[:-1]


async def read_all(namesrv: str, topic: str, expression: str = "*", credentials: Credentials | None = None) -> list:
    consumer = PullConsumer("conformance-reader", namesrv, credentials=credentials)
    await consumer.start()
    try:
        out = []
        queues = []
        for _ in range(100):  # an auto-created topic reaches the name servers with the broker's next registration
            try:
                queues = await consumer.fetch_queues(topic)
                break
            except TopicNotExistError:
                await asyncio.sleep(0.1)
        for queue in queues:
            offset = 0
            for _ in range(1000):
                result = await consumer.pull(queue, expression, offset, 32)
                if result.status != PullStatus.FOUND:
                    break
                out += result.messages
                offset = result.next_begin_offset
        return out
    finally:
        await consumer.shutdown()


async def produce(namesrv: str, topic: str, bodies_tags: list[tuple[str, str | None]]) -> list[str]:
    producer = Producer("conformance-producer", namesrv)
    await producer.start()
    try:
        return [
            (await producer.send(Message(topic, body.encode(), tags=tag, keys=[f"k-{body}"]))).msg_id
            for body, tag in bodies_tags
        ]
    finally:
        await producer.shutdown()


def test_cpp_produces_krocket_consumes(cluster, tmp_path):
    ns = cluster.namesrv_addr.split(";")[0]
    sent = run_driver(
        tmp_path,
        "produce",
        "--namesrv",
        ns,
        "--topic",
        "CppToKrocket",
        "--count",
        "20",
        "--tag",
        "TagA",
        "--keys",
        "key",
    )
    assert len(sent) == 20 and all(s["status"] == 0 for s in sent)
    got = asyncio.run(read_all(cluster.namesrv_addr, "CppToKrocket"))
    assert sorted(m.body.decode() for m in got) == sorted(s["sent"] for s in sent)
    assert {m.msg_id for m in got} == {s["id"] for s in sent}
    by_body = {m.body.decode(): m for m in got}
    assert by_body["cpp-3"].tags == "TagA" and by_body["cpp-3"].keys == ["key-3"]
    assert by_body["cpp-3"].properties["seq"] == "3"


def test_krocket_produces_cpp_push_consumer_consumes(cluster, tmp_path):
    ids = asyncio.run(produce(cluster.namesrv_addr, "KrocketToCpp", [(f"kr-{i}", "TagA") for i in range(20)]))
    got = run_driver(
        tmp_path,
        "push",
        "--namesrv",
        cluster.namesrv_addr,
        "--topic",
        "KrocketToCpp",
        "--group",
        "cpp-consumers",
        "--expect",
        "20",
        "--timeout",
        "40",
    )
    assert sorted(g["got"] for g in got) == sorted(f"kr-{i}" for i in range(20))
    assert {g["id"] for g in got} == set(ids)
    assert all(g["tags"] == "TagA" for g in got)


def test_cpp_push_consumer_with_tag_filter_gets_exactly_the_matching_messages(cluster, tmp_path):
    plan = [(f"m-{i}", ("TagA", "TagB", "TagC")[i % 3]) for i in range(30)]
    asyncio.run(produce(cluster.namesrv_addr, "TagFilter", plan))
    got = run_driver(
        tmp_path,
        "push",
        "--namesrv",
        cluster.namesrv_addr,
        "--topic",
        "TagFilter",
        "--group",
        "cpp-tag-consumers",
        "--expr",
        "TagA || TagC",
        "--expect",
        "20",
        "--timeout",
        "40",
        "--linger",
        "2",
    )
    assert sorted(g["got"] for g in got) == sorted(b for b, t in plan if t in ("TagA", "TagC"))


def test_cpp_send_orderly_lands_in_the_selected_queue(cluster, tmp_path):
    for arg in (0, 1, 5):
        sent = run_driver(
            tmp_path,
            "produce",
            "--namesrv",
            cluster.namesrv_addr,
            "--topic",
            "Orderly",
            "--count",
            "8",
            "--orderly-arg",
            str(arg),
            "--prefix",
            f"arg{arg}",
        )
        assert all(s["status"] == 0 for s in sent)
    got = asyncio.run(read_all(cluster.namesrv_addr, "Orderly"))
    queues: dict[str, set] = defaultdict(set)
    order: dict[str, list[int]] = defaultdict(list)
    for m in sorted(got, key=lambda m: (m.queue_id, m.queue_offset)):
        prefix, seq = m.body.decode().split("-")
        queues[prefix].add((m.store_host, m.queue_id))
        order[prefix].append(int(seq))
    assert set(queues) == {"arg0", "arg1", "arg5"}
    assert all(len(q) == 1 for q in queues.values()), queues  # every message of one key in one queue
    assert all(seqs == sorted(seqs) for seqs in order.values())  # in send order
    assert queues["arg0"] != queues["arg1"]


def test_cpp_batch_send(cluster, tmp_path):
    sent = run_driver(
        tmp_path,
        "produce",
        "--namesrv",
        cluster.namesrv_addr,
        "--topic",
        "CppBatch",
        "--count",
        "10",
        "--batch",
        "--prefix",
        "batch",
    )
    assert sent[0]["status"] == 0
    got = asyncio.run(read_all(cluster.namesrv_addr, "CppBatch"))
    assert sorted(m.body.decode() for m in got) == sorted(f"batch-{i}" for i in range(10))
    assert len({(m.store_host, m.queue_id) for m in got}) == 1  # one batch, one queue
