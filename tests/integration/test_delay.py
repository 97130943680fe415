"""Delay levels and timers with real processes: a delayed message arrives no earlier than its delay and soon
after it, a normal one at once, a timer at its time; delivery survives ``kill -9``; a slave does not deliver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from krocket.client import ConsumeStatus, Message, Producer, PushConsumer

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until

LATE_S = 0.8  # allowed lateness on a loaded test machine (the broker scans every 20 ms)


def _cluster(tmp_path: Path, slaves: int = 0) -> LocalCluster:
    config = tmp_path / "broker.yaml"
    config.write_text('messageDelayLevel: "1s 2s 3s"\nmetadataSyncPeriodMills: 1000\n')
    return start_cluster(
        tmp_path / "c", namesrvs=1, groups=1, slaves=slaves, extra_broker_args=["--config", str(config)]
    )


class Arrivals:
    """Receive times by body, from a push consumer in its own thread's event loop."""

    def __init__(self) -> None:
        self.at: dict[bytes, list[float]] = {}
        self.lock = threading.Lock()

    def listener(self, messages):  # type: ignore[no-untyped-def]
        now = time.time()
        with self.lock:
            for m in messages:
                self.at.setdefault(m.body, []).append(now)
        return ConsumeStatus.SUCCESS

    def has(self, bodies: set[bytes]) -> bool:
        with self.lock:
            return bodies <= set(self.at)


async def _consumer(cluster: LocalCluster, topic: str, arrivals: Arrivals) -> PushConsumer:
    consumer = PushConsumer(f"{topic}-group", cluster.namesrv_addr, consume_from="FIRST")
    consumer.subscribe(topic)
    consumer.register_listener(arrivals.listener)
    await consumer.start()
    return consumer


def test_delay_levels_and_timers_arrive_on_time(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    arrivals = Arrivals()
    sent: dict[bytes, tuple[float, float]] = {}  # body -> (send start, delay)

    async def run() -> None:
        await create_topic(cluster, "Delayed", 2)
        consumer = await _consumer(cluster, "Delayed", arrivals)
        await asyncio.sleep(1.0)  # the consumer has its queues
        async with Producer("delay-producer", cluster.namesrv_addr) as producer:
            for body, msg, delay in (
                (b"normal", Message("Delayed", b"normal"), 0.0),
                (b"level-1", Message("Delayed", b"level-1", delay_level=1), 1.0),
                (b"level-2", Message("Delayed", b"level-2", delay_level=2), 2.0),
                (b"level-9", Message("Delayed", b"level-9", delay_level=9), 3.0),  # clamps to the highest (3 s)
                (b"timer-sec", Message("Delayed", b"timer-sec", delay_seconds=2), 2.0),
            ):
                sent[body] = (time.time(), delay)
                await producer.send(msg)
            at = int(time.time() * 1000) + 2500
            sent[b"timer-at"] = (at / 1000.0 - 2.5, 2.5)
            await producer.send(Message("Delayed", b"timer-at", deliver_at_ms=at))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: arrivals.has(set(sent)), 15, message="every message")
        )
        await asyncio.sleep(0.5)
        await consumer.shutdown()

    try:
        asyncio.run(run())
        for body, (start, delay) in sent.items():
            (arrived,) = arrivals.at[body]  # once
            lateness = arrived - start - delay
            print(f"{body!r}: {lateness * 1000:.0f} ms after its delay")
            assert lateness >= -0.01, f"{body!r} arrived {-lateness:.3f}s before its delay"
            assert lateness < LATE_S, f"{body!r} arrived {lateness:.3f}s after its delay"
    finally:
        cluster.stop()


def test_kill_9_with_delayed_messages_pending_loses_none_and_delivers_none_early(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    broker = cluster.brokers[0]
    arrivals = Arrivals()
    due: dict[bytes, float] = {}

    async def produce() -> None:
        await create_topic(cluster, "Crash", 2)
        async with Producer("crash-producer", cluster.namesrv_addr) as producer:
            for i in range(30):
                level = 1 + i % 3
                due[f"d{i}".encode()] = time.time() + level
                await producer.send(Message("Crash", f"d{i}".encode(), delay_level=level))
            for i in range(5):
                due[f"t{i}".encode()] = time.time() + 3
                await producer.send(Message("Crash", f"t{i}".encode(), delay_seconds=3))

    async def consume() -> None:
        consumer = await _consumer(cluster, "Crash", arrivals)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: arrivals.has(set(due)), 30, message="every delayed message")
        )
        await consumer.shutdown()

    try:
        asyncio.run(produce())
        time.sleep(1.5)  # level 1 is being delivered: some of the schedule is done, most is pending
        broker.kill()
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()
        asyncio.run(consume())
        for body, due_at in due.items():
            assert min(arrivals.at[body]) >= due_at - 0.05, f"{body!r} arrived before it was due"
    finally:
        cluster.stop()


def test_a_slave_replicates_the_schedule_but_does_not_deliver(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, slaves=1)
    master, slave = cluster.brokers

    async def produce() -> None:
        await create_topic(cluster, "Repl", 1)
        async with Producer("repl-producer", cluster.namesrv_addr) as producer:
            for i in range(5):
                await producer.send(Message("Repl", f"r{i}".encode(), delay_level=1))

    def heads() -> tuple[int, int]:
        return master.http_json("/api/v1/broker")["maxPhyOffset"], slave.http_json("/api/v1/broker")["maxPhyOffset"]

    try:
        asyncio.run(produce())
        time.sleep(2.0)  # due and delivered by the master
        wait_until(lambda: heads()[0] == heads()[1], 10, message="the slave caught up")
        time.sleep(0.5)
        # A slave that also delivered would have written its own copies: its log would run past the master's.
        master_head, slave_head = heads()
        assert master_head == slave_head
        # The slave copies the master's delivery progress (GET_ALL_DELAY_OFFSET) to resume from it as a master.
        slave_config = Path(slave.args[slave.args.index("--store-dir") + 1]) / "config" / "delayOffset.json"
        wait_until(
            lambda: slave_config.exists() and json.loads(slave_config.read_text())["offsetTable"].get("1") == 5,
            10,
            message="the delivery progress on the slave",
        )
    finally:
        cluster.stop()


def test_a_slave_restarted_as_master_continues_the_delivery(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text('messageDelayLevel: "1s 2s 6s"\nmetadataSyncPeriodMills: 500\n')
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, slaves=1, extra_broker_args=["--config", str(config)])
    master, slave = cluster.brokers
    arrivals = Arrivals()
    due: dict[bytes, float] = {}

    async def produce() -> None:
        await create_topic(cluster, "Promote", 1)
        async with Producer("promote-producer", cluster.namesrv_addr) as producer:
            for level, prefix in ((1, "soon"), (3, "later")):
                for i in range(5):
                    body = f"{prefix}-{i}".encode()
                    due[body] = time.time() + (1 if level == 1 else 6)
                    await producer.send(Message("Promote", body, delay_level=level))

    async def consume() -> None:
        consumer = await _consumer(cluster, "Promote", arrivals)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: arrivals.has(set(due)), 30, message="every delayed message")
        )
        await asyncio.sleep(1.0)
        await consumer.shutdown()

    slave_offsets = Path(slave.args[slave.args.index("--store-dir") + 1]) / "config" / "delayOffset.json"
    try:
        asyncio.run(produce())
        # Level 1 is delivered by the master and its progress reaches the slave; level 3 is still pending.
        wait_until(
            lambda: slave_offsets.exists() and json.loads(slave_offsets.read_text())["offsetTable"].get("1") == 5,
            5.0,
            message="the master's delivery progress on the slave",
        )
        master.kill()
        assert time.time() < min(d for b, d in due.items() if b.startswith(b"later")), "level 3 was due already"
        slave.stop()
        slave.args[slave.args.index("--broker-id") + 1] = "0"
        slave.args[slave.args.index("--role") + 1] = "ASYNC_MASTER"
        slave.start()
        slave.wait_ports()
        asyncio.run(consume())
        for body, due_at in due.items():
            assert min(arrivals.at[body]) >= due_at - 0.05, f"{body!r} arrived before it was due"
        assert all(len(arrivals.at[f"soon-{i}".encode()]) == 1 for i in range(5))  # not delivered again
    finally:
        cluster.stop()
