"""BrokerData's ``grpcAddrs`` (the 5.x gRPC endpoints) and the REGISTER_BROKER body fields that carry a broker's
endpoints: written only when served, read back, absent from a RocketMQ-shaped route."""

from __future__ import annotations

import json

import pytest

from krocket.common.register_body import GRPC_ADDR_FIELD, HTTP_URL_FIELD, RegisterBodyError, decode_register_body
from krocket.common.route import GRPC_ADDRS_FIELD, BrokerData, QueueData, TopicRouteData, dumps, loads_lenient


def test_grpc_addrs_round_trip_through_route_json() -> None:
    broker = BrokerData("c", "b", {0: "10.0.0.1:10911", 1: "10.0.0.2:10911"}, {0: "10.0.0.1:8081"})
    route = TopicRouteData([QueueData("b", 4, 4, 6)], [broker])
    data = json.loads(dumps(route.to_json()))
    assert data["brokerDatas"][0][GRPC_ADDRS_FIELD] == {"0": "10.0.0.1:8081"}
    assert TopicRouteData.from_json(data) == route


def test_a_broker_data_without_grpc_keeps_rocketmqs_shape() -> None:
    data = BrokerData("c", "b", {0: "10.0.0.1:10911"}).to_json()
    assert data == {"cluster": "c", "brokerName": "b", "brokerAddrs": {"0": "10.0.0.1:10911"}}
    assert BrokerData.from_json(data).grpc_addrs == {}


def test_grpc_addrs_with_fastjson_unquoted_keys_parse() -> None:
    raw = '{"brokerName":"b","brokerAddrs":{0:"h:1"},"grpcAddrs":{0:"h:8081",1:"h2:8081"}}'
    assert BrokerData.from_json(loads_lenient(raw)).grpc_addrs == {0: "h:8081", 1: "h2:8081"}


def test_register_body_carries_grpc_addr_beside_http_url() -> None:
    body = dumps({"filterServerList": [], HTTP_URL_FIELD: "http://10.0.0.1:10913", GRPC_ADDR_FIELD: "10.0.0.1:8081"})
    read = decode_register_body(body)
    assert (read.grpc_addr, read.http_url) == ("10.0.0.1:8081", "http://10.0.0.1:10913")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        dumps({"filterServerList": []}),  # a broker that serves no gRPC (or a Java broker)
        dumps({GRPC_ADDR_FIELD: 8081}),
        dumps({GRPC_ADDR_FIELD: "no-port"}),
        dumps({GRPC_ADDR_FIELD: "h:0"}),
        dumps({GRPC_ADDR_FIELD: "h:99999"}),
        dumps({GRPC_ADDR_FIELD: "bad host:8081"}),
    ],
)
def test_a_body_without_a_host_port_grpc_addr_names_none(body: bytes) -> None:
    assert decode_register_body(body).grpc_addr == ""


@pytest.mark.parametrize("body", [b"\x00not json", b"[1, 2]"])
def test_a_body_that_is_no_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(RegisterBodyError, match="REGISTER_BROKER body"):
        decode_register_body(body)
