"""Pop state survives ``kill -9`` of the broker (SYNC_FLUSH): the official 5.x SimpleConsumer receives ten messages
and acks five; after the crash and a restart the other five, and only they, come back once their invisible time
is up, with delivery attempt 2."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.cluster import create_topic, start_cluster
from tests.support.rmq5 import run_sdk


def test_acked_stay_acked_and_unacked_come_back_after_kill_9(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, flush="sync", auto_create=False)
    try:
        broker = cluster.brokers[0]
        endpoint = ("--endpoints", f"127.0.0.1:{broker.grpc_port}")
        topic, group = "PopCrash", "pop-crash"
        asyncio.run(create_topic(cluster, topic, queues=4))
        sent = run_sdk(tmp_path / "p", *endpoint, "produce", "--topic", topic, "--count", "10")
        assert len(sent) == 10 and not [s for s in sent if "error" in s], sent
        first = run_sdk(tmp_path / "c", *endpoint, "simple", "--topic", topic, "--group", group, "--expect", "10",
                        "--ack-even", "--invisible", "10")  # fmt: skip
        first = [line for line in first if "got" in line]
        acked = sorted(line["id"] for line in first if line.get("acked"))
        unacked = sorted(line["id"] for line in first if not line.get("acked"))
        assert len(first) == 10 and len(acked) == 5 and len(unacked) == 5, first

        broker.kill()
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()

        again = run_sdk(tmp_path / "c", *endpoint, "simple", "--topic", topic, "--group", group, "--expect", "5",
                        "--timeout", "40", timeout=90)  # fmt: skip
        again = [line for line in again if "got" in line]
        assert sorted(line["id"] for line in again) == unacked  # nothing acked came back, nothing unacked lost
        assert all(line["attempt"] == 2 and line["acked"] for line in again), again
        assert "pop log replayed" in broker.tail_log(200)
        late = run_sdk(tmp_path / "c", *endpoint, "simple", "--topic", topic, "--group", group, "--timeout", "4")
        assert [line for line in late if "got" in line] == []
    finally:
        cluster.stop()
