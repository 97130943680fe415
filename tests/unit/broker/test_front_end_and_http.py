"""The broker's remoting front end (busy until it serves, commit around each batch) and its HTTP app over the
typed BrokerState."""

from __future__ import annotations

from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from krocket.broker.config import BrokerConfig
from krocket.broker.http import BrokerState, make_app
from krocket.broker.registration import NameServerRegistration
from krocket.broker.server import RemotingFrontEnd
from krocket.broker.store import MessageStore
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import Connection, RemotingCommand

from tests.unit.broker.broker_rig import BrokerRig, FakeConn


class CountingStore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def hold_commit(self) -> None:
        self.calls.append("hold")

    def commit(self) -> None:
        self.calls.append("commit")


def test_front_end_is_busy_until_it_serves() -> None:
    front_end = RemotingFrontEnd()
    conn = cast(Connection, FakeConn())
    busy = front_end.handle(conn, RemotingCommand(RequestCode.HEART_BEAT, opaque=3))
    assert isinstance(busy, RemotingCommand)
    assert (busy.code, busy.remark, busy.opaque) == (ResponseCode.SYSTEM_BUSY, "the broker is still starting", 3)
    front_end.before_reply()  # nothing to commit yet

    store = CountingStore()
    seen: list[int] = []

    def handler(c: Connection, cmd: RemotingCommand) -> RemotingCommand:
        seen.append(cmd.code)
        return cmd.response(ResponseCode.SUCCESS)

    front_end.serve(cast(MessageStore, store), handler)
    answer = front_end.handle(conn, RemotingCommand(RequestCode.HEART_BEAT))
    assert isinstance(answer, RemotingCommand) and answer.code == ResponseCode.SUCCESS
    front_end.before_reply()
    assert seen == [RequestCode.HEART_BEAT] and store.calls == ["hold", "commit"]


def replication() -> dict[str, Any]:
    return {"role": "master", "slaves": []}


async def test_http_readiness_and_broker_info(rig: BrokerRig) -> None:
    registration = NameServerRegistration(BrokerConfig(), rig.topics, "10.0.0.1:10911", "10.0.0.1:10912")
    state = BrokerState(registration, replication)
    async with TestClient(TestServer(make_app(rig.service, rig.metrics, state))) as client:
        starting = await client.get("/readyz")
        assert starting.status == 503
        assert await starting.json() == {"ready": False, "serving": False, "registered": False}

        state.serving = True
        unregistered = await client.get("/readyz")
        assert unregistered.status == 503 and (await unregistered.json())["serving"] is True

        info = await (await client.get("/api/v1/broker")).json()
        assert (info["addr"], info["haAddr"], info["brokerName"], info["role"]) == (
            "10.0.0.1:10911",
            "10.0.0.1:10912",
            "broker-a",
            "ASYNC_MASTER",
        )
        assert info["replication"] == {"role": "master", "slaves": []} and info["nameServers"] == []
        assert (await client.get("/healthz")).status == 200


async def test_http_topic_api(rig: BrokerRig) -> None:
    registration = NameServerRegistration(BrokerConfig(), rig.topics, "h:1", "h:2")
    app = make_app(rig.service, rig.metrics, BrokerState(registration, replication, serving=True))
    async with TestClient(TestServer(app)) as client:
        created = await client.post("/api/v1/topics", json={"topicName": "Web", "readQueueNums": 2})
        assert created.status == 200 and (await created.json())["writeQueueNums"] == 2
        got = await (await client.get("/api/v1/topics/Web")).json()
        assert [q["queueId"] for q in got["queues"]] == [0, 1]
        assert (await client.post("/api/v1/topics", json={})).status == 400
        assert (await client.delete("/api/v1/topics/Web")).status == 200
        assert (await client.get("/api/v1/topics/Web")).status == 404
