"""A clustering consumer group keeps consuming through the loss and the return of a master."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from krocket.client import ConsumeStatus, Message, Producer, PushConsumer

from tests.support.cluster import start_cluster, wait_until


def test_consumer_group_reads_from_the_slave_while_the_master_is_down(tmp_path: Path):
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, slaves=1, replication="sync", flush="sync")
    master, slave = cluster.brokers
    seen: set[str] = set()
    lock = threading.Lock()

    async def run() -> tuple[list[str], list[str]]:
        producer = Producer("failover-producer", cluster.namesrv_addr)
        await producer.start()
        before = [(await producer.send(Message("Failover", f"before-{i}".encode()))).msg_id for i in range(40)]

        def listener(messages):
            with lock:
                seen.update(m.msg_id for m in messages)
            return ConsumeStatus.SUCCESS

        consumer = PushConsumer("failover-group", cluster.namesrv_addr, consume_from="FIRST")
        consumer.subscribe("Failover")
        consumer.register_listener(listener)
        await consumer.start()
        loop = asyncio.get_running_loop()

        async def until(pred, what, timeout=40.0):
            await loop.run_in_executor(None, lambda: wait_until(pred, timeout, 0.1, what))

        await until(lambda: len(seen) >= 10, "the first messages")
        master.kill()  # mid-stream: some of `before` are still unconsumed
        await until(lambda: set(before) <= seen, "every message before the crash, read from the slave")
        master.start()
        await loop.run_in_executor(None, master.wait_ports)
        await loop.run_in_executor(None, cluster.wait_registered)
        after = []
        for i in range(40):
            for _ in range(50):  # the producer's route learns the master back
                try:
                    after.append((await producer.send(Message("Failover", f"after-{i}".encode()))).msg_id)
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        await until(lambda: set(after) <= seen, "every message after the master returned")
        await consumer.shutdown()
        await producer.shutdown()
        return before, after

    try:
        before, after = asyncio.run(run())
    finally:
        cluster.stop()
    assert len(after) == 40
    assert set(before) | set(after) <= seen  # nothing skipped
