from dataclasses import dataclass

import pytest

from krocket.common.addresses import parse_addr_list, resolve_addr_list
from krocket.common.config import build_config
from krocket.common.errors import ConfigError, MessageIllegalError
from krocket.common.route import BrokerData, QueueData, TopicRouteData, loads_lenient
from krocket.common.topic import TopicConfig, validate_topic


def test_addr_list_parsing():
    assert parse_addr_list("a:1;b:2") == [("a", 1), ("b", 2)]
    assert parse_addr_list("a") == [("a", 9876)]
    with pytest.raises(ConfigError):
        parse_addr_list("a:notaport")
    with pytest.raises(ConfigError):
        parse_addr_list(" ; ")
    assert resolve_addr_list("localhost:9876") == ["127.0.0.1:9876"]


@pytest.mark.parametrize("name", ["", "a b", "x" * 128, "topic/1", "t\u00e9"])
def test_illegal_topic_names(name):
    with pytest.raises(MessageIllegalError):
        validate_topic(name)


def test_topic_config_json_round_trip():
    cfg = TopicConfig("T", 4, 2, 6)
    assert TopicConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(MessageIllegalError):
        TopicConfig.from_json({"topicName": "T", "readQueueNums": -1})


def test_route_json_and_lenient_parse():
    route = TopicRouteData([QueueData("b", 4, 4, 6)], [BrokerData("c", "b", {0: "127.0.0.1:1"})])
    data = route.to_json()
    assert data["brokerDatas"][0]["brokerAddrs"] == {"0": "127.0.0.1:1"}
    assert TopicRouteData.from_json(data) == route
    legacy = '{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:1",1:"127.0.0.1:2"},"brokerName":"b"}],"queueDatas":[]}'
    assert TopicRouteData.from_json(loads_lenient(legacy)).broker_datas[0].broker_addrs == {
        0: "127.0.0.1:1",
        1: "127.0.0.1:2",
    }


@dataclass
class _Cfg:
    some_port: int = 1
    enabled: bool = False
    name: str = "x"


def test_build_config_layers_and_errors():
    cfg = build_config(_Cfg, {"somePort": "5", "enabled": "true"}, {"name": "y"})
    assert (cfg.some_port, cfg.enabled, cfg.name) == (5, True, "y")
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        build_config(_Cfg, {"nope": 1})
    with pytest.raises(ConfigError, match="somePort"):
        build_config(_Cfg, {"somePort": "x"})
