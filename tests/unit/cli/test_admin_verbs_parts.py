"""Pure parts of the mqadmin verbs: stats row selection, the TPS column, properties text, runtime config keys and
the parsing of ``krocket broker`` verbs next to the broker server's own flags."""

from __future__ import annotations

import pytest

from krocket.broker.config import BrokerConfig
from krocket.broker.runtime_config import RUNTIME_KEYS, apply_runtime_update, config_table
from krocket.cli.cluster_commands import minute_tps
from krocket.cli.main import build_parser
from krocket.cli.stats_commands import select_rows
from krocket.common.errors import ConfigError
from krocket.common.properties import parse_properties, properties_text

PER_BROKER = [
    {
        "brokerName": "broker-a",
        "topics": [{"topic": "T", "inTps": 1.5, "inMsgTotal": 9}, {"topic": "U", "inTps": 0.0, "inMsgTotal": 1}],
        "groups": [{"group": "g", "topic": "T", "outTps": 1.0, "outMsgTotal": 5, "lag": 4}],
    },
    {"brokerName": "broker-b", "topics": [{"topic": "T", "inTps": 0.5, "inMsgTotal": 3}], "groups": []},
]


def test_stats_rows_carry_their_broker_and_a_group_filter_keeps_the_topics_it_reads() -> None:
    topics, groups = select_rows(PER_BROKER, None, "g")
    assert [(t["topic"], t["brokerName"]) for t in topics] == [("T", "broker-a"), ("T", "broker-b")]
    assert groups == [{"group": "g", "topic": "T", "outTps": 1.0, "outMsgTotal": 5, "lag": 4, "brokerName": "broker-a"}]
    topics, groups = select_rows(PER_BROKER, "U", None)
    assert [t["topic"] for t in topics] == ["U"] and groups == []


@pytest.mark.parametrize(("value", "tps"), [("1.50 2.25", 2.25), ("3.0", 3.0), (None, None), ("", None), ("n/a", None)])
def test_minute_tps_reads_the_last_number_of_the_runtime_field(value: str | None, tps: float | None) -> None:
    assert minute_tps(value) == tps


def test_properties_round_trip_and_refuse_a_line_without_key() -> None:
    table = {"a": "1", "b": "x=y"}
    assert parse_properties(properties_text(table)) == table
    assert parse_properties("# comment\n\n  k : v \n") == {"k": "v"}
    with pytest.raises(ConfigError):
        parse_properties("=nokey")


def test_every_runtime_key_is_a_broker_setting_and_others_are_refused_with_the_list() -> None:
    config = BrokerConfig()
    assert set(RUNTIME_KEYS) <= set(config_table(config))
    assert apply_runtime_update(config, {"longPollingEnable": "false"}) == {"longPollingEnable": "false"}
    assert config.long_polling_enable is False
    with pytest.raises(
        ConfigError, match="brokerName cannot change.*changeable at run time: brokerPermission, longPollingEnable"
    ):
        apply_runtime_update(config, {"brokerName": "x"})


def test_broker_verbs_parse_next_to_the_broker_servers_flags() -> None:
    parser = build_parser()
    served = parser.parse_args(["broker", "--config", "b.yaml", "--broker-name", "b"])
    assert served.func.__name__ == "run_broker"
    status = parser.parse_args(["broker", "status", "--broker", "broker-a", "--tls", "--json"])
    assert (status.func.__name__, status.broker, status.json) == ("broker_status", "broker-a", True)
    wipe = parser.parse_args(["broker", "wipe-write-perm", "broker-a"])
    assert (wipe.func.__name__, wipe.broker_name) == ("broker_write_perm", "broker-a")
    with pytest.raises(SystemExit):
        parser.parse_args(["message", "by-offset", "--topic", "T", "--broker", "b", "--queue", "0", "--offset", "-1"])
