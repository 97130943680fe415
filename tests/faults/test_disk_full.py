"""A broker whose store sits on a small tmpfs, filled at full speed: the refusal ("disk full",
SERVICE_NOT_AVAILABLE) comes before ENOSPC reaches the store, nothing acked is lost or changed, reads,
offset commits and /healthz keep working while full, the broker restarts on the full disk (after kill -9)
and serves every acked message, and once retention frees space (a short fileReservedTime; segments roll by
time) writes work again.

Needs root (``mount -t tmpfs``); skipped with the reason where mounting is not allowed.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import Message, Producer, PullConsumer
from krocket.client.types import MessageQueue, PullStatus
from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError

from tests.support.cluster import ChildProcess, LocalCluster, create_topic, start_cluster, wait_until
from tests.support.metrics import metric_value

TOPIC = "DiskFull"
SEGMENT = 1024 * 1024
BODY_BYTES = 1500
FULL_SETTINGS = {
    # Only the disk space guard refuses here: the ratios would refuse (or delete) long before a full volume.
    "diskMaxUsedSpaceRatio": 98,
    "diskSpaceWarningLevelRatio": 99,
    "diskFreeReserveBytes": 2 * 1024 * 1024,
    "maxHashSlotNum": 4096,
    "maxIndexNum": 50_000,
    "commitLogRollIntervalMills": 0,
    "flushConsumerOffsetInterval": 500,
}


def _mount_tmpfs(where: Path, size_mib: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.strip() or done.returncode}")


def _write_settings(path: Path, settings: dict[str, object]) -> None:
    path.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))


@pytest.fixture
def full_disk_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path, Path]]:
    """One name server and one broker whose store is a 24 MiB tmpfs; yields (cluster, store, settings)."""
    data = (tmp_path / "c").resolve()
    store = data / "broker-a" / "0"
    _mount_tmpfs(store, 24)
    settings = tmp_path / "broker.yaml"
    _write_settings(settings, FULL_SETTINGS)
    cluster: LocalCluster | None = None
    try:
        cluster = start_cluster(
            data, namesrvs=1, groups=1, segment_bytes=SEGMENT, extra_broker_args=["--config", str(settings)]
        )
        yield cluster, store, settings
    finally:
        if cluster is not None:
            cluster.stop()
        subprocess.run(["umount", "-l", str(store)], capture_output=True, timeout=10)


def _is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == ResponseCode.SERVICE_NOT_AVAILABLE and "disk full" in str(exc)


async def _fill(namesrv: str, senders: int = 8, limit: int = 60_000) -> tuple[dict[bytes, str], int]:
    """Send unique bodies at full speed until the broker refuses for a full disk; returns the acked bodies
    (body -> msg id) and how many sends failed otherwise."""
    acked: dict[bytes, str] = {}
    other_failures = 0
    refused = asyncio.Event()

    async def sender(producer: Producer, n: int) -> None:
        nonlocal other_failures
        rng = random.Random(n)
        i = 0
        while not refused.is_set() and len(acked) < limit:
            body = f"{n}-{i}-".encode() + rng.randbytes(BODY_BYTES)
            i += 1
            try:
                result = await producer.send(Message(TOPIC, body, keys=f"k{n}-{i}"))
            except KrocketError as exc:
                if _is_disk_full(exc):
                    refused.set()
                    return
                other_failures += 1
                continue
            acked[body] = result.msg_id

    async with Producer("disk-full-producer", namesrv, retries=0) as producer:
        await asyncio.gather(*(sender(producer, n) for n in range(senders)))
    assert refused.is_set(), f"the disk never filled after {len(acked)} messages"
    return acked, other_failures


async def _read_all(namesrv: str, group: str = "disk-full-reader") -> dict[bytes, str]:
    """Every body in the topic (pulled from each queue's minimum offset) -> its msg id."""
    seen: dict[bytes, str] = {}
    async with PullConsumer(group, namesrv) as consumer:
        for queue in await consumer.fetch_queues(TOPIC):
            offset = await consumer.min_offset(queue)
            while True:
                result = await consumer.pull(queue, "*", offset, 32)
                if result.status is not PullStatus.FOUND:
                    break
                for msg in result.messages:
                    seen[msg.body] = msg.msg_id
                offset = result.next_begin_offset
    return seen


async def _commit_and_read_offset(namesrv: str) -> tuple[MessageQueue, int]:
    async with PullConsumer("disk-full-offsets", namesrv) as consumer:
        queue = (await consumer.fetch_queues(TOPIC))[0]
        await consumer.update_offset(queue, 7)
        return queue, await consumer.fetch_offset(queue)


def _store_errors(broker: ChildProcess) -> list[str]:
    """Log lines that show an ENOSPC escaping as an error (a WARNING "disk full, refusing writes" is fine)."""
    text = broker.log_path.read_text(errors="replace")
    return [
        line
        for line in text.splitlines()
        if "Traceback" in line or " ERROR " in line or ("Errno 28" in line and " WARNING " not in line)
    ]


def _metric(broker: ChildProcess, name: str) -> float:
    return metric_value(broker.http_port, name)


def _start(broker: ChildProcess) -> None:
    """Start the broker again (on its old ports, so routes stay right) and wait until it serves."""
    broker.start()
    broker.wait_ports()
    wait_until(lambda: broker.http_json("/healthz") == {"status": "ok"}, 10, message="the broker serving")


async def _refused(namesrv: str) -> bool:
    async with Producer("disk-full-probe", namesrv, retries=0) as producer:
        try:
            # As large as the message refused: it does not fit what is left of the last segment either.
            await producer.send(Message(TOPIC, b"while full" + bytes(BODY_BYTES + 100)))
        except KrocketError as exc:
            return _is_disk_full(exc)
    return False


def test_a_full_disk_refuses_before_enospc_and_loses_nothing(full_disk_cluster) -> None:
    cluster, store, _settings = full_disk_cluster
    broker = cluster.brokers[0]
    asyncio.run(create_topic(cluster, TOPIC, queues=4))
    started = time.monotonic()
    acked, other_failures = asyncio.run(_fill(cluster.namesrv_addr))
    fill_s = time.monotonic() - started
    free = os.statvfs(store).f_bavail * os.statvfs(store).f_frsize
    print(f"acked {len(acked)} messages in {fill_s:.1f} s; {other_failures} other failures; {free} bytes free")
    assert other_failures == 0
    assert len(acked) > 5000

    # While full: sends are refused, reads, offset commits and /healthz work.
    assert asyncio.run(_refused(cluster.namesrv_addr))
    seen = asyncio.run(_read_all(cluster.namesrv_addr))
    missing = [body for body in acked if body not in seen]
    assert not missing, f"{len(missing)} of {len(acked)} acked messages are not read back"
    assert all(seen[body] == msg_id for body, msg_id in acked.items())
    _queue, offset = asyncio.run(_commit_and_read_offset(cluster.namesrv_addr))
    assert offset == 7
    assert broker.http_json("/healthz") == {"status": "ok"}
    assert (
        _metric(broker, "krocket_broker_disk_full") == 1
        and _metric(broker, "krocket_broker_disk_full_refusals_total") >= 1
    )
    assert _store_errors(broker) == []

    # kill -9 and a restart on the full disk: everything acked is served, writes are still refused.
    broker.kill()
    _start(broker)
    seen = asyncio.run(_read_all(cluster.namesrv_addr))
    assert all(seen.get(body) == msg_id for body, msg_id in acked.items())
    assert asyncio.run(_refused(cluster.namesrv_addr))
    assert broker.http_json("/healthz") == {"status": "ok"}
    assert _store_errors(broker) == []
    assert "broker cannot start" not in broker.log_path.read_text(errors="replace")


async def _send_until_accepted(namesrv: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    async with Producer("disk-full-after", namesrv, retries=0) as producer:
        while time.monotonic() < deadline:
            try:
                await producer.send(Message(TOPIC, b"after retention"))
                return time.monotonic()
            except KrocketError as exc:
                if not _is_disk_full(exc):
                    raise
                await asyncio.sleep(0.1)
    raise AssertionError(f"writes were still refused after {timeout} s")


def _segments(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "commitlog").iterdir() if p.name.isdigit())


def test_retention_frees_a_full_disk_and_segments_roll_by_time(full_disk_cluster) -> None:
    cluster, store, settings = full_disk_cluster
    broker = cluster.brokers[0]
    asyncio.run(create_topic(cluster, TOPIC, queues=4))
    asyncio.run(_fill(cluster.namesrv_addr))
    full_segments = _segments(store)
    assert len(full_segments) > 5

    # Short retention and a time roll: the old segments expire, writes resume without intervention.
    broker.stop()
    _write_settings(
        settings,
        {**FULL_SETTINGS, "fileReservedTime": 0.0005, "cleanResourceInterval": 200, "commitLogRollIntervalMills": 1000},
    )
    _start(broker)
    asyncio.run(_send_until_accepted(cluster.namesrv_addr, 20))
    wait_until(lambda: len(_segments(store)) <= 2, 10, message="retention deleting the expired segments")
    active = _segments(store)[-1]
    assert active == full_segments[-1]  # the segment being written is never deleted

    # The active segment rolls by time once its interval is over, and then expires too.
    time.sleep(1.2)
    asyncio.run(_send_until_accepted(cluster.namesrv_addr, 5))
    assert _segments(store)[-1] > active
    wait_until(lambda: active not in _segments(store), 10, message="the sealed segment expiring")
    assert asyncio.run(_read_all(cluster.namesrv_addr))  # what is left reads back
    assert _store_errors(broker) == []


def _fill_with_a_file(path: Path) -> int:
    """Write zeros into ``path`` until the disk is full (another program filling the volume); returns bytes."""
    wrote = 0
    chunk = bytes(64 * 1024)
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                wrote += fh.write(chunk) or 0
            except OSError:
                break
    small = bytes(512)
    with open(path, "ab", buffering=0) as fh:
        while True:
            try:
                wrote += fh.write(small) or 0
            except OSError:
                return wrote


async def _send_some(namesrv: str, count: int, name: str) -> dict[bytes, str]:
    async with Producer("disk-full-some", namesrv) as producer:
        out = {}
        for i in range(count):
            body = f"{name}-{i}-".encode() + bytes(200)
            out[body] = (await producer.send(Message(TOPIC, body))).msg_id
        return out


def test_a_disk_filled_to_the_last_byte_by_another_program(full_disk_cluster) -> None:
    cluster, store, _settings = full_disk_cluster
    broker = cluster.brokers[0]
    asyncio.run(create_topic(cluster, TOPIC, queues=4))
    acked = asyncio.run(_send_some(cluster.namesrv_addr, 200, "before"))
    filler = store / "filler"
    _fill_with_a_file(filler)
    assert os.statvfs(store).f_bavail == 0

    # Writes are refused, while reads, offset commits (in memory) and /healthz keep working.
    wait_until(lambda: asyncio.run(_refused(cluster.namesrv_addr)), 10, message="the refusal")
    seen = asyncio.run(_read_all(cluster.namesrv_addr))
    assert all(seen.get(body) == msg_id for body, msg_id in acked.items())
    assert asyncio.run(_commit_and_read_offset(cluster.namesrv_addr))[1] == 7
    assert broker.http_json("/healthz") == {"status": "ok"}
    time.sleep(1.5)  # a periodic offset persist and a logics flush meet the full disk
    assert broker.is_running()

    # kill -9 and a start with no byte free: it starts and serves what was acked.
    broker.kill()
    _start(broker)
    seen = asyncio.run(_read_all(cluster.namesrv_addr))
    assert all(seen.get(body) == msg_id for body, msg_id in acked.items())
    assert asyncio.run(_refused(cluster.namesrv_addr))

    # Space frees: writes resume without a restart.
    filler.unlink()
    asyncio.run(_send_until_accepted(cluster.namesrv_addr, 10))
    more = asyncio.run(_send_some(cluster.namesrv_addr, 20, "after"))
    seen = asyncio.run(_read_all(cluster.namesrv_addr, group="disk-full-reader-2"))
    lost = {b[:12]: (m, seen.get(b)) for b, m in {**acked, **more}.items() if seen.get(b) != m}
    assert not lost, f"{len(lost)} acked messages not read back: {list(lost.items())[:5]}; {broker.tail_log(40)}"
    assert _store_errors(broker) == []
    log = broker.log_path.read_text(errors="replace")
    assert "broker cannot start" not in log and "disk full" in log


def test_a_slave_on_a_full_disk_pauses_and_catches_up_once_space_frees(tmp_path: Path) -> None:
    """The master's disk has room, the slave's fills: the slave pauses replication with one WARNING (no
    ERROR, nothing half-written) and copies the rest once space frees, without a restart."""
    data = (tmp_path / "c").resolve()
    slave_store = data / "broker-a" / "1"
    _mount_tmpfs(slave_store, 16)
    ballast = slave_store / "ballast"
    ballast.write_bytes(bytes(8 * 1024 * 1024))
    settings = tmp_path / "broker.yaml"
    _write_settings(settings, FULL_SETTINGS)
    cluster: LocalCluster | None = None
    try:
        cluster = start_cluster(
            data, namesrvs=1, groups=1, slaves=1, segment_bytes=SEGMENT, extra_broker_args=["--config", str(settings)]
        )
        master, slave = cluster.brokers
        asyncio.run(create_topic(cluster, TOPIC, queues=2))

        async def send(count: int) -> int:
            async with Producer("slave-full-producer", cluster.namesrv_addr, retries=0) as producer:
                for i in range(count):
                    await producer.send(Message(TOPIC, f"{i}-".encode() + bytes(BODY_BYTES)))
            return count

        asyncio.run(send(5000))  # about 7.5 MiB: more than the slave has left
        head = master.http_json("/api/v1/broker")["maxPhyOffset"]
        wait_until(
            lambda: "replication from" in slave.log_path.read_text() and "paused" in slave.log_path.read_text(),
            20,
            message="the slave pausing",
        )
        behind = slave.http_json("/api/v1/broker")["maxPhyOffset"]
        assert behind < head
        text = slave.log_path.read_text(errors="replace")
        assert "do not parse as records" not in text and " ERROR " not in text and "Traceback" not in text
        assert text.count("paused: disk full") <= 2  # once per pause, not once per retry
        ballast.unlink()
        wait_until(
            lambda: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head, 40, message="the slave catching up"
        )
    finally:
        if cluster is not None:
            cluster.stop()
        subprocess.run(["umount", "-l", str(slave_store)], capture_output=True, timeout=10)
