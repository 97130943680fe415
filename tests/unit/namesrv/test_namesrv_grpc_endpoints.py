"""The name server learns each broker's gRPC endpoint at registration and hands it out per broker name and id in
routes and the cluster info (BrokerData ``grpcAddrs``), only for brokers that serve gRPC and only while they are
registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from krocket.broker.config import BrokerConfig
from krocket.broker.registration import NameServerRegistration
from krocket.broker.topic_manager import TopicManager
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.register_body import GRPC_ADDR_FIELD
from krocket.common.remoting import RemotingCommand, header_fields
from krocket.common.route import TopicRouteData
from krocket.common.topic import TopicConfig
from krocket.namesrv.console.aggregate import BrokerRef, cluster_rows
from krocket.namesrv.kvconfig import KVConfigStore
from krocket.namesrv.processor import NamesrvProcessor
from krocket.namesrv.registry import Registration, RouteRegistry


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def registration(broker_id: int, addr: str, grpc_addr: str = "", version: int = 1) -> Registration:
    return Registration(
        "c1",
        "broker-a",
        broker_id,
        addr,
        addr.replace("10911", "10912"),
        {"T": TopicConfig("T", 4, 4)} if broker_id == 0 else None,
        {"counter": version, "timestamp": 0},
        conn_id=broker_id + 1,
        grpc_addr=grpc_addr,
    )


def test_route_gives_the_grpc_endpoint_of_each_broker_that_serves_one() -> None:
    registry = RouteRegistry(clock=FakeClock())
    registry.register(registration(0, "10.0.0.1:10911", "10.0.0.1:8081"))
    registry.register(registration(1, "10.0.0.2:10911", "10.0.0.2:8081"))
    registry.register(registration(2, "10.0.0.3:10911"))  # serves no gRPC
    route = registry.route("T")
    assert route is not None
    (broker,) = route.broker_datas
    assert broker.grpc_addrs == {0: "10.0.0.1:8081", 1: "10.0.0.2:8081"}
    assert json.loads(json.dumps(route.to_json()))["brokerDatas"][0]["grpcAddrs"] == {
        "0": "10.0.0.1:8081",
        "1": "10.0.0.2:8081",
    }
    table = registry.cluster_info()["brokerAddrTable"]["broker-a"]
    assert table["grpcAddrs"] == {"0": "10.0.0.1:8081", "1": "10.0.0.2:8081"}
    assert len(table["brokerAddrs"]) == 3


def test_a_group_without_grpc_has_no_grpc_field_in_its_route() -> None:
    registry = RouteRegistry(clock=FakeClock())
    registry.register(registration(0, "10.0.0.1:10911"))
    route = registry.route("T")
    assert route is not None
    assert "grpcAddrs" not in route.to_json()["brokerDatas"][0]
    assert "grpcAddrs" not in registry.cluster_info()["brokerAddrTable"]["broker-a"]


def test_the_endpoint_follows_registrations_and_goes_with_its_broker() -> None:
    clock = FakeClock()
    registry = RouteRegistry(clock=clock)
    registry.register(registration(0, "10.0.0.1:10911", "10.0.0.1:8081"))
    registry.register(registration(1, "10.0.0.2:10911", "10.0.0.2:8081"))
    moved = registry.register(registration(0, "10.0.0.1:10911", "10.0.0.1:9091"))
    assert moved.changed and not moved.first
    assert registry.register(registration(0, "10.0.0.1:10911", "10.0.0.1:9091")).changed is False
    route = registry.route("T")
    assert route is not None and route.broker_datas[0].grpc_addrs == {0: "10.0.0.1:9091", 1: "10.0.0.2:8081"}

    registry.unregister("c1", "broker-a", 1, "10.0.0.2:10911", conn_id=2)
    route = registry.route("T")
    assert route is not None and route.broker_datas[0].grpc_addrs == {0: "10.0.0.1:9091"}

    stopped_serving = registry.register(registration(0, "10.0.0.1:10911"))
    assert stopped_serving.changed
    route = registry.route("T")
    assert route is not None and route.broker_datas[0].grpc_addrs == {}

    registry.register(registration(0, "10.0.0.1:10911", "10.0.0.1:8081"))
    clock.t += registry.expiry + 1
    registry.scan_expired()
    assert registry.route("T") is None


def request(code: int, body: bytes = b"", **fields: Any) -> RemotingCommand:
    return RemotingCommand(code, opaque=9, ext_fields=header_fields(fields), body=body)


class FakeConn:
    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.peer = "127.0.0.1:50000"


async def test_a_brokers_registration_body_reaches_the_route_and_cluster_info(tmp_path: Path) -> None:
    """The broker's own REGISTER_BROKER body (``NameServerRegistration``), through the name server's processor."""
    topics = TopicManager(tmp_path, auto_create=False, default_queue_nums=4)
    topics.load()
    topics.upsert(TopicConfig("T", 2, 2))
    config = BrokerConfig(store_path_root_dir=str(tmp_path))
    broker = NameServerRegistration(config, topics, "127.0.0.1:10911", "127.0.0.1:10912")
    broker.http_url = "http://127.0.0.1:10913"
    broker.grpc_addr = "127.0.0.1:8081"
    proc = NamesrvProcessor(RouteRegistry(), KVConfigStore.in_dir(tmp_path / "kv"))
    conn: Any = FakeConn()

    registered = await proc(
        conn,
        request(
            RequestCode.REGISTER_BROKER,
            broker._body(),
            brokerName=config.broker_name,
            brokerAddr=broker.broker_addr,
            clusterName=config.broker_cluster_name,
            haServerAddr=broker.ha_addr,
            brokerId=0,
        ),
    )
    assert registered.code == ResponseCode.SUCCESS, registered.remark
    (live,) = proc.registry.live_brokers()
    assert (live.http_url, live.grpc_addr) == ("http://127.0.0.1:10913", "127.0.0.1:8081")

    routed = await proc(conn, request(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="T"))
    assert routed.code == ResponseCode.SUCCESS
    route = TopicRouteData.from_json(json.loads(routed.body or b"{}"))
    assert route.broker_datas[0].grpc_addrs == {0: "127.0.0.1:8081"}

    info = await proc(conn, request(RequestCode.GET_BROKER_CLUSTER_INFO))
    assert json.loads(info.body or b"{}")["brokerAddrTable"][config.broker_name]["grpcAddrs"] == {"0": "127.0.0.1:8081"}


def test_a_broker_that_serves_no_grpc_sends_no_grpc_field(tmp_path: Path) -> None:
    topics = TopicManager(tmp_path, auto_create=False, default_queue_nums=4)
    topics.load()
    broker = NameServerRegistration(BrokerConfig(), topics, "127.0.0.1:10911", "127.0.0.1:10912")
    assert broker.grpc_addr == ""
    assert GRPC_ADDR_FIELD not in json.loads(broker._body())


def test_the_consoles_cluster_rows_show_the_grpc_endpoint_next_to_http() -> None:
    refs = [
        BrokerRef("c1", "broker-a", 0, "h:10911", "http://h:10913", 1.0, "h:8081"),
        BrokerRef("c1", "broker-a", 1, "h2:10911", "http://h2:10913", 1.0),
    ]
    rows = cluster_rows(refs, {"h:10911": {"maxPhyOffset": 10}, "h2:10911": {"maxPhyOffset": 10}})
    assert [(r["httpUrl"], r["grpcAddr"]) for r in rows] == [("http://h:10913", "h:8081"), ("http://h2:10913", "")]
