"""NameServer in process: ports, the expiry scan loop, stop."""

from __future__ import annotations

import asyncio

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import ConnectionPool, RemotingCommand, header_fields
from krocket.common.route import dumps
from krocket.namesrv.server import NameServer


def register_cmd() -> RemotingCommand:
    body = dumps(
        {
            "topicConfigSerializeWrapper": {
                "topicConfigTable": {"T": {"topicName": "T", "readQueueNums": 1, "writeQueueNums": 1, "perm": 6}},
                "dataVersion": {"counter": 1},
            },
            "filterServerList": [],
        }
    )
    return RemotingCommand(
        RequestCode.REGISTER_BROKER,
        body=body,
        ext_fields=header_fields(
            {
                "brokerName": "b",
                "brokerAddr": "127.0.0.1:1",
                "clusterName": "c",
                "brokerId": 0,
                "haServerAddr": "127.0.0.1:2",
            }
        ),
    )


async def test_expiry_scan_loop_drops_silent_broker() -> None:
    server = NameServer("127.0.0.1", 0, 0, scan_interval=0.05, expiry=0.2)
    await server.start()
    pool = ConnectionPool()
    try:
        assert server.port > 0 and server.http_port > 0 and server.ready
        addr = f"127.0.0.1:{server.port}"
        resp = await pool.request(addr, register_cmd())
        assert resp.code == ResponseCode.SUCCESS
        assert server.registry.route("T") is not None
        for _ in range(100):
            if server.registry.route("T") is None:
                break
            await asyncio.sleep(0.05)
        assert server.registry.route("T") is None
        assert server.metrics.expired_total == 1
        # The connection itself stays usable.
        resp = await pool.request(addr, RemotingCommand(RequestCode.GET_BROKER_CLUSTER_INFO))
        assert resp.code == ResponseCode.SUCCESS
    finally:
        await pool.close()
        await server.stop()
    assert not server.ready
