"""NamesrvProcessor: each request code with a crafted RemotingCommand, and an unknown code."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.register_body import decode_register_body
from krocket.common.remoting import RemotingCommand, header_fields
from krocket.common.route import TopicRouteData, dumps
from krocket.namesrv.kvconfig import KVConfigStore
from krocket.namesrv.processor import NamesrvProcessor
from krocket.namesrv.registry import RouteRegistry


class FakeConn:
    """Stands in for ``Connection``: the processor only reads ``attributes`` and ``peer``."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.peer = "127.0.0.1:50000"


def register_body(topics: dict[str, int], counter: int = 1) -> bytes:
    table = {
        t: {
            "topicName": t,
            "readQueueNums": n,
            "writeQueueNums": n,
            "perm": 6,
            "topicFilterType": "SINGLE_TAG",
            "topicSysFlag": 0,
            "order": False,
        }
        for t, n in topics.items()
    }
    return dumps(
        {
            "topicConfigSerializeWrapper": {
                "topicConfigTable": table,
                "dataVersion": {"stateVersion": 0, "timestamp": 1, "counter": counter},
            },
            "filterServerList": [],
        }
    )


def request(code: int, body: bytes = b"", **fields: Any) -> RemotingCommand:
    return RemotingCommand(code, opaque=7, ext_fields=header_fields(fields), body=body)


def register(
    name: str = "broker-a", broker_id: int = 0, addr: str = "127.0.0.1:10911", topics: dict[str, int] | None = None
) -> RemotingCommand:
    return request(
        RequestCode.REGISTER_BROKER,
        register_body(topics or {}),
        brokerName=name,
        brokerAddr=addr,
        clusterName="DefaultCluster",
        haServerAddr=addr.replace("10911", "10912"),
        brokerId=broker_id,
    )


@pytest.fixture
def proc(tmp_path: Path) -> NamesrvProcessor:
    return NamesrvProcessor(RouteRegistry(), KVConfigStore.in_dir(tmp_path))


async def call(proc: NamesrvProcessor, cmd: RemotingCommand, conn: FakeConn | None = None) -> RemotingCommand:
    resp = await proc(conn or FakeConn(), cmd)  # type: ignore[arg-type]
    assert resp.is_response and resp.opaque == cmd.opaque
    assert isinstance(resp.ext_fields, dict)
    return resp


async def test_register_master_then_slave(proc: NamesrvProcessor) -> None:
    resp = await call(proc, register(topics={"TopicA": 4}))
    assert resp.code == ResponseCode.SUCCESS and resp.ext_fields == {}
    resp = await call(proc, register(broker_id=1, addr="127.0.0.2:10911", topics={"TopicA": 4}))
    assert resp.code == ResponseCode.SUCCESS
    assert resp.ext_fields == {"masterAddr": "127.0.0.1:10911", "haServerAddr": "127.0.0.1:10912"}


async def test_register_missing_field_is_system_error(proc: NamesrvProcessor) -> None:
    resp = await call(proc, request(RequestCode.REGISTER_BROKER, brokerName="b", clusterName="c", brokerId=0))
    assert resp.code == ResponseCode.SYSTEM_ERROR and "brokerAddr" in (resp.remark or "")
    resp = await call(
        proc, request(RequestCode.REGISTER_BROKER, brokerName="b", clusterName="c", brokerId="x", brokerAddr="h:1")
    )
    assert resp.code == ResponseCode.SYSTEM_ERROR and "brokerId" in (resp.remark or "")
    resp = await call(
        proc,
        request(
            RequestCode.REGISTER_BROKER, b"\x00garbage", brokerName="b", clusterName="c", brokerId=0, brokerAddr="h:1"
        ),
    )
    assert resp.code == ResponseCode.SYSTEM_ERROR


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"clusterName": "\ud800"}, "clusterName"),
        ({"clusterName": ""}, "clusterName"),
        ({"brokerName": "broker a"}, "brokerName 'broker a'"),
        ({"brokerName": "b" * 128}, "at most 127"),
        ({"brokerAddr": "127.0.0.1"}, "brokerAddr '127.0.0.1' is not host:port"),
        ({"brokerAddr": "127.0.0.1:0"}, "is not host:port"),
        ({"brokerAddr": "evil\nhost:10911"}, "is not host:port"),
        ({"haServerAddr": "nowhere"}, "haServerAddr"),
    ],
)
async def test_register_with_a_bad_name_or_address_is_refused_and_stores_nothing(
    proc: NamesrvProcessor, fields: dict[str, str], needle: str
) -> None:
    cmd = register()
    assert isinstance(cmd.ext_fields, dict)
    cmd.ext_fields.update(fields)
    resp = await call(proc, cmd)
    assert resp.code != ResponseCode.SUCCESS and needle in (resp.remark or ""), resp.remark
    assert proc.registry.cluster_info()["brokerAddrTable"] == {}


async def test_a_slave_registers_with_ha_port_zero(proc: NamesrvProcessor) -> None:
    cmd = register(broker_id=1, addr="127.0.0.1:10921")
    assert isinstance(cmd.ext_fields, dict)
    cmd.ext_fields["haServerAddr"] = "127.0.0.1:0"  # slaves serve no HA port
    assert (await call(proc, cmd)).code == ResponseCode.SUCCESS


def test_decode_register_body_skips_bad_topics_and_reads_unquoted_keys() -> None:
    body = json.loads(register_body({"Good": 2}))
    body["topicConfigSerializeWrapper"]["topicConfigTable"]["bad topic!"] = {"topicName": "bad topic!"}
    read = decode_register_body(dumps(body))
    assert read.topic_configs is not None and list(read.topic_configs) == ["Good"]
    assert read.data_version == {"stateVersion": 0, "timestamp": 1, "counter": 1}
    empty = decode_register_body(b"")
    assert (empty.topic_configs, empty.data_version) == (None, None)


async def test_route_lookup(proc: NamesrvProcessor) -> None:
    await call(proc, register(topics={"TopicA": 4}))
    resp = await call(proc, request(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="TopicA"))
    assert resp.code == ResponseCode.SUCCESS
    assert b'"brokerAddrs":{"0":"127.0.0.1:10911"}' in resp.body
    route = TopicRouteData.from_json(json.loads(resp.body))
    assert route.queue_datas[0].write_queue_nums == 4


async def test_route_unknown_topic(proc: NamesrvProcessor) -> None:
    resp = await call(proc, request(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="Nope"))
    assert resp.code == ResponseCode.TOPIC_NOT_EXIST
    assert "Nope" in (resp.remark or "") and resp.body == b""


async def test_cluster_info_and_topic_list(proc: NamesrvProcessor) -> None:
    await call(proc, register(topics={"B": 1, "A": 1}))
    resp = await call(proc, request(RequestCode.GET_BROKER_CLUSTER_INFO))
    assert json.loads(resp.body) == {
        "brokerAddrTable": {
            "broker-a": {"cluster": "DefaultCluster", "brokerName": "broker-a", "brokerAddrs": {"0": "127.0.0.1:10911"}}
        },
        "clusterAddrTable": {"DefaultCluster": ["broker-a"]},
    }
    resp = await call(proc, request(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER))
    assert json.loads(resp.body) == {"topicList": ["A", "B"]}


async def test_delete_topic(proc: NamesrvProcessor) -> None:
    await call(proc, register(topics={"A": 1}))
    resp = await call(proc, request(RequestCode.DELETE_TOPIC_IN_NAMESRV, topic="A"))
    assert resp.code == ResponseCode.SUCCESS
    resp = await call(proc, request(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="A"))
    assert resp.code == ResponseCode.TOPIC_NOT_EXIST


async def test_unregister(proc: NamesrvProcessor) -> None:
    broker, stranger = FakeConn(), FakeConn()
    await call(proc, register(topics={"A": 1}), broker)
    unregister = request(
        RequestCode.UNREGISTER_BROKER,
        brokerName="broker-a",
        brokerAddr="127.0.0.1:10911",
        clusterName="DefaultCluster",
        brokerId=0,
    )
    resp = await call(proc, unregister, stranger)  # only the broker's own connection may unregister it
    assert resp.code == ResponseCode.NO_PERMISSION and "another live connection" in (resp.remark or "")
    assert proc.registry.broker_count == 1
    resp = await call(proc, unregister, broker)
    assert resp.code == ResponseCode.SUCCESS
    assert proc.registry.broker_count == 0 and proc.registry.route("A") is None


async def test_connection_id_is_stable_per_connection(proc: NamesrvProcessor) -> None:
    conn_a, conn_b = FakeConn(), FakeConn()
    await call(proc, register("broker-a", topics={"A": 1}), conn_a)
    await call(proc, register("broker-b", addr="127.0.0.3:10911", topics={"A": 1}), conn_b)
    gone = proc.registry.remove_by_connection(conn_a.attributes["namesrv.conn_id"])
    assert [g.broker_name for g in gone] == ["broker-a"]


async def test_kv_config(proc: NamesrvProcessor, tmp_path: Path) -> None:
    resp = await call(
        proc, request(RequestCode.PUT_KV_CONFIG, namespace="ORDER_TOPIC_CONFIG", key="T", value="broker-a:4")
    )
    assert resp.code == ResponseCode.SUCCESS
    resp = await call(proc, request(RequestCode.GET_KV_CONFIG, namespace="ORDER_TOPIC_CONFIG", key="T"))
    assert resp.code == ResponseCode.SUCCESS and resp.ext_fields == {"value": "broker-a:4"}
    resp = await call(proc, request(RequestCode.GET_KVLIST_BY_NAMESPACE, namespace="ORDER_TOPIC_CONFIG"))
    assert json.loads(resp.body) == {"table": {"T": "broker-a:4"}}
    saved = json.loads((tmp_path / "kvConfig.json").read_text())
    assert saved == {"configTable": {"ORDER_TOPIC_CONFIG": {"T": "broker-a:4"}}}
    assert KVConfigStore.in_dir(tmp_path).get("ORDER_TOPIC_CONFIG", "T") == "broker-a:4"
    resp = await call(proc, request(RequestCode.DELETE_KV_CONFIG, namespace="ORDER_TOPIC_CONFIG", key="T"))
    assert resp.code == ResponseCode.SUCCESS
    resp = await call(proc, request(RequestCode.GET_KV_CONFIG, namespace="ORDER_TOPIC_CONFIG", key="T"))
    assert resp.code == ResponseCode.QUERY_NOT_FOUND
    resp = await call(proc, request(RequestCode.GET_KVLIST_BY_NAMESPACE, namespace="ORDER_TOPIC_CONFIG"))
    assert resp.code == ResponseCode.QUERY_NOT_FOUND


async def test_unknown_code(proc: NamesrvProcessor) -> None:
    resp = await call(proc, request(12345))
    assert resp.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
    assert "12345" in (resp.remark or "")
    assert proc.metrics.requests[12345] == 1


async def test_a_registration_for_a_live_broker_from_elsewhere_is_refused_and_logged_once(
    proc: NamesrvProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    broker, fake = FakeConn(), FakeConn()
    fake.peer = "10.6.6.6:40000"
    await call(proc, register(topics={"A": 4}), broker)
    with caplog.at_level(logging.DEBUG, logger="krocket.namesrv.processor"):
        for _ in range(3):
            resp = await call(proc, register(addr="10.6.6.6:10911", topics={"A": 1}), fake)
            assert resp.code == ResponseCode.NO_PERMISSION
            assert "held by the live broker 127.0.0.1:10911" in (resp.remark or "")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1:10911" in warnings[0].message and "10.6.6.6" in warnings[0].message
    route = proc.registry.route("A")
    assert route is not None and route.broker_datas[0].broker_addrs == {0: "127.0.0.1:10911"}
