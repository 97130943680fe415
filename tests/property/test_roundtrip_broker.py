"""Against real processes (SYNC_FLUSH master, SYNC_MASTER replication to a slave): hypothesis-generated sends
through krocket.client and as raw frames, hostile ones included. Everything acked is read back byte-identical
after ``kill -9`` and a restart, and the slave holds the same records; what the checks refuse is refused."""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from krocket.client import Message, Producer
from krocket.common.codes import ResponseCode
from krocket.common.message import encode_properties
from krocket.common.message_checks import (
    check_compressed_body,
    check_properties,
    check_raw_properties,
    check_sys_flag,
    check_transaction,
)
from krocket.common.remoting import ConnectionPool

from tests.property.raw_send import raw_send
from tests.property.strategies import allowed_properties
from tests.support.cluster import LocalCluster, start_cluster, wait_until
from tests.support.remoting import pull_all

COUNTS = {"acked": 0, "refused": 0, "kill_cycles": 0, "examples": 0}
_topic_numbers = itertools.count()

raw_text = st.text(st.sampled_from(["a", "ü", "✓", "\x01", "\x02", " ", "k"]), max_size=6)
raw_properties = st.dictionaries(raw_text, raw_text, max_size=4).map(lambda d: encode_properties(d).decode())
raw_flags = st.sampled_from([0, 0, 0, 0x1, 0x2, 0x4, 0x8, 0xC, 0x10, 0x20, 0x30, 0x40, 0x80, 0x301, -1])
small_bodies = st.binary(max_size=300)
big_bodies = st.binary(min_size=1, max_size=60).map(lambda chunk: chunk * (5000 // len(chunk) + 1))  # compressed
raw_sends = st.tuples(
    st.just("raw"),
    st.one_of(small_bodies, small_bodies, small_bodies.map(zlib.compress), st.just(b"")),
    raw_properties | st.just("k\x01v"),
    raw_flags,
)
client_sends = st.tuples(st.just("client"), small_bodies.filter(bool) | big_bodies, allowed_properties)
sends = st.lists(raw_sends | client_sends, min_size=4, max_size=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("prop")
    running = start_cluster(root / "c", namesrvs=1, groups=1, slaves=1, flush="sync", replication="sync")
    yield running
    running.stop()
    print(f"\nbroker round trips: {COUNTS}")


def _expected_raw(body: bytes, props: str, sys_flag: int) -> tuple[bytes, dict[str, str], int] | None:
    """What the broker must store for a raw send (body as read back, properties, sysFlag), None if refused."""
    try:
        stored_flag = check_sys_flag(sys_flag)
        decoded = check_raw_properties(props)
        if check_transaction(stored_flag, decoded):
            return None  # a half message goes to RMQ_SYS_TRANS_HALF_TOPIC, not to the topic
        if stored_flag & 0x1:
            check_compressed_body(body, 4 * 1024 * 1024)
    except ValueError:
        return None
    if not body:
        return None
    return (zlib.decompress(body) if stored_flag & 0x1 else body), decoded, stored_flag


def _slave_connected(cluster: LocalCluster) -> bool:
    return bool(cluster.brokers[0].http_json("/api/v1/broker").get("replication", {}).get("slaves"))


async def _produce(cluster: LocalCluster, topic: str, batch: list[tuple]) -> list[tuple[bytes, dict[str, str]]]:
    """Send ``batch`` to queue 0 of ``topic``; (body, properties) of each acked message, in order."""
    master = cluster.brokers[0]
    acked: list[tuple[bytes, dict[str, str]]] = []
    pool = ConnectionPool()
    try:
        async with Producer("prop-producer", cluster.namesrv_addr) as producer:
            for send in batch:
                if send[0] == "raw":
                    _, body, props, sys_flag = send
                    expected = _expected_raw(body, props, sys_flag)
                    resp = await raw_send(pool, master.addr, topic, body, sys_flag, props)
                    assert (resp.code == ResponseCode.SUCCESS) == (expected is not None), (send, resp.code, resp.remark)
                    if expected is not None:
                        acked.append(expected[:2])
                    else:
                        COUNTS["refused"] += 1
                else:
                    _, body, props = send
                    check_properties(props)
                    result = await producer.send(
                        Message(topic, body, properties=props),
                        selector=lambda queues, _msg, _arg: next(q for q in queues if q.queue_id == 0),
                    )
                    assert result.queue.queue_id == 0
                    expected_props = {**props, "UNIQ_KEY": props.get("UNIQ_KEY") or result.msg_id}
                    expected_props.setdefault("WAIT", "true")
                    acked.append((body, expected_props))
    finally:
        await pool.close()
    return acked


async def _read(addr: str, topic: str) -> list:
    pool = ConnectionPool()
    try:
        return await pull_all(pool, addr, topic, 0)
    finally:
        await pool.close()


def test_acked_sends_survive_kill_9_and_replicate_byte_identical(cluster: LocalCluster) -> None:
    kill_cycles_round_trip(cluster, rounds=2, examples=6)


@pytest.mark.fuzz
def test_long_run_of_kill_cycles(cluster: LocalCluster) -> None:
    """``pytest -m fuzz tests/property``: more rounds and examples."""
    kill_cycles_round_trip(cluster, rounds=10, examples=25)


def kill_cycles_round_trip(cluster: LocalCluster, rounds: int, examples: int) -> None:
    """Rounds of hypothesis examples (each on its own topic, the slave connected, SYNC_MASTER), then per round
    one ``kill -9`` of the master: every acked message of every example is read back byte-identical from the
    restarted master, and the slave holds the same records. The master's HA port changes at a restart, so the
    slave finds it again through the name server: the next round waits for that."""
    master, slave = cluster.brokers
    acked_by_topic: dict[str, list[tuple[bytes, dict[str, str]]]] = {}

    # No shrinking: a failing example is reported as generated.
    @settings(
        max_examples=examples,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sends)
    def one_example(batch: list[tuple]) -> None:
        topic = f"Prop{next(_topic_numbers)}"
        acked_by_topic[topic] = asyncio.run(_produce(cluster, topic, batch))
        COUNTS["examples"] += 1

    for _round in range(rounds):
        wait_until(lambda: _slave_connected(cluster), 60, 0.2, message="the slave to connect")
        acked_by_topic.clear()
        one_example()
        head = master.http_json("/api/v1/broker")["maxPhyOffset"]
        wait_until(lambda head=head: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head, 20, message="the slave")
        master.kill()
        master.start()
        master.wait_ports()
        COUNTS["kill_cycles"] += 1
        for topic, acked in acked_by_topic.items():
            on_master = asyncio.run(_read(master.addr, topic))
            assert [(m.body, m.properties) for m in on_master] == acked, topic
            # Every field of every record, offsets and CRCs included.
            assert asyncio.run(_read(slave.addr, topic)) == on_master, topic
            COUNTS["acked"] += len(acked)
