"""Corrupt commit log data is never served: a bad record in the middle is blanked and the valid records after
it are kept; a torn tail is cut. Both are logged and counted on /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

from krocket.common.codes import ResponseCode
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import start_cluster
from tests.support.metrics import metric_value
from tests.support.remoting import pull_all, send


def _metric(port: int, name: str) -> float:
    return metric_value(port, name)


def test_flipped_body_byte_is_caught_by_crc_never_served_and_later_messages_kept(tmp_path: Path):
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, flush="sync")
    broker = cluster.brokers[0]
    try:

        async def produce():
            pool = ConnectionPool()
            try:
                return [await send(pool, broker.addr, "Flip", f"body-{i:03d}".encode() * 4) for i in range(20)]
            finally:
                await pool.close()

        responses = asyncio.run(produce())
        assert all(r.code == ResponseCode.SUCCESS for r in responses)
        offsets = [int(r.ext_fields["msgId"][16:], 16) for r in responses]
        broker.kill()
        store = Path(broker.args[broker.args.index("--store-dir") + 1])
        segment = sorted((store / "commitlog").iterdir())[0]
        data = bytearray(segment.read_bytes())
        data[offsets[10] + 88 + 3] ^= 0x55  # a byte inside the 11th record's body
        segment.write_bytes(bytes(data))
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()

        async def read():
            pool = ConnectionPool()
            try:
                return await pull_all(pool, broker.addr, "Flip", 0)
            finally:
                await pool.close()

        got = asyncio.run(read())
        # Before: the log was cut at the bad record, losing the 9 acked messages after it.
        assert [m.body for m in got] == [f"body-{i:03d}".encode() * 4 for i in range(20) if i != 10]
        log_text = broker.tail_log(60)
        assert f"commit log corrupt at [{offsets[10]}, {offsets[11]})" in log_text and "CRC" in log_text
        assert _metric(broker.http_port, "krocket_store_recovery_corrupt_records_total") == 1
        assert _metric(broker.http_port, "krocket_store_recovery_corrupt_bytes_total") == offsets[11] - offsets[10]
        assert _metric(broker.http_port, "krocket_store_recovery_cut_bytes_total") == 0
    finally:
        cluster.stop()


def test_a_torn_tail_is_cut_logged_and_counted(tmp_path: Path):
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, flush="sync")
    broker = cluster.brokers[0]
    try:

        async def produce():
            pool = ConnectionPool()
            try:
                return [await send(pool, broker.addr, "Torn", f"m{i}".encode()) for i in range(10)]
            finally:
                await pool.close()

        assert all(r.code == ResponseCode.SUCCESS for r in asyncio.run(produce()))
        broker.kill()
        store = Path(broker.args[broker.args.index("--store-dir") + 1])
        segment = sorted((store / "commitlog").iterdir())[0]
        with open(segment, "ab") as f:
            f.write(b"\x5a" * 300)  # a half-written record: garbage with no valid record after it
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()

        async def read():
            pool = ConnectionPool()
            try:
                return await pull_all(pool, broker.addr, "Torn", 0)
            finally:
                await pool.close()

        assert [m.body for m in asyncio.run(read())] == [f"m{i}".encode() for i in range(10)]
        assert "cut 300 bytes of torn tail" in broker.tail_log(60)
        assert _metric(broker.http_port, "krocket_store_recovery_cut_bytes_total") == 300
        assert _metric(broker.http_port, "krocket_store_recovery_corrupt_records_total") == 0
    finally:
        cluster.stop()


def test_a_record_consumers_cannot_decode_is_reported_and_skipped_not_retried_forever(tmp_path: Path):
    import threading

    from krocket.client import ConsumeStatus, PullConsumer, PushConsumer
    from krocket.common.record import POS_SYSFLAG, SYSFLAG_COMPRESSED

    from tests.support.cluster import wait_until

    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, flush="sync")
    broker = cluster.brokers[0]
    try:

        async def produce():
            pool = ConnectionPool()
            try:
                return [await send(pool, broker.addr, "Poison", f"p{i}".encode()) for i in range(12)]
            finally:
                await pool.close()

        responses = asyncio.run(produce())
        offsets = [int(r.ext_fields["msgId"][16:], 16) for r in responses]
        broker.kill()
        store = Path(broker.args[broker.args.index("--store-dir") + 1])
        segment = sorted((store / "commitlog").iterdir())[0]
        data = bytearray(segment.read_bytes())
        # Flag the 6th record compressed: its layout and CRC still hold (recovery keeps it), its body cannot inflate.
        data[offsets[5] + POS_SYSFLAG : offsets[5] + POS_SYSFLAG + 4] = SYSFLAG_COMPRESSED.to_bytes(4, "big")
        segment.write_bytes(bytes(data))
        broker.start()
        broker.wait_ports()
        cluster.wait_registered()
        expected = [f"p{i}".encode() for i in range(12) if i != 5]

        async def pull_through() -> tuple[list[bytes], int]:
            async with PullConsumer("poison-pull", cluster.namesrv_addr) as consumer:
                queue = next(q for q in await consumer.fetch_queues("Poison") if q.queue_id == 0)
                got: list[bytes] = []
                offset = 0
                for _ in range(20):
                    result = await consumer.pull(queue, "*", offset, 4)
                    got += [m.body for m in result.messages]
                    if result.next_begin_offset == offset or result.next_begin_offset >= 12:
                        break
                    offset = result.next_begin_offset
                return got, consumer.undecodable_records

        got, skipped = asyncio.run(pull_through())
        assert got == expected and skipped == 1

        seen: list[bytes] = []
        lock = threading.Lock()

        def listener(messages):
            with lock:
                seen.extend(m.body for m in messages)
            return ConsumeStatus.SUCCESS

        async def push_through() -> int:
            consumer = PushConsumer("poison-push", cluster.namesrv_addr, consume_from="FIRST", pull_batch_size=4)
            consumer.subscribe("Poison")
            consumer.register_listener(listener)
            await consumer.start()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: wait_until(lambda: len(seen) >= len(expected), 20, message="every good message")
                )
            finally:
                await consumer.shutdown()
            return consumer._pulls.undecodable_records

        assert asyncio.run(push_through()) >= 1
        assert sorted(seen) == sorted(expected)
    finally:
        cluster.stop()
