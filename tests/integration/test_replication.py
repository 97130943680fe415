"""Replication without faults: slaves copy data and metadata, consumers are sent to slaves for old data."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from krocket.client import ConsumeStatus, Message, Producer, PullConsumer, PushConsumer

from tests.support.cluster import start_cluster, wait_until


def test_far_behind_reads_are_suggested_to_the_slave_and_the_client_follows(tmp_path: Path):
    config = tmp_path / "broker.yaml"
    # Every read counts as far behind the head; slaves copy metadata every second.
    config.write_text("accessMessageInMemoryMaxRatio: 0\nmetadataSyncPeriodMills: 1000\n")
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, slaves=1, extra_broker_args=["--config", str(config)])
    master, slave = cluster.brokers
    seen: set[str] = set()
    lock = threading.Lock()

    async def run() -> list[str]:
        async with Producer("repl-producer", cluster.namesrv_addr) as producer:
            ids = [(await producer.send(Message("Repl", f"m{i}".encode()))).msg_id for i in range(60)]
        head = master.http_json("/api/v1/broker")["maxPhyOffset"]
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: wait_until(
                lambda: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head, 10, message="replication"
            ),
        )
        async with PullConsumer("repl-pull", cluster.namesrv_addr) as pull:
            queue = (await pull.fetch_queues("Repl"))[0]
            result = await pull.pull(queue, "*", 0, 4)
            assert result.messages and result.suggest_broker_id == 1

        def listener(messages):
            with lock:
                seen.update(m.msg_id for m in messages)
            return ConsumeStatus.SUCCESS

        consumer = PushConsumer("repl-group", cluster.namesrv_addr, consume_from="FIRST", pull_batch_size=4)
        consumer.subscribe("Repl")
        consumer.register_listener(listener)
        await consumer.start()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: set(ids) <= seen, 30, message="every message")
        )
        await consumer.shutdown()
        return ids

    try:
        ids = asyncio.run(run())
        assert set(ids) <= seen
        served_by_slave = slave.http_json("/api/v1/broker")
        assert served_by_slave["replication"]["role"] == "slave"
        metrics = _metrics(slave.http_port)
        assert metrics["krocket_broker_messages_out_total"] > 0  # the slave served pulls
        # Topic configs reached the slave through its metadata sync.
        wait_until(
            lambda: "Repl" in {t["topicName"] for t in slave.http_json("/api/v1/topics")["topics"]},
            15,
            message="the topic config on the slave",
        )
    finally:
        cluster.stop()


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0]] = out.get(name.split("{")[0], 0.0) + float(value)
    return out
