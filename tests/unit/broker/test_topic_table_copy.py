"""GET_ALL_TOPIC_CONFIG as a slave's metadata copy uses it, and UPDATE_AND_CREATE_TOPIC_LIST: a slave that names the
version it holds gets "unchanged" and no body while that is the master's version; a large table is deflated for a
caller that takes it (RocketMQ's tools get plain JSON); a bulk create applies all or nothing and keeps attributes a
config leaves out."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.register_body import (
    ACCEPT_COMPRESSED_FIELD,
    COMPRESSED_FIELD,
    KNOWN_VERSION_FIELD,
    UNCHANGED_FIELD,
    version_key,
)
from krocket.common.remoting import RemotingCommand
from krocket.common.topic import TopicConfig

from tests.unit.broker.broker_rig import BrokerRig, make_rig


@pytest.fixture
def rig(tmp_path: Path) -> BrokerRig:
    return make_rig(tmp_path)


def table_request(**fields: str) -> RemotingCommand:
    return RemotingCommand(RequestCode.GET_ALL_TOPIC_CONFIG, opaque=1, ext_fields=dict(fields))


async def test_a_slave_that_holds_the_version_gets_no_table(rig: BrokerRig) -> None:
    rig.topic("A")
    first = await rig.answer(table_request(**{ACCEPT_COMPRESSED_FIELD: "true"}))
    body = json.loads(first.body or b"")
    assert "A" in body["topicConfigTable"] and COMPRESSED_FIELD not in first.ext_fields
    held = version_key(body["dataVersion"])
    same = await rig.answer(table_request(**{KNOWN_VERSION_FIELD: held}))
    assert same.code == ResponseCode.SUCCESS and same.ext_fields.get(UNCHANGED_FIELD) == "true" and not same.body
    rig.topic("B")
    changed = await rig.answer(table_request(**{KNOWN_VERSION_FIELD: held}))
    assert UNCHANGED_FIELD not in changed.ext_fields and "B" in json.loads(changed.body or b"")["topicConfigTable"]


async def test_a_large_table_is_deflated_only_for_callers_that_take_it(rig: BrokerRig) -> None:
    rig.topics.upsert_many([TopicConfig(f"Topic{i:05d}", 8, 8) for i in range(1000)])
    plain = await rig.answer(table_request())
    assert COMPRESSED_FIELD not in plain.ext_fields and len(json.loads(plain.body or b"")["topicConfigTable"]) == 1000
    packed = await rig.answer(table_request(**{ACCEPT_COMPRESSED_FIELD: "true"}))
    assert packed.ext_fields.get(COMPRESSED_FIELD) == "true" and len(packed.body or b"") < len(plain.body or b"") / 5
    assert json.loads(zlib.decompress(packed.body or b"")) == json.loads(plain.body or b"")


def list_request(configs: list[dict]) -> RemotingCommand:
    body = json.dumps({"topicConfigList": configs}).encode()
    return RemotingCommand(RequestCode.UPDATE_AND_CREATE_TOPIC_LIST, opaque=1, body=body)


async def test_a_bulk_create_is_all_or_nothing_and_keeps_left_out_attributes(rig: BrokerRig) -> None:
    rig.topics.upsert(TopicConfig("Typed", 4, 4, attributes={"message.type": "FIFO"}))
    version = rig.topics.data_version
    ok = await rig.answer(
        list_request(
            [
                {"topicName": "New1", "readQueueNums": 2, "writeQueueNums": 2},
                {"topicName": "Typed", "readQueueNums": 8, "writeQueueNums": 8},
            ]
        )
    )
    assert ok.code == ResponseCode.SUCCESS, ok.remark
    assert rig.topics.data_version == version + 2
    typed = rig.topics.get("Typed")
    assert typed is not None and typed.read_queue_nums == 8 and typed.attributes == {"message.type": "FIFO"}
    bad = await rig.answer(
        list_request(
            [
                {"topicName": "New2", "readQueueNums": 2, "writeQueueNums": 2},
                {"topicName": "Bad", "readQueueNums": 1, "writeQueueNums": 3},
            ]
        )
    )
    assert bad.code != ResponseCode.SUCCESS and "Bad" in (bad.remark or "")
    assert rig.topics.get("New2") is None
    for body, why in [(b"nope", "not JSON"), (b'{"topicConfigList": 3}', "needs topicConfigList")]:
        refused = await rig.answer(RemotingCommand(RequestCode.UPDATE_AND_CREATE_TOPIC_LIST, opaque=1, body=body))
        assert refused.code != ResponseCode.SUCCESS and why in (refused.remark or "")
