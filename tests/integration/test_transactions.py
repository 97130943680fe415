"""Transactions with real processes: commit delivers, rollback never does, unknown outcomes are resolved by the
broker's check-back (to a live producer of the group, a restarted one included), half messages survive a broker
``kill -9``, and one never decided ends in TRANS_CHECK_MAX_TIME_TOPIC after transactionCheckMax checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from krocket.client import (
    ConsumeStatus,
    Message,
    MessageExt,
    PushConsumer,
    SyncTransactionProducer,
    TransactionProducer,
    TransactionState,
)
from krocket.common.transaction import CHECK_MAX_TIME_TOPIC

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until

COMMIT, ROLLBACK, UNKNOWN = TransactionState.COMMIT, TransactionState.ROLLBACK, TransactionState.UNKNOWN
REPO = Path(__file__).resolve().parents[2]

# A producer that sends one half message and is kill -9'd by its local transaction, before deciding.
CHILD = """
import asyncio, os, signal, sys
from krocket.client import Message, TransactionProducer, TransactionState

def die(msg, arg):
    os.kill(os.getpid(), signal.SIGKILL)
    return TransactionState.COMMIT

async def main():
    producer = TransactionProducer(sys.argv[2], sys.argv[1], local_transaction=die,
                                   checker=lambda m: TransactionState.COMMIT)
    await producer.start()
    await producer.send_message_in_transaction(Message(sys.argv[3], sys.argv[4].encode()))

asyncio.run(main())
"""


def _cluster(tmp_path: Path, check_max: int = 8) -> LocalCluster:
    config = tmp_path / "broker.yaml"
    config.write_text(
        f"transactionTimeOut: 1000\ntransactionCheckInterval: 500\ntransactionCheckMax: {check_max}\n"
        "flushConsumerOffsetInterval: 500\n"
    )
    return start_cluster(tmp_path / "c", namesrvs=1, groups=1, extra_broker_args=["--config", str(config)])


class Received:
    """Bodies a push consumer got (with how often), from its own loop."""

    def __init__(self) -> None:
        self.count: dict[bytes, int] = {}
        self.lock = threading.Lock()

    def listener(self, messages: list[MessageExt]) -> ConsumeStatus:
        with self.lock:
            for m in messages:
                self.count[m.body] = self.count.get(m.body, 0) + 1
        return ConsumeStatus.SUCCESS

    def has(self, bodies: set[bytes]) -> bool:
        with self.lock:
            return bodies <= set(self.count)

    def snapshot(self) -> dict[bytes, int]:
        with self.lock:
            return dict(self.count)


async def _consumer(cluster: LocalCluster, topic: str, received: Received) -> PushConsumer:
    consumer = PushConsumer(f"{topic}-consumers", cluster.namesrv_addr, consume_from="FIRST")
    consumer.subscribe(topic)
    consumer.register_listener(received.listener)
    await consumer.start()
    return consumer


def _by_body(table: dict[bytes, TransactionState]) -> Callable[..., TransactionState]:
    return lambda msg, *_: table.get(msg.body, UNKNOWN)


async def _wait(received: Received, bodies: set[bytes], timeout: float) -> None:
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: wait_until(lambda: received.has(bodies), timeout, message=f"{sorted(bodies)}")
    )


def test_commit_delivers_rollback_never_and_check_back_resolves_unknown(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    received = Received()
    local = {b"commit": COMMIT, b"rollback": ROLLBACK}
    checked = {b"unknown-commit": COMMIT, b"unknown-rollback": ROLLBACK}
    checks: list[bytes] = []

    def checker(msg: MessageExt) -> TransactionState:
        checks.append(msg.body)
        assert msg.topic == "Tx" and msg.properties["PGROUP"] == "tx-producers"
        return checked.get(msg.body, UNKNOWN)

    async def run() -> dict[bytes, str]:
        await create_topic(cluster, "Tx", 2)
        consumer = await _consumer(cluster, "Tx", received)
        producer = TransactionProducer(
            "tx-producers", cluster.namesrv_addr, local_transaction=_by_body(local), checker=checker, topics=["Tx"]
        )
        await producer.start()
        ids = {}
        try:
            for body in (b"commit", b"rollback", b"unknown-commit", b"unknown-rollback"):
                result = await producer.send_message_in_transaction(Message("Tx", body, keys="k-" + body.decode()))
                assert result.state is local.get(body, UNKNOWN)
                ids[body] = result.msg_id
            await _wait(received, {b"commit", b"unknown-commit"}, 20)
            await asyncio.sleep(2.0)  # more check rounds: nothing else may arrive
        finally:
            await producer.shutdown()
            await consumer.shutdown()
        return ids

    try:
        started = time.time()
        ids = asyncio.run(run())
        print(f"commit + check-back resolution took {time.time() - started:.1f}s; checks: {checks}")
        assert received.snapshot() == {b"commit": 1, b"unknown-commit": 1}
        assert set(checks) == {b"unknown-commit", b"unknown-rollback"}
        assert ids[b"commit"] != ids[b"unknown-commit"]
    finally:
        cluster.stop()


def test_blocking_form_commits(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    received = Received()
    try:
        asyncio.run(create_topic(cluster, "TxSync", 1))
        with SyncTransactionProducer(
            "tx-sync",
            cluster.namesrv_addr,
            local_transaction=lambda m, a: COMMIT if a else ROLLBACK,
            checker=lambda m: ROLLBACK,
        ) as producer:
            assert producer.send_message_in_transaction(Message("TxSync", b"yes"), arg=True).state is COMMIT
            assert producer.send_message_in_transaction(Message("TxSync", b"no"), arg=False).state is ROLLBACK

        async def consume() -> None:
            consumer = await _consumer(cluster, "TxSync", received)
            await _wait(received, {b"yes"}, 20)
            await asyncio.sleep(1.5)
            await consumer.shutdown()

        asyncio.run(consume())
        assert received.snapshot() == {b"yes": 1}
    finally:
        cluster.stop()


def test_a_producer_killed_before_deciding_is_resolved_by_a_restarted_producer_of_its_group(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, check_max=30)
    received = Received()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        asyncio.run(create_topic(cluster, "TxOrphan", 2))
        for body in ("orphan-commit", "orphan-rollback"):
            child = subprocess.run(
                [sys.executable, "-c", CHILD, cluster.namesrv_addr, "tx-orphans", "TxOrphan", body],
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert child.returncode == -9, child.stderr.decode()[-2000:]

        async def resolve() -> None:
            consumer = await _consumer(cluster, "TxOrphan", received)
            table = {b"orphan-commit": COMMIT, b"orphan-rollback": ROLLBACK}
            producer = TransactionProducer(
                "tx-orphans",
                cluster.namesrv_addr,
                local_transaction=lambda m, a: ROLLBACK,
                checker=_by_body(table),
                topics=["TxOrphan"],
            )
            await producer.start()
            try:
                await _wait(received, {b"orphan-commit"}, 30)
                await asyncio.sleep(2.0)
            finally:
                await producer.shutdown()
                await consumer.shutdown()

        asyncio.run(resolve())
        assert received.snapshot() == {b"orphan-commit": 1}
    finally:
        cluster.stop()


def test_broker_kill_9_with_half_messages_pending_then_restart(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, check_max=60)
    broker = cluster.brokers[0]
    received = Received()
    decided: dict[bytes, TransactionState] = {}  # the checker's answers; empty (unknown) until after the restart
    bodies = [f"m{i}".encode() for i in range(20)]
    local = {b: (COMMIT if i % 4 == 0 else ROLLBACK if i % 4 == 1 else UNKNOWN) for i, b in enumerate(bodies)}

    async def produce() -> None:
        await create_topic(cluster, "TxCrash", 2)
        producer = TransactionProducer(
            "tx-crash", cluster.namesrv_addr, local_transaction=_by_body(local), checker=_by_body(decided)
        )
        await producer.start()
        try:
            for body in bodies:
                await producer.send_message_in_transaction(Message("TxCrash", body))
        finally:
            await producer.shutdown()

    async def resolve() -> None:
        for i, body in enumerate(bodies):
            if local[body] is UNKNOWN:
                decided[body] = COMMIT if i % 4 == 2 else ROLLBACK
        consumer = await _consumer(cluster, "TxCrash", received)
        producer = TransactionProducer(
            "tx-crash",
            cluster.namesrv_addr,
            local_transaction=lambda m, a: ROLLBACK,
            checker=_by_body(decided),
            topics=["TxCrash"],
            heartbeat_interval=1.0,
        )
        await producer.start()
        try:
            await _wait(received, {b for b in bodies if COMMIT in (local[b], decided.get(b))}, 40)
            await asyncio.sleep(2.0)
        finally:
            await producer.shutdown()
            await consumer.shutdown()

    try:
        asyncio.run(produce())
        broker.kill()
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()
        asyncio.run(resolve())
        committed = {b for b in bodies if COMMIT in (local[b], decided.get(b))}
        got = received.snapshot()
        assert set(got) == committed, f"delivered {sorted(got)}, committed {sorted(committed)}"
        assert all(n == 1 for n in got.values()), got
    finally:
        cluster.stop()


def test_a_half_message_never_decided_moves_to_trans_check_max_time_topic(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, check_max=3)
    parked = Received()
    delivered = Received()
    checks: list[float] = []

    def checker(msg: MessageExt) -> TransactionState:
        checks.append(time.time())
        return UNKNOWN

    async def run() -> None:
        await create_topic(cluster, "TxLimbo", 1)
        consumer = await _consumer(cluster, "TxLimbo", delivered)
        producer = TransactionProducer(
            "tx-limbo", cluster.namesrv_addr, local_transaction=lambda m, a: UNKNOWN, checker=checker
        )
        await producer.start()
        try:
            await producer.send_message_in_transaction(Message("TxLimbo", b"limbo"))
            watcher = await _consumer(cluster, CHECK_MAX_TIME_TOPIC, parked)
            await _wait(parked, {b"limbo"}, 30)
            await asyncio.sleep(1.5)
            await watcher.shutdown()
        finally:
            await producer.shutdown()
            await consumer.shutdown()

    try:
        asyncio.run(run())
        assert len(checks) == 3, checks
        assert parked.snapshot() == {b"limbo": 1} and delivered.snapshot() == {}
    finally:
        cluster.stop()
