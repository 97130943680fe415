"""Corrupt commit log data is never served: a bad record in the middle is blanked and the valid records after
it are kept; a torn tail is cut. Both are logged and counted on /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from krocket.common.codes import ResponseCode
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import start_cluster
from tests.support.remoting import pull_all, send


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


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
