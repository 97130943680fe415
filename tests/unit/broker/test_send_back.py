"""CONSUMER_SEND_MSG_BACK (36) in process: a message handed back goes to its group's retry topic (one more
reconsume, RETRY_TOPIC and ORIGIN_MESSAGE_ID, delay level 3 + reconsumeTimes) or, after maxReconsumeTimes, to
its dead-letter queue; the header's maxReconsumeTimes counts only from request version 121."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from krocket.broker.processors.send_back import send_back_target
from krocket.common.codes import PERM_READ_WRITE, RequestCode, ResponseCode
from krocket.common.headers import ConsumerSendMsgBackHeader
from krocket.common.message import PROPERTY_UNIQ_KEY, MessageExt
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.record import decode_record
from krocket.common.remoting import RemotingCommand
from krocket.common.subscription_group import SubscriptionGroupConfig

from tests.unit.broker.broker_rig import BrokerRig, make_rig, send_header, send_v2

GROUP = "cg"
RETRY = "%RETRY%cg"
DLQ = "%DLQ%cg"


async def send(rig: BrokerRig, topic: str, body: bytes, **overrides: Any) -> int:
    """Send one message; its commit log offset."""
    response = await rig.answer(send_v2(send_header(topic, **overrides), body))
    assert response.code == ResponseCode.SUCCESS, response.remark
    return decode_offset_msg_id(response.ext_fields["msgId"])[1]


def send_back_request(offset: int, version: int = 63, **fields: Any) -> RemotingCommand:
    header = ConsumerSendMsgBackHeader(offset=offset, group=GROUP, **fields)
    return RemotingCommand(RequestCode.CONSUMER_SEND_MSG_BACK, opaque=7, ext_fields=header.to_fields(), version=version)


async def send_back(rig: BrokerRig, offset: int, version: int = 63, **fields: Any) -> MessageExt:
    """Send the message at ``offset`` back; the copy the broker stored (found at the commit log's end)."""
    end = rig.store.max_phy_offset
    response = await rig.answer(send_back_request(offset, version, **fields))
    assert response.code == ResponseCode.SUCCESS, response.remark
    raw = rig.store.read_record(end)
    assert raw is not None
    return decode_record(raw)


def destination(copy: MessageExt) -> str:
    """The topic a copy is delivered to: its own, or the real one when the schedule holds it (delay levels)."""
    return copy.properties.get("REAL_TOPIC", copy.topic)


async def test_first_send_back_goes_to_the_retry_topic_with_delay_level_three(rig: BrokerRig) -> None:
    rig.topic("Orders")
    offset = await send(rig, "Orders", b"poison")
    copy = await send_back(rig, offset)
    assert destination(copy) == RETRY
    assert copy.body == b"poison"
    assert copy.reconsume_times == 1
    assert copy.properties["RETRY_TOPIC"] == "Orders"
    assert copy.properties["DELAY"] == "3"
    assert copy.properties[PROPERTY_UNIQ_KEY] == "UNIQ-1"
    assert copy.properties["TAGS"] == "TagA"
    original = decode_record(rig.store.read_record(offset) or b"")
    assert copy.properties["ORIGIN_MESSAGE_ID"] == original.offset_msg_id
    assert copy.born_timestamp == original.born_timestamp
    assert copy.born_host == original.born_host
    config = rig.topics.get(RETRY)
    assert config is not None
    assert (config.read_queue_nums, config.write_queue_nums, config.perm) == (1, 1, PERM_READ_WRITE)


async def test_a_retry_sent_back_again_keeps_its_first_topic_and_origin_and_waits_longer(rig: BrokerRig) -> None:
    rig.topic("Orders")
    offset = await send(rig, "Orders", b"poison")
    first = await send_back(rig, offset)
    second = await send_back(rig, first.commit_log_offset)
    assert destination(second) == RETRY
    assert second.reconsume_times == 2
    assert second.properties["RETRY_TOPIC"] == "Orders"
    assert second.properties["ORIGIN_MESSAGE_ID"] == first.properties["ORIGIN_MESSAGE_ID"]
    assert second.properties["DELAY"] == "4"  # 3 + reconsumeTimes 1


async def test_the_requested_delay_level_is_kept(rig: BrokerRig) -> None:
    rig.topic("Orders")
    copy = await send_back(rig, await send(rig, "Orders", b"x"), delay_level=7)
    assert copy.properties["DELAY"] == "7"


async def test_after_sixteen_reconsumes_the_message_goes_to_the_dlq(rig: BrokerRig) -> None:
    rig.topic("Orders")
    offset = await send(rig, "Orders", b"poison", reconsume_times=16)
    dead = await send_back(rig, offset)
    assert dead.topic == DLQ
    assert dead.queue_id == 0
    assert dead.reconsume_times == 17
    assert "DELAY" not in dead.properties
    assert dead.properties["RETRY_TOPIC"] == "Orders"
    config = rig.topics.get(DLQ)
    assert config is not None
    assert (config.read_queue_nums, config.write_queue_nums, config.perm) == (1, 1, PERM_READ_WRITE)
    assert rig.store.max_offset(DLQ, 0) == 1


async def test_a_negative_delay_level_goes_to_the_dlq_at_once(rig: BrokerRig) -> None:
    rig.topic("Orders")
    dead = await send_back(rig, await send(rig, "Orders", b"x"), delay_level=-1)
    assert dead.topic == DLQ
    assert dead.reconsume_times == 1


async def test_max_reconsume_times_counts_from_request_version_121(rig: BrokerRig) -> None:
    rig.topic("Orders")
    offset = await send(rig, "Orders", b"x", reconsume_times=2)
    old_client = await send_back(rig, offset, version=63, max_reconsume_times=2)
    assert destination(old_client) == RETRY  # the group's 16 applies
    new_client = await send_back(rig, offset, version=121, max_reconsume_times=2)
    assert new_client.topic == DLQ


async def test_an_offset_with_no_message_is_a_system_error_and_stores_nothing(rig: BrokerRig) -> None:
    rig.topic("Orders")
    await send(rig, "Orders", b"x")
    end = rig.store.max_phy_offset
    response = await rig.answer(send_back_request(end + 1000))
    assert response.code == ResponseCode.SYSTEM_ERROR
    assert "look message by offset failed" in (response.remark or "")
    assert rig.store.max_phy_offset == end
    assert rig.topics.get(RETRY) is None


async def test_the_subscription_groups_retry_max_times_applies_to_old_clients(rig: BrokerRig) -> None:
    rig.service.groups.upsert(SubscriptionGroupConfig(GROUP, retry_max_times=1))
    rig.topic("Orders")
    first = await send_back(rig, await send(rig, "Orders", b"x"))
    assert destination(first) == RETRY
    dead = await send_back(rig, first.commit_log_offset)
    assert dead.topic == DLQ
    assert dead.reconsume_times == 2


@pytest.mark.parametrize(
    ("times", "level", "maximum", "expected"),
    [(0, 0, 16, (RETRY, 3, False)), (15, 0, 16, (RETRY, 18, False)), (16, 0, 16, (DLQ, 0, True)),
     (0, 2, 16, (RETRY, 2, False)), (0, -1, 16, (DLQ, 0, True)), (0, 0, 0, (DLQ, 0, True))],
)  # fmt: skip
def test_send_back_target_rule(times: int, level: int, maximum: int, expected: tuple[str, int, bool]) -> None:
    target = send_back_target(GROUP, times, level, maximum)
    assert (target.topic, target.delay_level, target.dead) == expected


async def test_a_slave_refuses_send_back(tmp_path: Path) -> None:
    slave = make_rig(tmp_path, broker_role="SLAVE", broker_id=1)
    try:
        offset = slave.store.put_message("Orders", 0, b"replicated", {}).commit_log_offset
        response = await slave.answer(send_back_request(offset))
        assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE
        assert slave.topics.get(RETRY) is None
    finally:
        slave.store.close()
