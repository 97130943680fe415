"""A real name server process on loopback: registration over TCP, routes, HTTP, liveness, bad frames."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import ConnectionPool, RemotingCommand, encode, header_fields
from krocket.common.route import TopicRouteData, dumps


@dataclass
class NamesrvProc:
    proc: subprocess.Popen[bytes]
    port: int
    http_port: int
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="module")
def namesrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamesrvProc]:
    tmp = tmp_path_factory.mktemp("namesrv")
    ports_file, log = tmp / "ports.json", tmp / "namesrv.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "krocket.namesrv",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--http-port",
                "0",
                "--ports-file",
                str(ports_file),
                "--data-dir",
                str(tmp / "data"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 15
        while not ports_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"name server did not start:\n{log.read_text()}")
            time.sleep(0.02)
        ports = json.loads(ports_file.read_text())
        yield NamesrvProc(proc, ports["port"], ports["http_port"], log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert rc == 0, log.read_text()
    assert "name server stopped" in log.read_text()


def register_cmd(name: str, addr: str, topics: dict[str, int], broker_id: int = 0) -> RemotingCommand:
    table = {
        t: {
            "topicName": t,
            "readQueueNums": n,
            "writeQueueNums": n,
            "perm": 6,
            "topicSysFlag": 0,
            "topicFilterType": "SINGLE_TAG",
            "order": False,
        }
        for t, n in topics.items()
    }
    body = dumps(
        {
            "topicConfigSerializeWrapper": {
                "topicConfigTable": table,
                "dataVersion": {"stateVersion": 0, "timestamp": 1, "counter": 1},
            },
            "filterServerList": [],
        }
    )
    return RemotingCommand(
        RequestCode.REGISTER_BROKER,
        body=body,
        ext_fields=header_fields(
            {
                "brokerName": name,
                "brokerAddr": addr,
                "clusterName": "DefaultCluster",
                "brokerId": broker_id,
                "haServerAddr": addr.rsplit(":", 1)[0] + ":10912",
            }
        ),
    )


def route_cmd(topic: str, version: int = 63) -> RemotingCommand:
    return RemotingCommand(
        RequestCode.GET_ROUTEINFO_BY_TOPIC, version=version, ext_fields=header_fields({"topic": topic})
    )


async def test_register_route_http_and_connection_close(namesrv: NamesrvProc) -> None:
    broker, client = ConnectionPool(), ConnectionPool()
    try:
        resp = await broker.request(namesrv.addr, register_cmd("broker-int", "127.0.0.1:20911", {"IntTopic": 4}))
        assert resp.code == ResponseCode.SUCCESS

        resp = await client.request(namesrv.addr, route_cmd("IntTopic"))
        assert resp.code == ResponseCode.SUCCESS
        assert b'"brokerAddrs":{"0":"127.0.0.1:20911"}' in resp.body
        route = TopicRouteData.from_json(json.loads(resp.body))
        assert route.queue_datas[0].read_queue_nums == 4
        assert route.broker("broker-int") is not None

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{namesrv.http}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{namesrv.http}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{namesrv.http}/api/v1/topics") as r:
                assert "IntTopic" in (await r.json())["topicList"]
            async with http.get(f"{namesrv.http}/api/v1/topics/IntTopic/route") as r:
                assert r.status == 200
                assert (await r.json())["brokerDatas"][0]["brokerAddrs"] == {"0": "127.0.0.1:20911"}
            async with http.get(f"{namesrv.http}/api/v1/cluster") as r:
                cluster = await r.json()
                assert "broker-int" in cluster["clusterAddrTable"]["DefaultCluster"]
                [info] = [b for b in cluster["brokers"] if b["brokerName"] == "broker-int"]
                assert info["addr"] == "127.0.0.1:20911" and info["lastUpdateAgeSeconds"] < 10
            async with http.get(f"{namesrv.http}/metrics") as r:
                text = await r.text()
                assert 'krocket_namesrv_requests_total{code="103",name="REGISTER_BROKER"}' in text

            # The broker's connection closes: its route disappears at once.
            await broker.close()
            for _ in range(100):
                resp = await client.request(namesrv.addr, route_cmd("IntTopic"))
                if resp.code == ResponseCode.TOPIC_NOT_EXIST:
                    break
                await asyncio.sleep(0.01)
            assert resp.code == ResponseCode.TOPIC_NOT_EXIST
            async with http.get(f"{namesrv.http}/api/v1/topics/IntTopic/route") as r:
                assert r.status == 404 and "error" in await r.json()
    finally:
        await broker.close()
        await client.close()
    assert "broker registered" in namesrv.log.read_text()


async def _closed_by_server(namesrv: NamesrvProc, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh raw connection; returns what came back before the server closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", namesrv.port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # read() returns only at EOF
    finally:
        writer.close()


async def test_malformed_frames_close_only_that_connection(namesrv: NamesrvProc) -> None:
    good = ConnectionPool()
    try:
        resp = await good.request(namesrv.addr, RemotingCommand(RequestCode.GET_BROKER_CLUSTER_INFO))
        assert resp.code == ResponseCode.SUCCESS
        assert await _closed_by_server(namesrv, b"\xff" * 64) == b""  # negative frame length
        too_long = struct.pack(">ii", 16 * 1024 * 1024 + 1, 0) + b"x" * 100
        assert await _closed_by_server(namesrv, too_long) == b""
        # A frame of legal size whose JSON header is garbage.
        assert await _closed_by_server(namesrv, struct.pack(">ii", 4 + 9, 9) + b"not json!") == b""
        # A valid frame followed by garbage on the same connection: the connection is closed all the same.
        ok = encode(RemotingCommand(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER, opaque=1))
        await _closed_by_server(namesrv, ok + b"\x00\x00\x00\x01")
        # The other connection was not disturbed.
        resp = await good.request(namesrv.addr, RemotingCommand(RequestCode.GET_BROKER_CLUSTER_INFO))
        assert resp.code == ResponseCode.SUCCESS
    finally:
        await good.close()
    assert namesrv.proc.poll() is None


async def test_unknown_code_and_unknown_topic(namesrv: NamesrvProc) -> None:
    pool = ConnectionPool()
    try:
        resp = await pool.request(namesrv.addr, RemotingCommand(4242))
        assert resp.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
        assert "4242" in (resp.remark or "")
        resp = await pool.request(namesrv.addr, route_cmd("NoSuchTopic", version=479))
        assert resp.code == ResponseCode.TOPIC_NOT_EXIST
    finally:
        await pool.close()
