"""Corrupt commit log data is cut at recovery and never served."""

from __future__ import annotations

import asyncio
from pathlib import Path

from krocket.common.codes import ResponseCode
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import start_cluster
from tests.support.remoting import pull_all, send


def test_flipped_body_byte_is_caught_by_crc_and_never_served(tmp_path: Path):
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
        assert [m.body for m in got] == [f"body-{i:03d}".encode() * 4 for i in range(10)]
        assert "crc" in broker.tail_log(40).lower()
    finally:
        cluster.stop()
