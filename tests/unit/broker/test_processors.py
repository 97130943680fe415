"""The broker's remoting processors over a real store: sends in every header form, pulls (tags, long polling,
commit offsets), offsets, clients and admin codes, and the answers malformed headers get."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from krocket.common.batch import encode_batch
from krocket.common.codes import PULL_FLAG_COMMIT_OFFSET, PULL_FLAG_SUBSCRIPTION, RequestCode, ResponseCode
from krocket.common.headers import (
    ConsumerGroupHeader,
    CreateTopicHeader,
    DeleteTopicInBrokerHeader,
    GetEarliestMsgStoretimeHeader,
    GetMaxOffsetHeader,
    GetMinOffsetHeader,
    GetTopicConfigHeader,
    QueryConsumerOffsetHeader,
    QueryMessageHeader,
    SearchOffsetHeader,
    UnregisterClientHeader,
    UpdateConsumerOffsetHeader,
    ViewMessageHeader,
)
from krocket.common.message import PROPERTY_KEYS, PROPERTY_TAGS, encode_properties, java_string_hash
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.record import decode_record, decode_records
from krocket.common.remoting import RemotingCommand
from krocket.common.topic import TopicConfig

from tests.unit.broker.broker_rig import BrokerRig, FakeConn, make_rig, pull_request, request, send_header, send_v2


async def send(
    rig: BrokerRig, topic: str, body: bytes, queue_id: int = 0, tags: str | None = "TagA"
) -> RemotingCommand:
    response = await rig.answer(send_v2(send_header(topic, queue_id, tags), body))
    assert response.code == ResponseCode.SUCCESS, response.remark
    return response


# -- sends -----------------------------------------------------------------------------------------------


async def test_v2_send_is_stored_and_pulled(rig: BrokerRig) -> None:
    rig.topic("T")
    response = await send(rig, "T", b"hello", queue_id=2)
    ext = response.ext_fields
    assert (ext["queueId"], ext["queueOffset"], ext["MSG_REGION"], ext["TRACE_ON"]) == (
        "2",
        "0",
        "DefaultRegion",
        "true",
    )
    assert response.opaque == 1 and response.is_response

    pulled = await rig.answer(pull_request("T", 2))
    assert pulled.code == ResponseCode.SUCCESS
    assert (pulled.ext_fields["nextBeginOffset"], pulled.ext_fields["maxOffset"]) == ("1", "1")
    [msg] = decode_records(pulled.body)
    assert msg.body == b"hello" and msg.topic == "T" and msg.queue_id == 2
    assert msg.properties[PROPERTY_TAGS] == "TagA" and msg.born_host == "10.0.0.9:51000"
    assert msg.born_timestamp == 1_700_000_000_000 and msg.offset_msg_id == ext["msgId"]
    assert rig.service.sent_messages == 1 and rig.service.pulled_messages == 1


async def test_send_message_with_long_names_as_the_cpp_client_sends_it(rig: BrokerRig) -> None:
    rig.topic("CppToKrocket")
    fields = {
        "AccessKey": "",
        "OnsChannel": "ALIYUN",
        "batch": "0",
        "bornTimestamp": "1796211157448",
        "defaultTopic": "TBW102",
        "defaultTopicQueueNums": "4",
        "flag": "3",
        "producerGroup": "rmq-producer",
        "properties": encode_properties({"TAGS": "TagB", "KEYS": "key-0"}).decode(),
        "queueId": "1",
        "reconsumeTimes": "0",
        "sysFlag": "0",
        "topic": "CppToKrocket",
        "unitMode": "0",
    }
    response = await rig.answer(RemotingCommand(RequestCode.SEND_MESSAGE, ext_fields=fields, body=b"from c++"))
    assert response.code == ResponseCode.SUCCESS and response.ext_fields["queueId"] == "1"
    [msg] = decode_records((await rig.answer(pull_request("CppToKrocket", 1))).body)
    assert (msg.body, msg.flag, msg.born_timestamp) == (b"from c++", 3, 1796211157448)
    assert msg.properties == {"TAGS": "TagB", "KEYS": "key-0"}


async def test_batch_send(rig: BrokerRig) -> None:
    rig.topic("T")
    body = encode_batch([(b"one", {"TAGS": "A"}, 0), (b"two", {}, 5)])
    cmd = send_v2(send_header("T", 1, batch=True), body, code=RequestCode.SEND_BATCH_MESSAGE)
    response = await rig.answer(cmd)
    assert response.code == ResponseCode.SUCCESS and response.ext_fields["queueOffset"] == "0"
    assert len(response.ext_fields["msgId"].split(",")) == 2
    msgs = decode_records((await rig.answer(pull_request("T", 1))).body)
    assert [(m.body, m.flag) for m in msgs] == [(b"one", 0), (b"two", 5)]
    # the batch flag alone (on SEND_MESSAGE_V2) means a batch body too
    again = await rig.answer(send_v2(send_header("T", 1, batch=True), body))
    assert again.code == ResponseCode.SUCCESS and again.ext_fields["queueOffset"] == "2"


async def test_malformed_batch_body(rig: BrokerRig) -> None:
    rig.topic("T")
    cmd = send_v2(send_header("T", batch=True), b"\x00\x00\x00\xffjunk", code=RequestCode.SEND_BATCH_MESSAGE)
    response = await rig.answer(cmd)
    assert response.code == ResponseCode.MESSAGE_ILLEGAL and "batch body is malformed" in (response.remark or "")


async def test_send_picks_a_queue_when_the_header_says_minus_one(rig: BrokerRig) -> None:
    rig.topic("T", queues=4)
    queues = {(await send(rig, "T", b"x", queue_id=-1)).ext_fields["queueId"] for _ in range(8)}
    assert queues == {"0", "1", "2", "3"}


@pytest.mark.parametrize(
    ("fields", "remark"),
    [
        ({"a": "pg", "e": "0"}, "request header lacks the field 'topic'"),
        ({"b": "T", "e": "zero"}, "request header field 'queueId' must be an integer, got 'zero'"),
        ({"b": "T", "g": "yesterday"}, "request header field 'bornTimestamp' must be an integer, got 'yesterday'"),
        ({"topic": "T", "sysFlag": "0x1"}, "request header field 'sysFlag' must be an integer, got '0x1'"),
    ],
)
async def test_send_header_errors_are_system_errors(rig: BrokerRig, fields: dict[str, str], remark: str) -> None:
    rig.topic("T")
    response = await rig.answer(RemotingCommand(RequestCode.SEND_MESSAGE_V2, ext_fields=fields, body=b"x"))
    assert (response.code, response.remark) == (ResponseCode.SYSTEM_ERROR, remark)


async def test_send_to_a_missing_topic(rig: BrokerRig) -> None:
    response = await rig.answer(send_v2(send_header("Nope"), b"x"))
    assert response.code == ResponseCode.TOPIC_NOT_EXIST and "Nope" in (response.remark or "")


async def test_send_auto_creates_through_tbw102(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, auto_create_topic_enable=True)
    try:
        published: list[bool] = []

        async def publish() -> None:
            published.append(True)

        rig.service.publish_routes = publish
        response = await rig.answer(send_v2(send_header("Fresh", 3, default_topic_queue_nums=4), b"x"))
        assert response.code == ResponseCode.SUCCESS and published == [True]
        config = rig.topics.get("Fresh")
        assert config is not None and (config.read_queue_nums, config.write_queue_nums) == (4, 4)
        await send(rig, "Fresh", b"y", queue_id=3)
        assert published == [True]  # only the send that created the topic waits for its route
    finally:
        rig.store.close()


async def test_empty_and_oversize_bodies(rig: BrokerRig) -> None:
    rig.topic("T")
    empty = await rig.answer(send_v2(send_header("T"), b""))
    assert empty.code == ResponseCode.MESSAGE_ILLEGAL and "empty" in (empty.remark or "")
    big = await rig.answer(send_v2(send_header("T"), b"x" * (rig.service.config.max_message_size + 1)))
    assert big.code == ResponseCode.MESSAGE_ILLEGAL and "maxMessageSize" in (big.remark or "")


async def test_a_slave_refuses_sends(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, broker_id=1)
    try:
        rig.topic("T")
        response = await rig.answer(send_v2(send_header("T"), b"x"))
        assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE and "slave" in (response.remark or "")
    finally:
        rig.store.close()


# -- pulls -------------------------------------------------------------------------------------------------


async def test_pull_filters_by_tag(rig: BrokerRig) -> None:
    rig.topic("T")
    for i, tag in enumerate(["TagA", "TagB", "TagA", None]):
        await send(rig, "T", f"m{i}".encode(), tags=tag)
    only_a = decode_records((await rig.answer(pull_request("T", expression="TagA"))).body)
    assert [m.body for m in only_a] == [b"m0", b"m2"]
    a_or_b = decode_records((await rig.answer(pull_request("T", expression="TagA || TagB"))).body)
    assert [m.body for m in a_or_b] == [b"m0", b"m1", b"m2"]
    everything = decode_records((await rig.answer(pull_request("T", expression="*"))).body)
    assert len(everything) == 4
    bad = await rig.answer(pull_request("T", expression="TagA || "))
    assert bad.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED


async def test_pull_without_the_subscription_flag_uses_the_heartbeat_subscription(rig: BrokerRig) -> None:
    rig.topic("T")
    await send(rig, "T", b"a", tags="TagA")
    await send(rig, "T", b"b", tags="TagB")
    heartbeat = {
        "clientID": "c1",
        "consumerDataSet": [
            {
                "groupName": "cg",
                "subscriptionDataSet": [
                    {"topic": "T", "subString": "TagB", "codeSet": [java_string_hash("TagB")], "tagsSet": ["TagB"]}
                ],
            }
        ],
    }
    beat = await rig.answer(RemotingCommand(RequestCode.HEART_BEAT, body=json.dumps(heartbeat).encode()))
    assert beat.code == ResponseCode.SUCCESS
    pulled = await rig.answer(pull_request("T", expression="TagA", sys_flag=0))  # the expression is ignored
    assert [m.body for m in decode_records(pulled.body)] == [b"b"]


async def test_pull_statuses(rig: BrokerRig) -> None:
    rig.topic("T")
    assert (await rig.answer(pull_request("T"))).code == ResponseCode.PULL_NOT_FOUND  # empty queue at 0
    await send(rig, "T", b"x")
    caught_up = await rig.answer(pull_request("T", offset=1))
    assert caught_up.code == ResponseCode.PULL_NOT_FOUND and caught_up.ext_fields["nextBeginOffset"] == "1"
    far = await rig.answer(pull_request("T", offset=50))
    assert far.code == ResponseCode.PULL_OFFSET_MOVED and far.ext_fields["nextBeginOffset"] == "1"
    moved = await rig.answer(pull_request("T", queue_id=1, offset=3))  # nothing in that queue, not at 0
    assert moved.code == ResponseCode.PULL_OFFSET_MOVED
    out_of_range = await rig.answer(pull_request("T", queue_id=9))
    assert out_of_range.code == ResponseCode.MESSAGE_ILLEGAL and "out of range" in (out_of_range.remark or "")
    missing = await rig.answer(pull_request("Nope"))
    assert missing.code == ResponseCode.TOPIC_NOT_EXIST


async def test_pull_commits_the_offset_it_carries(rig: BrokerRig) -> None:
    rig.topic("T")
    await send(rig, "T", b"x")
    flags = PULL_FLAG_SUBSCRIPTION | PULL_FLAG_COMMIT_OFFSET
    await rig.answer(pull_request("T", offset=1, sys_flag=flags, commit_offset=1))
    assert rig.offsets.query("cg", "T", 0) == 1
    await rig.answer(pull_request("T", offset=1, commit_offset=7))  # without the flag: not committed
    assert rig.offsets.query("cg", "T", 0) == 1


async def test_suspended_pull_wakes_on_a_send(rig: BrokerRig) -> None:
    rig.topic("T")
    pending = asyncio.ensure_future(rig.answer(pull_request("T", suspend_ms=10_000)))
    await asyncio.sleep(0.01)
    assert not pending.done() and rig.polling.suspended() == 1
    await send(rig, "T", b"late")
    response = await asyncio.wait_for(pending, 5)
    assert response.code == ResponseCode.SUCCESS and decode_records(response.body)[0].body == b"late"
    assert rig.polling.suspended() == 0


async def test_suspended_pull_times_out_with_not_found(rig: BrokerRig) -> None:
    rig.topic("T")
    response = await asyncio.wait_for(rig.answer(pull_request("T", suspend_ms=50)), 5)
    assert response.code == ResponseCode.PULL_NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "remark"),
    [
        ({"topic": "T", "queueId": "0", "queueOffset": "0"}, "request header lacks the field 'consumerGroup'"),
        ({"consumerGroup": "g", "topic": "T", "queueId": "0"}, "request header lacks the integer field 'queueOffset'"),
        (
            {"consumerGroup": "g", "topic": "T", "queueId": "0", "queueOffset": "0", "maxMsgNums": "lots"},
            "request header field 'maxMsgNums' must be an integer, got 'lots'",
        ),
    ],
)
async def test_pull_header_errors(rig: BrokerRig, fields: dict[str, str], remark: str) -> None:
    rig.topic("T")
    response = await rig.answer(RemotingCommand(RequestCode.PULL_MESSAGE, ext_fields=fields))
    assert (response.code, response.remark) == (ResponseCode.SYSTEM_ERROR, remark)


# -- offsets --------------------------------------------------------------------------------------------


async def test_consumer_offsets(rig: BrokerRig) -> None:
    rig.topic("T")
    query = request(RequestCode.QUERY_CONSUMER_OFFSET, QueryConsumerOffsetHeader("cg", "T", 0, False))
    assert (await rig.answer(query)).code == ResponseCode.QUERY_NOT_FOUND
    young = request(RequestCode.QUERY_CONSUMER_OFFSET, QueryConsumerOffsetHeader("cg", "T", 0))
    assert (await rig.answer(young)).ext_fields == {"offset": "0"}  # setZeroIfNotFound on a young queue
    update = request(RequestCode.UPDATE_CONSUMER_OFFSET, UpdateConsumerOffsetHeader("cg", "T", 0, 12))
    assert (await rig.answer(update)).code == ResponseCode.SUCCESS
    assert (await rig.answer(query)).ext_fields == {"offset": "12"}
    journal = Path(rig.service.config.store_path_root_dir) / "config" / "consumerOffset.json.journal"
    assert '"put":"T@cg"' in journal.read_text()  # durable before the answer
    negative = request(RequestCode.UPDATE_CONSUMER_OFFSET, UpdateConsumerOffsetHeader("cg", "T", 0, -1))
    assert (await rig.answer(negative)).code == ResponseCode.MESSAGE_ILLEGAL


async def test_queue_offsets_and_times(rig: BrokerRig) -> None:
    rig.topic("T")
    for i in range(3):
        await send(rig, "T", f"m{i}".encode())
    max_offset = await rig.answer(request(RequestCode.GET_MAX_OFFSET, GetMaxOffsetHeader("T", 0)))
    min_offset = await rig.answer(request(RequestCode.GET_MIN_OFFSET, GetMinOffsetHeader("T", 0)))
    assert (max_offset.ext_fields, min_offset.ext_fields) == ({"offset": "3"}, {"offset": "0"})
    search = await rig.answer(request(RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, SearchOffsetHeader("T", 0, 0)))
    assert search.ext_fields == {"offset": "0"}
    earliest = await rig.answer(request(RequestCode.GET_EARLIEST_MSG_STORETIME, GetEarliestMsgStoretimeHeader("T", 0)))
    assert int(earliest.ext_fields["timestamp"]) > 0
    empty = await rig.answer(request(RequestCode.GET_EARLIEST_MSG_STORETIME, GetEarliestMsgStoretimeHeader("T", 3)))
    assert empty.ext_fields == {"timestamp": "-1"}
    bad = await rig.answer(RemotingCommand(RequestCode.GET_MAX_OFFSET, ext_fields={"topic": "T", "queueId": "q"}))
    assert (bad.code, bad.remark) == (
        ResponseCode.SYSTEM_ERROR,
        "request header field 'queueId' must be an integer, got 'q'",
    )


# -- clients ----------------------------------------------------------------------------------------------


async def test_heartbeat_consumer_list_and_unregister(rig: BrokerRig) -> None:
    conn = FakeConn("10.0.0.5:40000")
    heartbeat = {
        "clientID": "client-1",
        "producerDataSet": [{"groupName": "pg"}],
        "consumerDataSet": [{"groupName": "cg", "subscriptionDataSet": [{"topic": "T", "subString": "*"}]}],
    }
    beat = RemotingCommand(RequestCode.HEART_BEAT, body=json.dumps(heartbeat).encode())
    assert (await rig.answer(beat, conn)).code == ResponseCode.SUCCESS
    assert rig.notified == [("cg", 1)]
    assert rig.topics.get("%RETRY%cg") is None  # created by the first send to it, not by a heartbeat
    listing = await rig.answer(request(RequestCode.GET_CONSUMER_LIST_BY_GROUP, ConsumerGroupHeader("cg")))
    assert json.loads(listing.body) == {"consumerIdList": ["client-1"]}

    unregister = UnregisterClientHeader("client-1", producer_group="pg", consumer_group="cg")
    assert (await rig.answer(request(RequestCode.UNREGISTER_CLIENT, unregister), conn)).code == ResponseCode.SUCCESS
    assert rig.notified == [("cg", 1), ("cg", 0)]
    gone = await rig.answer(request(RequestCode.GET_CONSUMER_LIST_BY_GROUP, ConsumerGroupHeader("cg")))
    assert gone.code == ResponseCode.SYSTEM_ERROR and "no consumer of group cg" in (gone.remark or "")
    no_group = await rig.answer(RemotingCommand(RequestCode.GET_CONSUMER_LIST_BY_GROUP))
    assert no_group.remark == "request header lacks the field 'consumerGroup'"


async def test_bad_heartbeat_bodies(rig: BrokerRig) -> None:
    for body in (b"{not json", b"[1, 2]"):
        response = await rig.answer(RemotingCommand(RequestCode.HEART_BEAT, body=body))
        assert response.code == ResponseCode.MESSAGE_ILLEGAL


# -- admin -------------------------------------------------------------------------------------------------


async def test_topic_admin(rig: BrokerRig) -> None:
    create = CreateTopicHeader("Admin", "TBW102", read_queue_nums=6, write_queue_nums=4, order=True)
    assert (await rig.answer(request(RequestCode.UPDATE_AND_CREATE_TOPIC, create))).code == ResponseCode.SUCCESS
    config = rig.topics.get("Admin")
    assert config is not None and (config.read_queue_nums, config.write_queue_nums, config.order) == (6, 4, True)

    got = await rig.answer(request(RequestCode.GET_TOPIC_CONFIG, GetTopicConfigHeader("Admin")))
    assert json.loads(got.body)["topicConfig"]["readQueueNums"] == 6
    table = json.loads((await rig.answer(request(RequestCode.GET_ALL_TOPIC_CONFIG))).body)
    assert "Admin" in table["topicConfigTable"] and table["dataVersion"]["counter"] == rig.topics.data_version

    too_wide = CreateTopicHeader("Wide", read_queue_nums=2, write_queue_nums=4)
    response = await rig.answer(request(RequestCode.UPDATE_AND_CREATE_TOPIC, too_wide))
    assert response.code == ResponseCode.MESSAGE_ILLEGAL

    assert (
        await rig.answer(request(RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicInBrokerHeader("Admin")))
    ).code == ResponseCode.SUCCESS
    missing = await rig.answer(request(RequestCode.GET_TOPIC_CONFIG, GetTopicConfigHeader("Admin")))
    assert missing.code == ResponseCode.TOPIC_NOT_EXIST


async def test_topic_attributes_are_set_kept_removed_and_checked(rig: BrokerRig) -> None:
    async def upsert(attributes: str | None) -> RemotingCommand:
        header = CreateTopicHeader("Typed", "TBW102", read_queue_nums=4, write_queue_nums=4, attributes=attributes)
        return await rig.answer(request(RequestCode.UPDATE_AND_CREATE_TOPIC, header))

    def attributes() -> dict[str, str]:
        config = rig.topics.get("Typed")
        assert config is not None
        return config.attributes

    assert (await upsert("+message.type=FIFO")).code == ResponseCode.SUCCESS
    assert attributes() == {"message.type": "FIFO"}
    got = await rig.answer(request(RequestCode.GET_TOPIC_CONFIG, GetTopicConfigHeader("Typed")))
    assert json.loads(got.body)["topicConfig"]["attributes"] == {"message.type": "FIFO"}, "as RocketMQ 5 shows them"
    assert (await upsert(None)).code == ResponseCode.SUCCESS
    assert attributes() == {"message.type": "FIFO"}, "an update without attributes keeps the topic's"
    for refused in ("+message.type=QUEUE", "+retention=7d", "message.type=FIFO", "+=x", "-"):
        response = await upsert(refused)
        assert response.code == ResponseCode.MESSAGE_ILLEGAL, refused
        assert response.remark, f"{refused}: the refusal says why"
    assert attributes() == {"message.type": "FIFO"}, "a refused change leaves the topic as it was"
    stored = rig.topics.get("Typed")
    assert stored is not None and TopicConfig.from_json(stored.to_json()) == stored, "persisted with its attributes"
    assert (await upsert("-message.type")).code == ResponseCode.SUCCESS
    assert attributes() == {}


async def test_view_and_query_messages(rig: BrokerRig) -> None:
    rig.topic("T")
    props = encode_properties({PROPERTY_KEYS: "order-7", PROPERTY_TAGS: "A"}).decode()
    sent = await rig.answer(send_v2(send_header("T", properties=props), b"keyed"))
    msg_id = sent.ext_fields["msgId"]
    offset = decode_offset_msg_id(msg_id)[1]

    by_offset = await rig.answer(request(RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageHeader(offset=offset)))
    by_id = await rig.answer(request(RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageHeader(msg_id=msg_id)))
    assert by_offset.body == by_id.body and decode_record(by_id.body, 0).body == b"keyed"
    nowhere = await rig.answer(request(RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageHeader(offset=10**9)))
    assert nowhere.code == ResponseCode.SYSTEM_ERROR

    found = await rig.answer(request(RequestCode.QUERY_MESSAGE, QueryMessageHeader("T", "order-7")))
    assert found.code == ResponseCode.SUCCESS and [m.body for m in decode_records(found.body)] == [b"keyed"]
    none = await rig.answer(request(RequestCode.QUERY_MESSAGE, QueryMessageHeader("T", "order-8")))
    assert none.code == ResponseCode.QUERY_NOT_FOUND


async def test_runtime_info_and_offset_table(rig: BrokerRig) -> None:
    rig.topic("T")
    await send(rig, "T", b"x")
    rig.offsets.commit("cg", "T", 0, 1)
    info = json.loads((await rig.answer(request(RequestCode.GET_BROKER_RUNTIME_INFO))).body)["table"]
    assert (info["brokerName"], info["brokerId"], info["msgPutTotal"]) == ("broker-a", "0", "1")
    assert int(info["commitLogMaxOffset"]) == rig.store.max_phy_offset and "slaveCount" not in info
    offsets = json.loads((await rig.answer(request(RequestCode.GET_ALL_CONSUMER_OFFSET))).body)
    assert offsets == {"offsetTable": {"T@cg": {"0": 1}}}


async def test_unknown_codes_and_the_request_counter(rig: BrokerRig) -> None:
    response = await rig.answer(RemotingCommand(9999))
    assert response.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED and "9999" in (response.remark or "")
    await rig.answer(RemotingCommand(9999))
    assert 'krocket_broker_requests_total{code="9999",name="UNKNOWN"} 2.0' in rig.metrics.render()
