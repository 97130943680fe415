"""Fault suite: masters and slaves killed mid-stream, logs compared byte for byte, offsets through failover.

Every case asserts on message ids (offset ids from the send responses), never on counts alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from krocket.common.codes import ResponseCode
from krocket.common.record import decode_record
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import LocalCluster, start_cluster, wait_until
from tests.support.remoting import pull_all, send

TOPIC = "FaultTopic"
QUEUES = 4


def _pair(tmp_path: Path, mode: str):
    """One name server and one group of a master and a slave, replication and flush both ``mode``."""
    c = start_cluster(
        tmp_path / "c", namesrvs=1, groups=1, slaves=1, replication=mode, flush=mode, segment_bytes=512 * 1024
    )
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def sync_pair(tmp_path: Path):
    yield from _pair(tmp_path, "sync")


@pytest.fixture
def async_pair(tmp_path: Path):
    yield from _pair(tmp_path, "async")


def _store_dir(broker) -> Path:
    return Path(broker.args[broker.args.index("--store-dir") + 1])


async def _produce_until_killed(addr: str, kill_after: int, kill, limit: int = 5000) -> tuple[list[str], dict]:
    """Send continuously; kill after ``kill_after`` acks; return the acked ids and the codes seen."""
    pool = ConnectionPool()
    acked: list[str] = []
    codes: dict[int, int] = {}
    try:
        for i in range(limit):
            if len(acked) == kill_after:
                kill()
            try:
                resp = await send(
                    pool, addr, TOPIC, f"payload-{i}".encode() * 8, queue_id=i % QUEUES, properties={"seq": str(i)}
                )
            except Exception:
                break  # the master is gone
            codes[resp.code] = codes.get(resp.code, 0) + 1
            if resp.code == ResponseCode.SUCCESS:
                acked.append(resp.ext_fields["msgId"])
    finally:
        await pool.close()
    return acked, codes


async def _ids_on(addr: str) -> list[str]:
    pool = ConnectionPool()
    try:
        out = []
        for q in range(QUEUES):
            for m in await pull_all(pool, addr, TOPIC, q):
                out.append(m.offset_msg_id)
        return out
    finally:
        await pool.close()


def _decode_all_with_crc(store: Path) -> int:
    """Every record in the commit log passes its CRC check; returns how many there are."""
    count = 0
    for segment in sorted((store / "commitlog").iterdir()):
        data = segment.read_bytes()
        pos = 0
        while pos + 8 <= len(data):
            total = int.from_bytes(data[pos : pos + 4], "big", signed=True)
            magic = int.from_bytes(data[pos + 4 : pos + 8], "big", signed=True)
            if total <= 0:
                break
            if magic == -875286124:  # BLANK padding at a segment's end
                pos += total
                continue
            decode_record(data, pos, check_crc=True)
            count += 1
            pos += total
    return count


def _commitlog_bytes(store: Path) -> bytes:
    return b"".join(seg.read_bytes() for seg in sorted((store / "commitlog").iterdir()))


def test_sync_master_kill_9_loses_no_acked_message(sync_pair: LocalCluster):
    master, slave = sync_pair.brokers
    acked, codes = asyncio.run(_produce_until_killed(master.addr, 400, master.kill))
    assert len(acked) >= 400, codes
    # While the master is down every acked message is on the slave.
    on_slave = asyncio.run(_ids_on(slave.addr))
    assert set(acked) <= set(on_slave)
    assert len(on_slave) == len(set(on_slave))
    # The master restarts with every acked message too.
    master.start()
    master.wait_ports()
    sync_pair.wait_registered()
    on_master = asyncio.run(_ids_on(master.addr))
    assert set(acked) <= set(on_master)
    # Nothing corrupt, and the two logs agree byte for byte up to the shorter one.
    master.stop()
    slave.stop()
    assert _decode_all_with_crc(_store_dir(master)) >= len(acked)
    assert _decode_all_with_crc(_store_dir(slave)) >= len(acked)
    a, b = _commitlog_bytes(_store_dir(master)), _commitlog_bytes(_store_dir(slave))
    shorter = min(len(a.rstrip(b"\0")), len(b.rstrip(b"\0")))
    assert shorter > 0 and a[:shorter] == b[:shorter]


def test_async_master_crash_reports_what_the_slave_lacks(async_pair: LocalCluster, capsys):
    master, slave = async_pair.brokers
    acked, _ = asyncio.run(_produce_until_killed(master.addr, 2000, master.kill))
    on_slave = set(asyncio.run(_ids_on(slave.addr)))
    lost_on_slave = [i for i in acked if i not in on_slave]
    with capsys.disabled():
        print(f"\nASYNC_MASTER crash: {len(acked)} acked, {len(lost_on_slave)} not on the slave when the master died")
    # A process crash keeps the master's page cache: after restart the master has every acked message.
    master.start()
    master.wait_ports()
    async_pair.wait_registered()
    assert set(acked) <= set(asyncio.run(_ids_on(master.addr)))
    # And the slave catches up with what it lacked.
    wait_until(lambda: set(acked) <= set(asyncio.run(_ids_on(slave.addr))), 20, 0.5, "the slave to catch up")


def _slave_count(master) -> int:
    return len(master.http_json("/api/v1/broker")["replication"]["slaves"])


def test_sync_master_without_its_slave_never_acks_and_the_slave_catches_up(sync_pair: LocalCluster):
    master, slave = sync_pair.brokers
    before, _ = asyncio.run(_produce_until_killed(master.addr, -1, lambda: None, limit=50))
    assert len(before) == 50
    slave.kill()
    wait_until(lambda: _slave_count(master) == 0, 10, message="the master to notice the slave is gone")
    _, codes = asyncio.run(_produce_until_killed(master.addr, -1, lambda: None, limit=20))
    assert codes == {ResponseCode.SLAVE_NOT_AVAILABLE: 20}
    slave.start()
    slave.wait_ports()
    sync_pair.wait_registered()
    after, codes = asyncio.run(_produce_until_killed(master.addr, -1, lambda: None, limit=30))
    assert codes == {ResponseCode.SUCCESS: 30}
    assert set(before + after) <= set(asyncio.run(_ids_on(slave.addr)))
    head = master.http_json("/api/v1/broker")["maxPhyOffset"]
    wait_until(
        lambda: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head,
        10,
        message="the slave to reach the master's end",
    )


def test_async_master_keeps_serving_without_its_slave(async_pair: LocalCluster):
    master, slave = async_pair.brokers
    slave.kill()
    wait_until(lambda: _slave_count(master) == 0, 10, message="the master to notice the slave is gone")
    acked, codes = asyncio.run(_produce_until_killed(master.addr, -1, lambda: None, limit=100))
    assert codes == {ResponseCode.SUCCESS: 100}
    slave.start()
    slave.wait_ports()
    async_pair.wait_registered()
    wait_until(lambda: set(acked) <= set(asyncio.run(_ids_on(slave.addr))), 20, 0.5, "the slave to catch up")


def test_slave_refuses_writes(sync_pair: LocalCluster):
    _, slave = sync_pair.brokers

    async def run():
        pool = ConnectionPool()
        try:
            return await send(pool, slave.addr, TOPIC, b"to the slave")
        finally:
            await pool.close()

    resp = asyncio.run(run())
    assert resp.code == ResponseCode.SERVICE_NOT_AVAILABLE and "slave" in resp.remark


def test_slave_with_a_diverged_log_is_refused_not_truncated(tmp_path: Path):
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, slaves=1, segment_bytes=512 * 1024)
    try:
        master, slave = cluster.brokers
        asyncio.run(_produce_until_killed(master.addr, -1, lambda: None, limit=20))
        head = master.http_json("/api/v1/broker")["maxPhyOffset"]
        wait_until(lambda: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head, 10, message="replication")
        slave.stop()
        master.stop()
        # The master loses its data (a new disk): the slave is now ahead of it.
        for path in sorted(_store_dir(master).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        master.start()
        master.wait_ports()
        slave.start()
        slave.wait_ports()
        wait_until(lambda: "logs have diverged" in master.tail_log(50), 15, message="the master to refuse the slave")
        assert slave.http_json("/api/v1/broker")["maxPhyOffset"] == head  # nothing cut on the slave
    finally:
        cluster.stop()


def test_disk_full_refuses_writes_keeps_reads_and_data(tmp_path: Path):
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1)
    try:
        broker = cluster.brokers[0]
        acked, _ = asyncio.run(_produce_until_killed(broker.addr, -1, lambda: None, limit=30))
        broker.stop()
        config = tmp_path / "full.yaml"
        config.write_text("diskSpaceWarningLevelRatio: 1\ndiskMaxUsedSpaceRatio: 1\n")  # any use is "full"
        broker.args += ["--config", str(config)]
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()
        _, codes = asyncio.run(_produce_until_killed(broker.addr, -1, lambda: None, limit=5))
        assert codes == {ResponseCode.SERVICE_NOT_AVAILABLE: 5}
        assert sorted(asyncio.run(_ids_on(broker.addr))) == sorted(acked)  # reads go on, nothing damaged
        wait_until(lambda: "disk full" in broker.tail_log(100).lower(), 5, message="the refusal in the log")
    finally:
        cluster.stop()
