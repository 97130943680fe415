"""Subscription groups (200, 201, 207) and their checks on pulls, consume stats (208), consumer connections (203)
and offset reset by time (222), through the broker's processors over a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krocket.broker.subscription_group_manager import SubscriptionGroupManager
from krocket.common.codes import (
    PULL_FLAG_COMMIT_OFFSET,
    PULL_FLAG_SUBSCRIPTION,
    LanguageCode,
    RequestCode,
    ResponseCode,
)
from krocket.common.errors import MessageIllegalError
from krocket.common.headers import UpdateConsumerOffsetHeader
from krocket.common.headers.groups import (
    RESET_TO_LAST,
    DeleteSubscriptionGroupHeader,
    GetConsumerConnectionListHeader,
    GetConsumeStatsHeader,
    ResetOffsetHeader,
    decode_offset_table,
    parse_queue_key,
)
from krocket.common.remoting import RemotingCommand
from krocket.common.subscription_group import SubscriptionGroupConfig

from tests.unit.broker.broker_rig import BrokerRig, FakeConn, make_rig, pull_request, request, send_header, send_v2


class RecordingConn(FakeConn):
    """A client connection that keeps what the broker sends it one way."""

    def __init__(self, peer: str = "10.0.0.7:40000") -> None:
        super().__init__(peer)
        self.told: list[RemotingCommand] = []

    async def oneway(self, cmd: RemotingCommand) -> None:
        self.told.append(cmd)


def group_body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def heartbeat(group: str, topic: str, consume_type: str = "CONSUME_PASSIVELY") -> RemotingCommand:
    data = {
        "clientID": "10.0.0.7@client-1",
        "consumerDataSet": [
            {
                "groupName": group,
                "consumeType": consume_type,
                "messageModel": "CLUSTERING",
                "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
                "subscriptionDataSet": [{"topic": topic, "subString": "TagA", "tagsSet": ["TagA"], "codeSet": [1]}],
            }
        ],
    }
    return RemotingCommand(RequestCode.HEART_BEAT, body=json.dumps(data).encode(), language=0, version=373)


async def send_n(rig: BrokerRig, topic: str, n: int, queue_id: int = 0) -> None:
    for i in range(n):
        response = await rig.answer(send_v2(send_header(topic, queue_id), f"m{i}".encode()))
        assert response.code == ResponseCode.SUCCESS, response.remark


# -- the manager ----------------------------------------------------------------------------------------------


def test_manager_persists_in_rocketmq_file_and_shape(tmp_path: Path) -> None:
    manager = SubscriptionGroupManager(tmp_path, auto_create=True)
    manager.upsert(SubscriptionGroupConfig("g1", retry_max_times=3, consume_message_orderly=True))
    assert manager.find_or_create("g2") is not None
    manager.persist()  # the whole table (changes go to subscriptionGroup.json.journal first)
    on_disk = json.loads((tmp_path / "subscriptionGroup.json").read_text())
    assert on_disk["subscriptionGroupTable"]["g1"]["retryMaxTimes"] == 3
    assert on_disk["subscriptionGroupTable"]["g2"] == SubscriptionGroupConfig("g2").to_json()
    assert on_disk["dataVersion"]["counter"] == 2

    again = SubscriptionGroupManager(tmp_path, auto_create=False)
    again.load()
    assert again.get("g1") == SubscriptionGroupConfig("g1", retry_max_times=3, consume_message_orderly=True)
    assert again.retry_max_times("g1") == 3
    assert again.retry_max_times("unknown") == 16
    assert again.find_or_create("g3") is None  # auto-creation off
    assert again.delete("g1") and not again.delete("g1")


def test_config_json_defaults_and_bad_values() -> None:
    config = SubscriptionGroupConfig.from_json({"groupName": "g"})
    assert (config.retry_max_times, config.retry_queue_nums, config.consume_enable) == (16, 1, True)
    assert config.consume_broadcast_enable and config.consume_from_min_enable and not config.consume_message_orderly
    assert SubscriptionGroupConfig.from_json(config.to_json()) == config
    with pytest.raises(MessageIllegalError):
        SubscriptionGroupConfig.from_json({"groupName": "g", "retryMaxTimes": "many"})
    with pytest.raises(MessageIllegalError):
        SubscriptionGroupConfig("bad name!").validate()
    with pytest.raises(MessageIllegalError):
        SubscriptionGroupConfig("g", retry_max_times=-2).validate()


# -- 200 / 201 / 207 -------------------------------------------------------------------------------------------


async def test_create_list_update_delete(rig: BrokerRig) -> None:
    body = group_body(groupName="cg1", retryMaxTimes=5, consumeBroadcastEnable=False)
    created = await rig.answer(request(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=body))
    assert created.code == ResponseCode.SUCCESS, created.remark
    listing = await rig.answer(request(RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG))
    table = json.loads(listing.body)["subscriptionGroupTable"]
    assert table["cg1"]["retryMaxTimes"] == 5 and table["cg1"]["consumeBroadcastEnable"] is False
    assert rig.service.groups.retry_max_times("cg1") == 5

    update = group_body(groupName="cg1", retryMaxTimes=2)
    assert (await rig.answer(request(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=update))).code == 0
    assert rig.service.groups.retry_max_times("cg1") == 2

    deleted = await rig.answer(request(RequestCode.DELETE_SUBSCRIPTIONGROUP, DeleteSubscriptionGroupHeader("cg1")))
    assert deleted.code == ResponseCode.SUCCESS
    assert rig.service.groups.get("cg1") is None

    bad = await rig.answer(request(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=b"{nope"))
    assert bad.code == ResponseCode.MESSAGE_ILLEGAL


async def test_heartbeat_and_pull_create_groups_when_auto_creation_is_on(rig: BrokerRig) -> None:
    rig.topic("T")
    assert (await rig.answer(heartbeat("by-heartbeat", "T"))).code == ResponseCode.SUCCESS
    await rig.answer(pull_request("T", group="by-pull"))
    assert rig.service.groups.get("by-heartbeat") is not None and rig.service.groups.get("by-pull") is not None


async def test_unknown_group_pull_is_refused_when_auto_creation_is_off(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, auto_create_subscription_group=False)
    try:
        rig.topic("T")
        refused = await rig.answer(pull_request("T", group="nobody"))
        assert refused.code == ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST
        assert "subscription group [nobody] does not exist" in (refused.remark or "")
        await rig.answer(heartbeat("nobody", "T"))
        assert rig.service.groups.get("nobody") is None
        rig.service.groups.upsert(SubscriptionGroupConfig("nobody"))
        assert (await rig.answer(pull_request("T", group="nobody"))).code == ResponseCode.PULL_NOT_FOUND
    finally:
        rig.store.close()


async def test_consume_disabled_pull_gets_no_permission(rig: BrokerRig) -> None:
    rig.topic("T")
    await send_n(rig, "T", 1)
    rig.service.groups.upsert(SubscriptionGroupConfig("off", consume_enable=False))
    refused = await rig.answer(pull_request("T", group="off"))
    assert refused.code == ResponseCode.NO_PERMISSION
    assert "subscription group no permission, off" in (refused.remark or "")


# -- 208 / 203 -------------------------------------------------------------------------------------------------


async def test_consume_stats(rig: BrokerRig) -> None:
    rig.topic("T", queues=2)
    await send_n(rig, "T", 3, queue_id=0)
    rig.offsets.commit("cg", "T", 0, 2)
    answer = await rig.answer(request(RequestCode.GET_CONSUME_STATS, GetConsumeStatsHeader("cg", "T")))
    stats = json.loads(answer.body)
    assert stats["consumeTps"] == 0.0
    rows = {parse_queue_key(k): v for k, v in stats["offsetTable"].items()}
    q0 = rows[("broker-a", "T", 0)]
    assert (q0["brokerOffset"], q0["consumerOffset"]) == (3, 2) and q0["lastTimestamp"] > 1_600_000_000_000
    assert rows[("broker-a", "T", 1)] == {"brokerOffset": 0, "consumerOffset": 0, "lastTimestamp": 0}
    every_topic = await rig.answer(request(RequestCode.GET_CONSUME_STATS, GetConsumeStatsHeader("cg")))
    assert json.loads(every_topic.body)["offsetTable"].keys() == stats["offsetTable"].keys()


async def test_consumer_connection_list(rig: BrokerRig) -> None:
    rig.topic("T")
    conn = RecordingConn()
    await rig.answer(heartbeat("cg", "T", "CONSUME_ACTIVELY"), conn)
    answer = await rig.answer(request(RequestCode.GET_CONSUMER_CONNECTION_LIST, GetConsumerConnectionListHeader("cg")))
    body = json.loads(answer.body)
    assert body["connectionSet"] == [
        {"clientId": "10.0.0.7@client-1", "clientAddr": "10.0.0.7:40000", "language": "JAVA", "version": 373}
    ]
    assert (body["consumeType"], body["messageModel"], body["consumeFromWhere"]) == (
        "CONSUME_ACTIVELY",
        "CLUSTERING",
        "CONSUME_FROM_FIRST_OFFSET",
    )
    assert body["subscriptionTable"]["T"]["subString"] == "TagA"
    offline = await rig.answer(
        request(RequestCode.GET_CONSUMER_CONNECTION_LIST, GetConsumerConnectionListHeader("other"))
    )
    assert offline.code == ResponseCode.CONSUMER_NOT_ONLINE


# -- 222 -------------------------------------------------------------------------------------------------------


async def test_reset_offset_by_time_commits_and_tells_consumers(rig: BrokerRig) -> None:
    rig.topic("T", queues=1)
    await send_n(rig, "T", 4)
    rig.offsets.commit("cg", "T", 0, 4)
    conn = RecordingConn()
    await rig.answer(heartbeat("cg", "T"), conn)

    first = await rig.answer(request(RequestCode.INVOKE_BROKER_TO_RESET_OFFSET, ResetOffsetHeader("T", "cg", 0)))
    assert first.code == ResponseCode.SUCCESS, first.remark
    table = {parse_queue_key(k): v for k, v in json.loads(first.body)["offsetTable"].items()}
    assert table == {("broker-a", "T", 0): 0}
    assert rig.offsets.query("cg", "T", 0) == 0
    told = conn.told[-1]
    assert told.code == RequestCode.RESET_CONSUMER_CLIENT_OFFSET and told.body == first.body
    assert ResetOffsetHeader.from_fields(told.ext_fields) == ResetOffsetHeader("T", "cg", 0)

    last = await rig.answer(
        request(RequestCode.INVOKE_BROKER_TO_RESET_OFFSET, ResetOffsetHeader("T", "cg", RESET_TO_LAST))
    )
    assert list(json.loads(last.body)["offsetTable"].values()) == [4]
    # Not forced: a reset only moves a queue back, never past what the group consumed.
    rig.offsets.commit("cg", "T", 0, 1)
    late = ResetOffsetHeader("T", "cg", RESET_TO_LAST, is_force=False)
    assert list(json.loads((await rig.answer(request(222, late))).body)["offsetTable"].values()) == [1]
    future = ResetOffsetHeader("T", "cg", 2**50)
    assert list(json.loads((await rig.answer(request(222, future))).body)["offsetTable"].values()) == [4]


async def test_a_reset_is_not_undone_by_commits_sent_before_the_consumer_heard_of_it(rig: BrokerRig) -> None:
    """RocketMQ 5's resetOffsetTable: until a consumer pulls from the reset offset, its commits (of the offset it
    held before the reset) are ignored, and a pull from its old place is told the offset moved."""
    rig.topic("T", queues=2)
    await send_n(rig, "T", 3, queue_id=0)
    await send_n(rig, "T", 3, queue_id=1)
    for queue_id in (0, 1):
        rig.offsets.commit("cg", "T", queue_id, rig.service.store.max_offset("T", queue_id))
    held = {q: rig.service.store.max_offset("T", q) for q in (0, 1)}
    answer = await rig.answer(request(RequestCode.INVOKE_BROKER_TO_RESET_OFFSET, ResetOffsetHeader("T", "cg", 0)))
    assert answer.code == ResponseCode.SUCCESS

    stale = request(RequestCode.UPDATE_CONSUMER_OFFSET, UpdateConsumerOffsetHeader("cg", "T", 0, held[0]))
    assert (await rig.answer(stale)).code == ResponseCode.SUCCESS
    assert rig.offsets.query("cg", "T", 0) == 0  # the stale commit did not undo the reset

    # Queue 0: the consumer never heard of the reset and pulls from its old place, with its old commit offset.
    flags = PULL_FLAG_SUBSCRIPTION | PULL_FLAG_COMMIT_OFFSET
    moved = await rig.answer(pull_request("T", 0, held[0], sys_flag=flags, commit_offset=held[0]))
    assert moved.code == ResponseCode.PULL_OFFSET_MOVED
    assert int(moved.ext_fields["nextBeginOffset"]) == 0
    assert rig.offsets.query("cg", "T", 0) == 0
    # It moves there; from now on its commits count again.
    again = await rig.answer(pull_request("T", 0, 0))
    assert again.code == ResponseCode.SUCCESS
    committed = request(RequestCode.UPDATE_CONSUMER_OFFSET, UpdateConsumerOffsetHeader("cg", "T", 0, 1))
    await rig.answer(committed)
    assert rig.offsets.query("cg", "T", 0) == 1

    # Queue 1: the consumer took the reset and pulls from the new offset at once; its stale pull commit is ignored.
    took = await rig.answer(pull_request("T", 1, 0, sys_flag=flags, commit_offset=held[1]))
    assert took.code == ResponseCode.SUCCESS
    assert rig.offsets.query("cg", "T", 1) == 0
    later = await rig.answer(pull_request("T", 1, 1, sys_flag=flags, commit_offset=1))
    assert later.code == ResponseCode.SUCCESS
    assert rig.offsets.query("cg", "T", 1) == 1
    # Other groups are not touched by the reset.
    other = request(RequestCode.UPDATE_CONSUMER_OFFSET, UpdateConsumerOffsetHeader("other", "T", 0, 2))
    await rig.answer(other)
    assert rig.offsets.query("other", "T", 0) == 2


async def test_broadcast_disabled_refuses_broadcasting_consumers_only(rig: BrokerRig) -> None:
    rig.topic("T")
    rig.service.groups.upsert(SubscriptionGroupConfig("bc", consume_broadcast_enable=False))
    assert (await rig.answer(pull_request("T", group="bc"))).code == ResponseCode.PULL_NOT_FOUND
    data = {"clientID": "c1", "consumerDataSet": [{"groupName": "bc", "messageModel": "BROADCASTING"}]}
    await rig.answer(RemotingCommand(RequestCode.HEART_BEAT, body=json.dumps(data).encode()), RecordingConn())
    refused = await rig.answer(pull_request("T", group="bc"))
    assert refused.code == ResponseCode.NO_PERMISSION
    assert refused.remark == "the consumer group[bc] can not consume by broadcast way"


async def test_cpp_clients_are_told_the_reset_in_the_list_form_they_decode(rig: BrokerRig) -> None:
    rig.topic("T", queues=1)
    await send_n(rig, "T", 2)
    cpp, python = RecordingConn("10.0.0.8:1"), RecordingConn("10.0.0.9:2")
    beat = heartbeat("cg", "T")
    beat.language = LanguageCode.CPP
    await rig.answer(beat, cpp)
    await rig.answer(heartbeat("cg", "T"), python)
    answer = await rig.answer(request(RequestCode.INVOKE_BROKER_TO_RESET_OFFSET, ResetOffsetHeader("T", "cg", 0)))
    assert json.loads(cpp.told[-1].body) == {
        "offsetTable": [{"brokerName": "broker-a", "queueId": 0, "topic": "T", "offset": 0}]
    }
    assert python.told[-1].body == answer.body
    for told in (cpp.told[-1], python.told[-1]):
        assert decode_offset_table(told.body) == {("broker-a", "T", 0): 0}
    with pytest.raises(ValueError):
        decode_offset_table(b'{"offsetTable": 3}')
