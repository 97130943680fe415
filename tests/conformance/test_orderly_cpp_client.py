"""The unmodified RocketMQ C++ client's orderly push consumer (``PushConsumer(group, orderly=True)``) against krocket:
it consumes only the queues it has locked with LOCK_BATCH_MQ (41), so it receives nothing from a broker that does not
serve it. Every ``send_orderly`` message must arrive, in send order per queue."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conformance.test_rocketmq_cpp_client import run_driver
from tests.support.cluster import create_topic

pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")

KEYS = 3
PER_KEY = 15


def test_cpp_orderly_push_consumer_gets_every_send_orderly_message_in_order(cluster, tmp_path: Path) -> None:
    topic = "OrderlyCpp"
    asyncio.run(create_topic(cluster, topic, queues=4))
    sent: dict[str, list[str]] = {}
    sends: dict[str, list[tuple[str, int, int]]] = {}  # (body, offset, attempts) of each send, for a failure
    for key in range(KEYS):  # the C++ selector puts arg % queue count: one queue per key
        prefix = f"key{key}"
        out = run_driver(
            tmp_path,
            "produce",
            "--namesrv",
            cluster.namesrv_addr,
            "--topic",
            topic,
            "--count",
            str(PER_KEY),
            "--prefix",
            prefix,
            "--orderly-arg",
            str(key),
        )
        assert all(s["status"] == 0 for s in out)
        sent[prefix] = [s["sent"] for s in out]
        sends[prefix] = [(s["sent"], s["offset"], s["attempts"]) for s in out]

    got = run_driver(
        tmp_path,
        "push",
        "--namesrv",
        cluster.namesrv_addr,
        "--topic",
        topic,
        "--group",
        "cpp-orderly",
        "--orderly",
        "--expect",
        str(KEYS * PER_KEY),
        "--timeout",
        "60",
        "--linger",
        "2",
        timeout=90,
    )
    by_key: dict[str, list[str]] = defaultdict(list)
    queues: dict[str, set[tuple[str, int]]] = defaultdict(set)
    seen: dict[str, list[tuple[str, int, int]]] = defaultdict(list)  # what each delivery said, for a failure
    for g in got:
        prefix = g["got"].split("-")[0]
        by_key[prefix].append(g["got"])
        queues[prefix].add((g["topic"], g["queue_id"]))
        seen[prefix].append((g["got"], g["queue_id"], g["queue_offset"]))
    for prefix, bodies in sent.items():  # every message once, in send order per key
        assert by_key.get(prefix) == bodies, (
            f"{prefix}: sent (body, offset, attempts) {sends[prefix]}, delivered (body, queue, offset) {seen[prefix]}"
        )
    assert dict(by_key) == sent
    assert all(len(q) == 1 for q in queues.values())  # each key on one queue
