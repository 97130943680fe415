"""The broker-wide write permission (RocketMQ's brokerPermission) and the admin HTTP calls the operator's day-two
work stands on: withdraw and restore writes (the name servers route producers away at once), the lag a drain
waits on, and subscription groups created, read and deleted over HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from krocket.client import Admin, Message, Producer, PullConsumer
from krocket.client.types import PullStatus
from krocket.common.codes import PERM_READ, PERM_READ_WRITE, RequestCode, ResponseCode
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import LocalCluster, create_topic, start_cluster
from tests.support.remoting import call, send

TOPIC = "Payments"


def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def two_groups(tmp_path: Path):
    c = start_cluster(tmp_path / "c", namesrvs=1, groups=2)
    try:
        asyncio.run(create_topic(c, TOPIC, queues=2))
        yield c
    finally:
        c.stop()


async def _route_perms(cluster: LocalCluster) -> dict[str, int]:
    async with Admin(cluster.namesrv_addr) as admin:
        route = await admin.topic_route(TOPIC)
    return {q.broker_name: q.perm for q in route.queue_datas}


async def _wait_route_perm(cluster: LocalCluster, broker: str | None, perm: int) -> None:
    for _ in range(100):
        if (await _route_perms(cluster)).get(broker) == perm:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"route of {TOPIC} never showed perm {perm} for {broker}: {await _route_perms(cluster)}")


def test_withdrawn_write_permission_refuses_sends_routes_producers_away_and_keeps_reads(two_groups: LocalCluster):
    a, b = two_groups.brokers[0], two_groups.brokers[1]

    async def run() -> None:
        pool = ConnectionPool()
        try:
            assert (await send(pool, a.addr, TOPIC, b"before")).code == ResponseCode.SUCCESS
            status, body = http(a.http_port, "PUT", "/api/v1/broker/permission", {"writable": False})
            assert (status, body) == (200, {"brokerPermission": PERM_READ})
            assert http(a.http_port, "GET", "/api/v1/broker")[1]["brokerPermission"] == PERM_READ
            # the name servers hear of it at once (a new data version registers right away)
            await _wait_route_perm(two_groups, a.broker_name, PERM_READ)
            assert (await _route_perms(two_groups))[b.broker_name] == PERM_READ_WRITE
            refused = await send(pool, a.addr, TOPIC, b"during")
            assert refused.code == ResponseCode.NO_PERMISSION and "no writes" in refused.remark
            # a producer that looks the route up sends only to the writable group
            async with Producer("perm-producer", two_groups.namesrv_addr) as producer:
                results = [await producer.send(Message(TOPIC, f"m{i}".encode())) for i in range(6)]
            assert {r.queue.broker_name for r in results} == {b.broker_name}
            # reads go on: what broker-a holds can still be consumed
            consumer = PullConsumer("perm-reader", two_groups.namesrv_addr)
            await consumer.start()
            try:
                bodies = []
                for queue in await consumer.fetch_queues(TOPIC):
                    if queue.broker_name == a.broker_name:
                        result = await consumer.pull(queue, "*", 0, 32)
                        if result.status == PullStatus.FOUND:
                            bodies += [m.body for m in result.messages]
                assert bodies == [b"before"]
            finally:
                await consumer.shutdown()
            assert http(a.http_port, "PUT", "/api/v1/broker/permission", {"writable": True})[1] == {
                "brokerPermission": PERM_READ_WRITE
            }
            await _wait_route_perm(two_groups, a.broker_name, PERM_READ_WRITE)
            assert (await send(pool, a.addr, TOPIC, b"after")).code == ResponseCode.SUCCESS
        finally:
            await pool.close()

    asyncio.run(run())


def test_permission_through_update_broker_config_and_bad_values(two_groups: LocalCluster):
    a = two_groups.brokers[0]

    async def run() -> None:
        pool = ConnectionPool()
        try:
            for bad in (b"brokerPermission=3", b"brokerPermission=7"):
                resp = await call(pool, a.addr, RequestCode.UPDATE_BROKER_CONFIG, body=bad)
                assert resp.code != ResponseCode.SUCCESS and "brokerPermission must be" in resp.remark
            resp = await call(pool, a.addr, RequestCode.UPDATE_BROKER_CONFIG, body=b"brokerPermission=4")
            assert resp.code == ResponseCode.SUCCESS
            await _wait_route_perm(two_groups, a.broker_name, PERM_READ)
            assert (await send(pool, a.addr, TOPIC, b"x")).code == ResponseCode.NO_PERMISSION
            await call(pool, a.addr, RequestCode.UPDATE_BROKER_CONFIG, body=b"brokerPermission=6")
            assert (await send(pool, a.addr, TOPIC, b"x")).code == ResponseCode.SUCCESS
        finally:
            await pool.close()

    asyncio.run(run())
    for body in ({"perm": 5}, {"writable": "no"}, {}, {"perm": True}):
        status, answer = http(a.http_port, "PUT", "/api/v1/broker/permission", body)
        assert status == 400 and answer["error"], (body, answer)
    assert http(a.http_port, "GET", "/api/v1/broker")[1]["brokerPermission"] == PERM_READ_WRITE


def test_lag_by_topic_counts_held_messages_and_each_groups_lag(two_groups: LocalCluster):
    a = two_groups.brokers[0]

    async def run() -> None:
        pool = ConnectionPool()
        try:
            for i in range(5):
                assert (await send(pool, a.addr, TOPIC, f"m{i}".encode(), queue_id=i % 2)).code == ResponseCode.SUCCESS
        finally:
            await pool.close()
        consumer = PullConsumer("lag-group", two_groups.namesrv_addr)
        await consumer.start()
        try:
            queue = next(
                q for q in await consumer.fetch_queues(TOPIC) if q.broker_name == a.broker_name and q.queue_id == 0
            )
            result = await consumer.pull(queue, "*", 0, 2)
            await consumer.update_offset(queue, result.next_begin_offset)
        finally:
            await consumer.shutdown()

    asyncio.run(run())
    rows = {r["topic"]: r for r in http(a.http_port, "GET", "/api/v1/lag")[1]["topics"]}
    assert rows[TOPIC]["messages"] == 5
    # queue 0 holds 3 and the group read 2 of them; queue 1 (2 messages) it never read
    assert rows[TOPIC]["groups"] == {"lag-group": 1}
    assert http(two_groups.brokers[1].http_port, "GET", "/api/v1/lag")[1]["topics"] == []


def test_subscription_groups_over_http(two_groups: LocalCluster):
    port = two_groups.brokers[0].http_port
    status, saved = http(port, "PUT", "/api/v1/groups/billing", {"retryMaxTimes": 3, "consumeMessageOrderly": True})
    assert status == 200 and saved["groupName"] == "billing" and saved["retryMaxTimes"] == 3
    assert http(port, "GET", "/api/v1/groups/billing")[1]["consumeMessageOrderly"] is True
    assert http(port, "PUT", "/api/v1/groups/billing", {"retryMaxTimes": -1})[0] == 400
    assert http(port, "PUT", "/api/v1/groups/bad%20name", {})[0] == 400
    assert http(port, "PUT", "/api/v1/groups/billing", ["not", "an", "object"])[0] == 400
    assert http(port, "DELETE", "/api/v1/groups/billing") == (200, {"deleted": "billing"})
    assert http(port, "DELETE", "/api/v1/groups/billing")[0] == 404
    assert http(port, "GET", "/api/v1/groups/billing")[0] == 404
    assert http(port, "GET", "/api/v1/groups/nobody/offsets") == (
        200,
        {"group": "nobody", "clients": [], "offsets": []},
    )
