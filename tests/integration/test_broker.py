"""A real broker process: protocol edge cases, bad input, long polling, restarts and crash recovery."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import LocalCluster, start_cluster
from tests.support.remoting import call, pull, pull_all, send


@pytest.fixture
def one_broker(tmp_path: Path):
    c = start_cluster(tmp_path / "c", namesrvs=1, groups=1, flush="sync", segment_bytes=256 * 1024)
    try:
        yield c
    finally:
        c.stop()


async def _with_pool(fn):
    pool = ConnectionPool()
    try:
        return await fn(pool)
    finally:
        await pool.close()


def test_unknown_request_code_gets_request_code_not_supported(one_broker: LocalCluster):
    addr = one_broker.brokers[0].addr

    async def run(pool):
        resp = await call(pool, addr, 9999)
        assert resp.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
        assert "9999" in (resp.remark or "")

    asyncio.run(_with_pool(run))


def test_malformed_frame_closes_only_that_connection(one_broker: LocalCluster):
    broker = one_broker.brokers[0]
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as bad:
        bad.sendall(struct.pack(">ii", 12, 8) + b"not json")
        assert bad.recv(100) == b""  # closed by the broker
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as big:
        big.sendall(struct.pack(">i", 64 * 1024 * 1024))
        assert big.recv(100) == b""

    async def run(pool):
        resp = await send(pool, broker.addr, "AfterGarbage", b"still serving")
        assert resp.code == ResponseCode.SUCCESS

    asyncio.run(_with_pool(run))
    assert "closing connection" in broker.tail_log(50)


def test_oversize_message_and_illegal_topic_are_refused(one_broker: LocalCluster):
    addr = one_broker.brokers[0].addr

    async def run(pool):
        resp = await send(pool, addr, "BigTopic", b"x" * (4 * 1024 * 1024 + 1))
        assert resp.code == ResponseCode.MESSAGE_ILLEGAL and "maxMessageSize" in resp.remark
        resp = await send(pool, addr, "bad topic!", b"x")
        assert resp.code == ResponseCode.MESSAGE_ILLEGAL and "topic name" in resp.remark
        resp = await send(pool, addr, "GoodTopic", b"ok")
        assert resp.code == ResponseCode.SUCCESS

    asyncio.run(_with_pool(run))


def test_pull_past_the_end_reports_offset_moved(one_broker: LocalCluster):
    addr = one_broker.brokers[0].addr

    async def run(pool):
        for i in range(3):
            assert (await send(pool, addr, "Moved", f"m{i}".encode())).code == ResponseCode.SUCCESS
        resp = await pull(pool, addr, "Moved", 0, 100)
        assert resp.code == ResponseCode.PULL_OFFSET_MOVED
        assert int(resp.ext_fields["maxOffset"]) == 3
        resp = await pull(pool, addr, "Moved", 0, 3)
        assert resp.code == ResponseCode.PULL_NOT_FOUND
        resp = await pull(pool, addr, "NoSuchTopic", 0, 0)
        assert resp.code == ResponseCode.TOPIC_NOT_EXIST

    asyncio.run(_with_pool(run))


def test_long_polling_wakes_within_50ms_of_a_send(one_broker: LocalCluster):
    addr = one_broker.brokers[0].addr

    async def run(pool):
        assert (await send(pool, addr, "Poll", b"first")).code == ResponseCode.SUCCESS
        delays = []
        for i in range(10):
            waiter = asyncio.create_task(pull(pool, addr, "Poll", 0, i + 1, suspend_ms=15000))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            sent_at = time.monotonic()
            await send(pool, addr, "Poll", f"m{i}".encode())
            resp = await waiter
            delays.append(time.monotonic() - sent_at)
            assert resp.code == ResponseCode.SUCCESS
        delays.sort()
        assert delays[len(delays) // 2] < 0.05, delays

    asyncio.run(_with_pool(run))


def test_tag_filter_on_the_broker(one_broker: LocalCluster):
    addr = one_broker.brokers[0].addr

    async def run(pool):
        for i in range(6):
            tag = "TagA" if i % 2 == 0 else "TagB"
            await send(pool, addr, "Tags", f"{tag}-{i}".encode(), properties={"TAGS": tag})
        resp = await pull(pool, addr, "Tags", 0, 0, expression="TagB")
        from krocket.common.record import decode_records

        assert [m.body for m in decode_records(resp.body)] == [b"TagB-1", b"TagB-3", b"TagB-5"]

    asyncio.run(_with_pool(run))


def _http(broker, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{broker.http_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_topic_admin_api(one_broker: LocalCluster):
    broker = one_broker.brokers[0]
    assert _http(broker, "GET", "/healthz")[0] == 200
    assert _http(broker, "GET", "/readyz")[0] == 200
    status, body = _http(
        broker, "POST", "/api/v1/topics", {"topicName": "Http1", "readQueueNums": 4, "writeQueueNums": 4}
    )
    assert status == 200 and body["readQueueNums"] == 4
    status, body = _http(broker, "PUT", "/api/v1/topics/Http1", {"readQueueNums": 6, "writeQueueNums": 6})
    assert status == 200 and body["writeQueueNums"] == 6
    assert any(t["topicName"] == "Http1" for t in _http(broker, "GET", "/api/v1/topics")[1]["topics"])
    status, body = _http(broker, "GET", "/api/v1/topics/Http1")
    assert status == 200 and len(body["queues"]) == 6
    assert _http(broker, "POST", "/api/v1/topics", {"topicName": "bad name"})[0] == 400
    assert (
        _http(broker, "POST", "/api/v1/topics", {"topicName": "W", "readQueueNums": 1, "writeQueueNums": 2})[0] == 400
    )
    assert _http(broker, "DELETE", "/api/v1/topics/Http1")[0] == 200
    assert _http(broker, "GET", "/api/v1/topics/Http1")[0] == 404
    assert _http(broker, "DELETE", "/api/v1/topics/Http1")[0] == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "krocket_broker_messages_in_total" in text


def _restart_and_read(cluster: LocalCluster, crash: bool, topic: str, count: int) -> None:
    broker = cluster.brokers[0]
    acked: list[str] = []

    async def produce(pool):
        for i in range(count):
            resp = await send(pool, broker.addr, topic, f"{topic}-{i}".encode(), queue_id=i % 2)
            assert resp.code == ResponseCode.SUCCESS
            acked.append(resp.ext_fields["msgId"])
        resp = await call(
            pool,
            broker.addr,
            RequestCode.UPDATE_CONSUMER_OFFSET,
            {"consumerGroup": "g1", "topic": topic, "queueId": 0, "commitOffset": 7},
        )
        assert resp.code == ResponseCode.SUCCESS

    asyncio.run(_with_pool(produce))
    if crash:
        broker.kill()
    else:
        assert broker.stop() == 0
    broker.start()
    broker.wait_ports()
    cluster.wait_registered()

    async def verify(pool):
        got = []
        for q in (0, 1):
            got += [m.offset_msg_id for m in await pull_all(pool, broker.addr, topic, q)]
        assert sorted(got) == sorted(acked)
        resp = await call(
            pool, broker.addr, RequestCode.QUERY_CONSUMER_OFFSET, {"consumerGroup": "g1", "topic": topic, "queueId": 0}
        )
        assert resp.code == ResponseCode.SUCCESS and resp.ext_fields["offset"] == "7"

    asyncio.run(_with_pool(verify))


def test_clean_restart_keeps_messages_and_offsets(one_broker: LocalCluster):
    _restart_and_read(one_broker, crash=False, topic="Clean", count=200)


def test_kill_9_under_sync_flush_keeps_every_acked_message_and_offset(one_broker: LocalCluster):
    _restart_and_read(one_broker, crash=True, topic="Crash", count=300)


def test_corrupt_commitlog_tail_is_cut_at_startup(one_broker: LocalCluster):
    broker = one_broker.brokers[0]

    async def produce(pool):
        return [(await send(pool, broker.addr, "Torn", f"t{i}".encode())).ext_fields["msgId"] for i in range(20)]

    acked = asyncio.run(_with_pool(produce))
    end = broker.http_json("/api/v1/broker")["maxPhyOffset"]
    broker.kill()
    store = Path(broker.args[broker.args.index("--store-dir") + 1]) / "commitlog"
    segment = sorted(store.iterdir())[-1]
    with open(segment, "r+b") as fh:  # garbage right after the last acked record
        fh.seek(end - int(segment.name))
        fh.write(os.urandom(300))
    broker.start()
    broker.wait_ports()
    one_broker.wait_registered()

    async def verify(pool):
        got = [m.offset_msg_id for m in await pull_all(pool, broker.addr, "Torn", 0)]
        assert got == acked
        assert (await send(pool, broker.addr, "Torn", b"after")).code == ResponseCode.SUCCESS
        got = await pull_all(pool, broker.addr, "Torn", 0)
        assert [m.body for m in got][-1] == b"after" and len(got) == 21

    asyncio.run(_with_pool(verify))
