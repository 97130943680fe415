"""Parked acks in real broker processes: SYNC_FLUSH sends (many in flight on one connection, batches) are acked
and survive ``kill -9``; under SYNC_MASTER an ack means the slave has the bytes, and a slave that is connected but
does not answer (SIGSTOP) turns sends into FLUSH_SLAVE_TIMEOUT until it runs again."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from krocket.common.batch import encode_batch
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.headers import SendMessageHeader
from krocket.common.remoting import ConnectionPool, RemotingCommand

from tests.support.cluster import start_cluster, wait_until
from tests.support.remoting import pull_all, send

TOPIC = "ParkedAcks"
QUEUES = 4


async def _ids_on(addr: str) -> set[str]:
    pool = ConnectionPool()
    try:
        out: set[str] = set()
        for q in range(QUEUES):
            out.update(m.offset_msg_id for m in await pull_all(pool, addr, TOPIC, q))
        return out
    finally:
        await pool.close()


async def _send_batch(pool: ConnectionPool, addr: str, bodies: list[bytes]) -> RemotingCommand:
    header = SendMessageHeader(
        producer_group="test-producer",
        topic=TOPIC,
        default_topic="TBW102",
        default_topic_queue_nums=QUEUES,
        queue_id=1,
        sys_flag=0,
        born_timestamp=0,
        flag=0,
        properties="",
        reconsume_times=0,
        unit_mode=False,
        batch=True,
    )
    body = encode_batch([(b, {}, 0) for b in bodies])
    cmd = RemotingCommand(RequestCode.SEND_BATCH_MESSAGE, ext_fields=header.to_v2_fields(), body=body)
    return await pool.request(addr, cmd, 10.0)


def test_sync_flush_sends_in_flight_are_acked_and_survive_kill_9(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, flush="sync", segment_bytes=256 * 1024)
    try:
        broker = cluster.brokers[0]

        async def produce() -> list[str]:
            pool = ConnectionPool()
            try:
                first = await send(pool, broker.addr, TOPIC, b"creates the topic")
                assert first.code == ResponseCode.SUCCESS, first.remark
                acked = [first.ext_fields["msgId"]]
                for round_ in range(10):  # 64 sends in flight on one connection, then a batch
                    replies = await asyncio.gather(
                        *(
                            send(pool, broker.addr, TOPIC, f"r{round_}-{i}".encode() * 20, queue_id=i % QUEUES)
                            for i in range(64)
                        )
                    )
                    assert {r.code for r in replies} == {ResponseCode.SUCCESS}, {r.remark for r in replies}
                    acked += [r.ext_fields["msgId"] for r in replies]
                    batch = await _send_batch(pool, broker.addr, [f"b{round_}-{i}".encode() for i in range(5)])
                    assert batch.code == ResponseCode.SUCCESS, batch.remark
                    acked += batch.ext_fields["msgId"].split(",")
                return acked
            finally:
                await pool.close()

        acked = asyncio.run(produce())
        assert len(acked) == len(set(acked)) == 1 + 10 * 69
        broker.kill()
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()
        assert set(acked) <= asyncio.run(_ids_on(broker.addr))
    finally:
        cluster.stop()


def _slaves(master) -> list[dict]:
    return master.http_json("/api/v1/broker")["replication"]["slaves"]


def test_sync_master_acks_once_the_slave_has_the_bytes_and_a_stopped_slave_times_out(tmp_path: Path) -> None:
    settings = tmp_path / "broker.yaml"
    settings.write_text("slaveTimeoutMills: 500\n")
    cluster = start_cluster(
        tmp_path / "c",
        namesrvs=1,
        groups=1,
        slaves=1,
        flush="sync",
        replication="sync",
        extra_broker_args=["--config", str(settings)],
    )
    try:
        master, slave = cluster.brokers
        wait_until(lambda: bool(_slaves(master)), 60, 0.2, message="the slave to connect")

        async def produce(count: int, start: int) -> tuple[list[RemotingCommand], list[int]]:
            """Sends one at a time; after each reply, the slave's commit log end."""
            pool = ConnectionPool()
            try:
                replies, slave_ends = [], []
                for i in range(start, start + count):
                    r = await send(pool, master.addr, TOPIC, f"m{i}".encode() * 10, queue_id=i % QUEUES)
                    replies.append(r)
                    slave_ends.append(slave.http_json("/api/v1/broker")["maxPhyOffset"])
                return replies, slave_ends
            finally:
                await pool.close()

        replies, slave_ends = asyncio.run(produce(20, 0))
        assert {r.code for r in replies} == {ResponseCode.SUCCESS}, {r.remark for r in replies}
        for r, slave_end in zip(replies, slave_ends, strict=True):
            stored_at = int(r.ext_fields["msgId"][16:], 16)  # the offset id's commit log offset
            assert slave_end > stored_at  # acked only once the slave had the record
        acked = [r.ext_fields["msgId"] for r in replies]

        assert slave.pid is not None
        os.kill(slave.pid, signal.SIGSTOP)  # connected, but it reports nothing any more
        try:
            stalled = asyncio.run(_send_some(master.addr, 3))
            assert [r.code for r in stalled] == [ResponseCode.FLUSH_SLAVE_TIMEOUT] * 3
            assert all("no slave confirmed offset" in (r.remark or "") for r in stalled)
        finally:
            os.kill(slave.pid, signal.SIGCONT)
        wait_until(
            lambda: _slaves(master)[0]["lagBytes"] == 0 if _slaves(master) else False,
            30,
            0.2,
            message="the slave to catch up",
        )
        replies, _ = asyncio.run(produce(5, 100))
        assert {r.code for r in replies} == {ResponseCode.SUCCESS}, {r.remark for r in replies}
        acked += [r.ext_fields["msgId"] for r in replies]
        assert set(acked) <= asyncio.run(_ids_on(slave.addr))
    finally:
        cluster.stop()


async def _send_some(addr: str, count: int) -> list[RemotingCommand]:
    pool = ConnectionPool()
    try:
        return [await send(pool, addr, TOPIC, f"stalled-{i}".encode()) for i in range(count)]
    finally:
        await pool.close()
