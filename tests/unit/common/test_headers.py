"""krocket.common.headers: exact wire fields, round trips, both send forms, what RocketMQ's C++ client sends,
and the errors a malformed header gets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from krocket.common.codes import PERM_READ_WRITE, ResponseCode
from krocket.common.errors import HeaderError
from krocket.common.headers import (
    SEND_LONG_NAMES,
    SEND_V2_NAMES,
    ConsumerGroupHeader,
    CreateTopicHeader,
    DeleteTopicInNamesrvHeader,
    NotifyConsumerIdsChangedHeader,
    PullMessageHeader,
    PutKVConfigHeader,
    QueryConsumerOffsetHeader,
    QueryMessageHeader,
    QueueHeader,
    RegisterBrokerHeader,
    RequestHeader,
    SearchOffsetHeader,
    SendMessageHeader,
    UnregisterBrokerHeader,
    UnregisterClientHeader,
    UpdateConsumerOffsetHeader,
    ViewMessageHeader,
)
from krocket.common.headers.fields import camel_case, decode_fields
from krocket.common.remoting import header_fields

PROPS = "TAGS\x01TagA\x02KEYS\x01k-kr-0\x02UNIQ_KEY\x017F000001316716FA0D6A07A07F23E97A\x02WAIT\x01true\x02"

# What krocket's producer sent before the header classes (a dict of raw values through header_fields).
PRODUCER_V2 = header_fields(
    {
        "a": "pg",
        "b": "T",
        "c": "TBW102",
        "d": 4,
        "e": 3,
        "f": 1,
        "g": 1796211158822,
        "h": 7,
        "i": PROPS,
        "j": 0,
        "k": False,
        "m": False,
    }
)

# SEND_MESSAGE (10) as rocketmq==0.4.4 (the C++ core) sends it: long names, booleans as "0"/"1".
CPP_SEND = {
    "AccessKey": "",
    "OnsChannel": "ALIYUN",
    "Signature": "iLgj1NkKh93dntYEKptTM0z2uaY=",
    "batch": "0",
    "bornTimestamp": "1796211157448",
    "defaultTopic": "TBW102",
    "defaultTopicQueueNums": "4",
    "flag": "0",
    "producerGroup": "rmq-conformance-producer",
    "properties": "KEYS\x01key-0\x02TAGS\x01TagA\x02WAIT\x01true\x02",
    "queueId": "0",
    "reconsumeTimes": "0",
    "sysFlag": "0",
    "topic": "CppToKrocket",
    "unitMode": "0",
}

# PULL_MESSAGE (11) from the C++ client (suspend and subscription bits set).
CPP_PULL = {
    "AccessKey": "",
    "OnsChannel": "ALIYUN",
    "Signature": "jF0cJEZ8aGjwchZQGQrujGDRp+A=",
    "commitOffset": "0",
    "consumerGroup": "cpp-consumers",
    "maxMsgNums": "32",
    "queueId": "0",
    "queueOffset": "0",
    "subVersion": "1796211158906",
    "subscription": "*",
    "suspendTimeoutMillis": "15000",
    "sysFlag": "6",
    "topic": "KrocketToCpp",
}


def producer_header(**overrides: Any) -> SendMessageHeader:
    values: dict[str, Any] = dict(
        producer_group="pg",
        topic="T",
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=3,
        sys_flag=1,
        born_timestamp=1796211158822,
        flag=7,
        properties=PROPS,
        reconsume_times=0,
        unit_mode=False,
        batch=False,
    )
    values.update(overrides)
    return SendMessageHeader(**values)


# -- SEND_MESSAGE / SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE ----------------------------------------------


def test_v2_fields_are_exactly_what_the_producer_sent() -> None:
    fields = producer_header().to_v2_fields()
    assert fields == PRODUCER_V2
    assert list(fields) == list(PRODUCER_V2)  # the order, too: it is the JSON on the wire


def test_v2_batch_flag_and_optional_fields() -> None:
    assert producer_header(batch=True).to_v2_fields()["m"] == "true"
    fields = producer_header(max_reconsume_times=16, broker_name="broker-a", default_topic=None).to_v2_fields()
    assert "c" not in fields and fields["l"] == "16" and fields["n"] == "broker-a"
    assert list(fields) == ["a", "b", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n"]


def test_names_are_one_table_of_long_and_v2_names() -> None:
    assert [f.name for f in dataclasses.fields(SendMessageHeader)] == [
        f.name for f in dataclasses.fields(SEND_V2_NAMES)
    ]
    assert dataclasses.astuple(SEND_V2_NAMES) == tuple("abcdefghijklmn")
    assert dataclasses.astuple(SEND_LONG_NAMES) == tuple(
        camel_case(f.name) for f in dataclasses.fields(SEND_LONG_NAMES)
    )


@pytest.mark.parametrize("optional", [{}, {"max_reconsume_times": 3, "broker_name": "b", "unit_mode": True}])
def test_send_round_trips_in_both_forms(optional: dict[str, Any]) -> None:
    header = producer_header(batch=True, **optional)
    assert SendMessageHeader.from_fields(header.to_v2_fields()) == header
    assert SendMessageHeader.from_fields(header.to_fields()) == header
    long = header.to_fields()
    assert long["topic"] == "T" and long["queueId"] == "3" and long["batch"] == "true"
    assert {SEND_LONG_NAMES.topic, SEND_LONG_NAMES.properties} <= set(long)


def test_decodes_the_cpp_clients_send_message() -> None:
    header = SendMessageHeader.from_fields(CPP_SEND)
    assert header == SendMessageHeader(
        producer_group="rmq-conformance-producer",
        topic="CppToKrocket",
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=0,
        sys_flag=0,
        born_timestamp=1796211157448,
        flag=0,
        properties=CPP_SEND["properties"],
        reconsume_times=0,
        unit_mode=False,
        batch=False,
    )


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("TRUE", True), ("0", False), ("", False)])
def test_send_booleans_accept_true_and_1(raw: str, expected: bool) -> None:
    assert SendMessageHeader.from_fields({**CPP_SEND, "batch": raw}).batch is expected
    assert SendMessageHeader.from_fields({**PRODUCER_V2, "k": raw}).unit_mode is expected


def test_send_defaults_for_a_minimal_header() -> None:
    header = SendMessageHeader.from_fields({"b": "T"})
    assert header == SendMessageHeader(producer_group="", topic="T")
    assert (header.queue_id, header.default_topic_queue_nums, header.default_topic, header.properties) == (
        -1,
        4,
        None,
        "",
    )
    empty_ints = SendMessageHeader.from_fields({"topic": "T", "queueId": "", "sysFlag": "", "flag": ""})
    assert (empty_ints.queue_id, empty_ints.sys_flag, empty_ints.flag) == (-1, 0, 0)


def test_long_names_win_when_both_forms_are_there() -> None:
    header = SendMessageHeader.from_fields({"topic": "Long", "b": "Short", "queueId": "2", "e": "5"})
    assert header.topic == "Long" and header.queue_id == 2


def test_send_without_a_topic_is_refused() -> None:
    for fields in ({"a": "pg", "e": "1"}, {"producerGroup": "pg"}):
        with pytest.raises(HeaderError, match="lacks the field 'topic'") as info:
            SendMessageHeader.from_fields(fields)
        assert info.value.code == ResponseCode.SYSTEM_ERROR and info.value.field == "topic"


@pytest.mark.parametrize(
    ("key", "name"),
    [("e", "queueId"), ("f", "sysFlag"), ("g", "bornTimestamp"), ("d", "defaultTopicQueueNums"), ("h", "flag")],
)
def test_a_bad_integer_is_named_by_its_long_name(key: str, name: str) -> None:
    with pytest.raises(HeaderError, match=f"field '{name}' must be an integer, got 'x1'") as info:
        SendMessageHeader.from_fields({**PRODUCER_V2, key: "x1"})
    assert info.value.field == name and info.value.value == "x1"
    with pytest.raises(HeaderError, match=f"'{name}'"):
        SendMessageHeader.from_fields({**CPP_SEND, name: "x1"})


def test_the_first_bad_integer_is_reported() -> None:
    with pytest.raises(HeaderError, match="'queueId'"):
        SendMessageHeader.from_fields({**PRODUCER_V2, "h": "bad", "e": "bad"})


# -- PULL_MESSAGE --------------------------------------------------------------------------------------


def test_pull_fields_are_what_the_client_sent() -> None:
    header = PullMessageHeader(
        consumer_group="g",
        topic="T",
        queue_id=1,
        queue_offset=40,
        max_msg_nums=32,
        sys_flag=6,
        commit_offset=0,
        suspend_timeout_millis=15000,
        subscription="A || B",
        sub_version=1796211157478,
        expression_type="TAG",
    )
    legacy = header_fields(
        {
            "consumerGroup": "g",
            "topic": "T",
            "queueId": 1,
            "queueOffset": 40,
            "maxMsgNums": 32,
            "sysFlag": 6,
            "commitOffset": 0,
            "suspendTimeoutMillis": 15000,
            "subscription": "A || B",
            "subVersion": 1796211157478,
            "expressionType": "TAG",
        }
    )
    fields = header.to_fields()
    assert fields == legacy and list(fields) == list(legacy)
    assert PullMessageHeader.from_fields(fields) == header


def test_pull_decodes_the_cpp_client_and_the_slow_path_agrees() -> None:
    header = PullMessageHeader.from_fields(CPP_PULL)
    assert (header.consumer_group, header.topic, header.queue_id, header.queue_offset) == (
        "cpp-consumers",
        "KrocketToCpp",
        0,
        0,
    )
    assert (header.sys_flag, header.suspend_timeout_millis, header.subscription, header.expression_type) == (
        6,
        15000,
        "*",
        None,
    )
    assert decode_fields(PullMessageHeader, CPP_PULL) == header
    minimal = {"consumerGroup": "g", "topic": "T", "queueId": "0", "queueOffset": "5"}
    assert PullMessageHeader.from_fields(minimal) == decode_fields(PullMessageHeader, minimal)
    assert PullMessageHeader.from_fields(minimal).commit_offset == -1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"topic": "T", "queueId": "0", "queueOffset": "0"}, "lacks the field 'consumerGroup'"),
        ({"consumerGroup": "g", "topic": "T", "queueOffset": "0"}, "lacks the integer field 'queueId'"),
        ({"consumerGroup": "g", "topic": "T", "queueId": "", "queueOffset": "0"}, "lacks the integer field 'queueId'"),
        ({**CPP_PULL, "maxMsgNums": "many"}, "field 'maxMsgNums' must be an integer, got 'many'"),
        ({**CPP_PULL, "subVersion": "v1"}, "field 'subVersion' must be an integer"),
    ],
)
def test_pull_errors_name_the_field(fields: dict[str, str], message: str) -> None:
    with pytest.raises(HeaderError, match=message):
        PullMessageHeader.from_fields(fields)


# -- the other headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "wire"),
    [
        (
            QueryConsumerOffsetHeader("g", "T", 2, set_zero_if_not_found=False),
            {"consumerGroup": "g", "topic": "T", "queueId": "2", "setZeroIfNotFound": "false"},
        ),
        (
            UpdateConsumerOffsetHeader("g", "T", 2, 99),
            {"consumerGroup": "g", "topic": "T", "queueId": "2", "commitOffset": "99"},
        ),
        (QueueHeader("T", 1), {"topic": "T", "queueId": "1"}),
        (SearchOffsetHeader("T", 1, 1700000000000), {"topic": "T", "queueId": "1", "timestamp": "1700000000000"}),
        (UnregisterClientHeader("10.0.0.1@1", "pg", None), {"clientID": "10.0.0.1@1", "producerGroup": "pg"}),
        (ConsumerGroupHeader("g"), {"consumerGroup": "g"}),
        (NotifyConsumerIdsChangedHeader("g"), {"consumerGroup": "g"}),
        (
            CreateTopicHeader("T", "TBW102", 4, 2, PERM_READ_WRITE, "SINGLE_TAG", 0, True),
            {
                "topic": "T",
                "defaultTopic": "TBW102",
                "readQueueNums": "4",
                "writeQueueNums": "2",
                "perm": "6",
                "topicFilterType": "SINGLE_TAG",
                "topicSysFlag": "0",
                "order": "true",
            },
        ),
        (ViewMessageHeader(offset=123), {"offset": "123"}),
        (
            QueryMessageHeader("T", "k1", 5, 1, 2),
            {"topic": "T", "key": "k1", "maxNum": "5", "beginTimestamp": "1", "endTimestamp": "2"},
        ),
        (
            RegisterBrokerHeader(
                broker_name="broker-a",
                broker_addr="10.0.0.1:10911",
                cluster_name="DefaultCluster",
                ha_server_addr="10.0.0.1:10912",
                broker_id=0,
                body_crc32=12345,
                heartbeat_timeout_millis=120_000,
            ),
            {
                "brokerName": "broker-a",
                "brokerAddr": "10.0.0.1:10911",
                "clusterName": "DefaultCluster",
                "haServerAddr": "10.0.0.1:10912",
                "brokerId": "0",
                "compressed": "false",
                "bodyCrc32": "12345",
                "heartbeatTimeoutMillis": "120000",
            },
        ),
        (
            UnregisterBrokerHeader("broker-a", "10.0.0.1:10911", "DefaultCluster", 1),
            {
                "brokerName": "broker-a",
                "brokerAddr": "10.0.0.1:10911",
                "clusterName": "DefaultCluster",
                "brokerId": "1",
            },
        ),
        (DeleteTopicInNamesrvHeader("T"), {"topic": "T"}),
    ],
)
def test_wire_fields_and_round_trip(header: RequestHeader, wire: dict[str, str]) -> None:
    fields = header.to_fields()
    assert fields == wire and list(fields) == list(wire)
    assert type(header).from_fields(fields) == header


def test_broker_defaults_for_missing_fields() -> None:
    assert QueryConsumerOffsetHeader.from_fields(
        {"consumerGroup": "g", "topic": "T", "queueId": "0"}
    ).set_zero_if_not_found
    assert not QueryConsumerOffsetHeader.from_fields(
        {"consumerGroup": "g", "topic": "T", "queueId": "0", "setZeroIfNotFound": ""}
    ).set_zero_if_not_found  # as before: a present field is read, "" is not true
    assert CreateTopicHeader.from_fields({"topic": "T"}) == CreateTopicHeader(
        "T", None, 8, 8, PERM_READ_WRITE, "SINGLE_TAG", 0, False
    )
    assert CreateTopicHeader.from_fields({"topic": "T", "order": "1"}).order
    assert UnregisterClientHeader.from_fields({}) == UnregisterClientHeader("", None, None)
    assert ViewMessageHeader.from_fields({"msgId": "ABC"}) == ViewMessageHeader(-1, "ABC")
    assert QueryMessageHeader.from_fields({"topic": "T", "key": "k"}).end_timestamp == 2**62


def test_cold_header_errors() -> None:
    with pytest.raises(HeaderError, match="lacks the integer field 'queueId'"):
        QueueHeader.from_fields({"topic": "T"})
    with pytest.raises(HeaderError, match="field 'timestamp' must be an integer, got 'soon'"):
        SearchOffsetHeader.from_fields({"topic": "T", "queueId": "0", "timestamp": "soon"})
    with pytest.raises(HeaderError, match="lacks the field 'consumerGroup'"):
        ConsumerGroupHeader.from_fields({"clientID": "x"})
    assert QueueHeader.from_fields({"topic": "", "queueId": "0"}).topic == ""  # brokers take an empty string


def test_name_server_headers_count_an_empty_required_field_as_missing() -> None:
    good = RegisterBrokerHeader(broker_name="b", broker_addr="h:1", cluster_name="c", broker_id=0).to_fields()
    with pytest.raises(HeaderError, match="'brokerAddr'") as info:
        RegisterBrokerHeader.from_fields({**good, "brokerAddr": ""})
    assert info.value.value is None
    with pytest.raises(HeaderError, match="'brokerId' must be an integer") as bad:
        RegisterBrokerHeader.from_fields({**good, "brokerId": "one"})
    assert bad.value.value == "one"
    assert RegisterBrokerHeader.from_fields({**good, "haServerAddr": ""}).ha_server_addr == ""
    assert DeleteTopicInNamesrvHeader.from_fields({"topic": "T", "clusterName": ""}).cluster_name == ""
    assert PutKVConfigHeader.from_fields({"namespace": "n", "key": "k", "value": ""}).value == ""
    assert PutKVConfigHeader.from_fields({"namespace": "n", "key": "k"}).value is None
