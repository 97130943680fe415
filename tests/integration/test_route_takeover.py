"""No route takeover: a fake REGISTER_BROKER for a live broker's name and id is refused by a real name server.

A raw connection claims to be broker-a's master at a fake address every 0.2 s while krocket.client sends; the
routes keep listing the real broker and every send lands on it; its UNREGISTER_BROKER for the real broker is
refused too. Once the real broker is killed (its connection closes), a registration from another address is
accepted, and it goes as soon as its connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import Admin, Message, Producer, SendStatus
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.headers import RegisterBrokerHeader, UnregisterBrokerHeader
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.route import dumps

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until_async
from tests.support.remoting import pull_all

FAKE_ADDR = "127.0.0.1:1"  # nothing listens there: a send routed to it would fail


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path, namesrvs=1, groups=1)
    try:
        yield c
    finally:
        c.stop()


def fake_registration(topic: str, addr: str = FAKE_ADDR) -> RemotingCommand:
    body = dumps(
        {
            "topicConfigSerializeWrapper": {
                "topicConfigTable": {topic: {"topicName": topic, "readQueueNums": 1, "writeQueueNums": 1, "perm": 6}},
                "dataVersion": {"counter": 1, "stateVersion": 0, "timestamp": 0},
            },
            "filterServerList": [],
        }
    )
    fields = RegisterBrokerHeader(
        broker_name="broker-a",
        broker_addr=addr,
        cluster_name="DefaultCluster",
        ha_server_addr="127.0.0.1:2",
        broker_id=0,
        body_crc32=zlib.crc32(body),
    ).to_fields()
    return RemotingCommand(RequestCode.REGISTER_BROKER, ext_fields=fields, body=body)


async def route_addrs(admin: Admin, topic: str) -> dict[int, str] | None:
    try:
        route = await admin.topic_route(topic)
    except Exception:
        return None
    return route.broker_datas[0].broker_addrs if route.broker_datas else None


async def test_fake_registration_cannot_divert_routes_until_the_holder_is_gone(cluster: LocalCluster) -> None:
    namesrv, real = cluster.namesrvs[0], cluster.brokers[0]
    topic = f"Takeover_{uuid.uuid4().hex[:8]}"
    await create_topic(cluster, topic, queues=2)
    answers: list[RemotingCommand] = []
    attacker = ConnectionPool()

    async def keep_registering() -> None:
        while True:
            answers.append(await attacker.request(namesrv.addr, fake_registration(topic)))
            await asyncio.sleep(0.2)

    faking = asyncio.get_running_loop().create_task(keep_registering())
    try:
        async with Admin(cluster.namesrv_addr) as admin, Producer("takeover-pg", cluster.namesrv_addr) as producer:
            sent = 0
            for i in range(30):
                result = await producer.send(Message(topic, f"m{i}".encode()))
                assert result.status is SendStatus.SEND_OK and result.queue.broker_name == "broker-a"
                sent += 1
                assert await route_addrs(admin, topic) == {0: real.addr}
                await asyncio.sleep(0.1)
            assert len(answers) >= 10
            assert {a.code for a in answers} == {ResponseCode.NO_PERMISSION}
            assert "held by the live broker" in (answers[0].remark or "")
            stored = 0
            pool = ConnectionPool()
            try:
                for queue_id in range(2):
                    stored += len(await pull_all(pool, real.addr, topic, queue_id))
            finally:
                await pool.close()
            assert stored == sent

            # Nor can it unregister the real broker: only the broker's own connection may.
            unregister = UnregisterBrokerHeader(
                broker_name="broker-a", broker_addr=real.addr, cluster_name="DefaultCluster", broker_id=0
            ).to_fields()
            refused = await attacker.request(
                namesrv.addr, RemotingCommand(RequestCode.UNREGISTER_BROKER, ext_fields=unregister)
            )
            assert refused.code == ResponseCode.NO_PERMISSION
            assert await route_addrs(admin, topic) == {0: real.addr}

            # One WARNING naming both addresses, not one per refused frame.
            warnings = [line for line in namesrv.log_path.read_text().splitlines() if "registration refused" in line]
            assert len(warnings) == 1, warnings
            assert "WARNING" in warnings[0] and real.addr in warnings[0] and FAKE_ADDR in warnings[0]

            # The holder's connection closes with its process: the slot is free for another address now.
            real.kill()
            await wait_until_async(lambda: answers[-1].code == ResponseCode.SUCCESS, timeout=10, message="accepted")
            assert await route_addrs(admin, topic) == {0: FAKE_ADDR}

            # And a registration that stops (its connection closes) leaves no stale route behind.
            faking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faking
            await attacker.close()

            async def no_route() -> bool:
                return await route_addrs(admin, topic) is None

            await wait_until_async(no_route, timeout=3, message="the fake's route gone")
    finally:
        faking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await faking
        await attacker.close()
