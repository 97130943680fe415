"""The broker's tables: topics (auto-creation, persistence), consumer offsets, connected clients, tag
expressions and long polling."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest

from krocket.broker.consumer_manager import ConsumerManager
from krocket.broker.long_polling import LongPolling
from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.tag_filter import parse_tag_expression
from krocket.broker.topic_manager import TopicManager
from krocket.common.codes import PERM_INHERIT, PERM_READ, PERM_READ_WRITE, ResponseCode
from krocket.common.errors import KrocketError, MessageIllegalError, NoPermissionError, TopicNotExistError
from krocket.common.message import java_string_hash
from krocket.common.remoting import Connection
from krocket.common.topic import AUTO_CREATE_TOPIC_KEY, TopicConfig

from tests.unit.broker.broker_rig import FakeConn

# -- topics -------------------------------------------------------------------------------------------------


def topics(tmp_path: Path, auto_create: bool = True, changes: list[int] | None = None) -> TopicManager:
    manager = TopicManager(
        tmp_path, auto_create, 8, on_change=(lambda: changes.append(1)) if changes is not None else None
    )
    manager.load()
    return manager


def test_auto_create_key_follows_the_setting(tmp_path: Path) -> None:
    manager = topics(tmp_path)
    template = manager.get(AUTO_CREATE_TOPIC_KEY)
    assert template is not None and template.perm == PERM_READ_WRITE | PERM_INHERIT
    assert template.write_queue_nums == 8
    manager.persist()
    assert topics(tmp_path, auto_create=False).get(AUTO_CREATE_TOPIC_KEY) is None


def test_upsert_persists_and_announces_changes(tmp_path: Path) -> None:
    changes: list[int] = []
    manager = topics(tmp_path, changes=changes)
    manager.upsert(TopicConfig("T", 4, 4))
    manager.upsert(TopicConfig("T", 4, 4))  # unchanged: no new version
    assert changes == [1] and manager.data_version == 1
    journal = (tmp_path / "topics.json.journal").read_text().splitlines()
    assert len(journal) == 1 and '"put":"T"' in journal[0]  # one line per change, not a rewrite of the table
    reloaded = topics(tmp_path)
    assert reloaded.get("T") == TopicConfig("T", 4, 4) and reloaded.data_version == 1
    assert manager.delete("T") and not manager.delete("T") and changes == [1, 1]


def test_the_auto_create_key_is_reserved_when_auto_creation_is_off(tmp_path: Path) -> None:
    with pytest.raises(MessageIllegalError, match="reserved"):
        topics(tmp_path, auto_create=False).upsert(TopicConfig(AUTO_CREATE_TOPIC_KEY, 1, 1))


def test_for_send_auto_creates_through_the_template(tmp_path: Path) -> None:
    manager = topics(tmp_path)
    config = manager.for_send("New", AUTO_CREATE_TOPIC_KEY, 3, 0)
    assert (config.read_queue_nums, config.write_queue_nums, config.perm) == (3, 3, PERM_READ_WRITE)
    capped = manager.for_send("Wide", AUTO_CREATE_TOPIC_KEY, 64, 0)
    assert capped.write_queue_nums == 8  # never more queues than the template
    with pytest.raises(TopicNotExistError, match="not allowed through 'Other'"):
        manager.for_send("Else", "Other", 4, 0)
    with pytest.raises(TopicNotExistError, match="auto-creation is off"):
        topics(tmp_path / "off", auto_create=False).for_send("Else", AUTO_CREATE_TOPIC_KEY, 4, 0)


def test_for_send_checks(tmp_path: Path) -> None:
    manager = topics(tmp_path, auto_create=False)
    retry = manager.for_send("%RETRY%group", None, None, 0)
    assert (retry.read_queue_nums, retry.write_queue_nums) == (1, 1)
    manager.upsert(TopicConfig("ReadOnly", 2, 2, perm=PERM_READ))
    with pytest.raises(NoPermissionError):
        manager.for_send("ReadOnly", None, None, 0)
    manager.upsert(TopicConfig("T", 2, 2))
    with pytest.raises(MessageIllegalError, match="queueId 2 is out of range"):
        manager.for_send("T", None, None, 2)
    with pytest.raises(MessageIllegalError):
        manager.for_send("bad topic", None, None, 0)


def test_replace_all_takes_the_masters_table(tmp_path: Path) -> None:
    changes: list[int] = []
    manager = topics(tmp_path, changes=changes)
    table = [TopicConfig("A", 1, 1), TopicConfig("B", 2, 2)]
    manager.replace_all(table)
    manager.replace_all(list(table))
    assert sorted(manager.topics) == ["A", "B"] and changes == [1]


# -- consumer offsets ---------------------------------------------------------------------------------------


def test_offsets_commit_query_and_persist(tmp_path: Path) -> None:
    offsets = ConsumerOffsetManager(tmp_path)
    offsets.commit("g1", "T", 0, 5)
    offsets.commit("g1", "T", 1, 7)
    offsets.commit("g2", "T", 0, 1)
    offsets.commit("g1", "U", 0, 2)
    assert offsets.query("g1", "T", 1) == 7 and offsets.query("g1", "T", 2) is None
    assert offsets.groups_of("T") == ["g1", "g2"] and offsets.all_groups() == ["g1", "g2"]
    assert offsets.offsets_of("g1") == {"T": {0: 5, 1: 7}, "U": {0: 2}}
    offsets.persist()
    path = tmp_path / "consumerOffset.json.journal"
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and '"put":"T@g1","v":4,"value":{"0":5,"1":7}' in lines[0]  # one line per changed key
    offsets.persist()  # nothing changed: nothing written
    assert len(path.read_text().splitlines()) == 3
    offsets.commit("g1", "T", 0, 6)
    offsets.persist()
    assert '"value":{"0":6,"1":7}' in path.read_text().splitlines()[3]  # only the key that changed
    reloaded = ConsumerOffsetManager(tmp_path)
    reloaded.load()
    assert reloaded.table == offsets.table
    offsets.delete_topic("T")
    assert offsets.all_groups() == ["g1"] and offsets.query("g2", "T", 0) is None


async def test_durable_persist_is_shared_by_concurrent_callers(tmp_path: Path) -> None:
    offsets = ConsumerOffsetManager(tmp_path)
    offsets.commit("g", "T", 0, 1)
    await asyncio.gather(*(offsets.persist_durably() for _ in range(5)))
    reloaded = ConsumerOffsetManager(tmp_path)
    reloaded.load()
    assert reloaded.query("g", "T", 0) == 1


# -- connected clients ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def heartbeat(client_id: str, group: str = "cg", sub: str = "TagA || TagB") -> dict[str, Any]:
    tags = [t.strip() for t in sub.split("||")]
    subscription = {
        "topic": "T",
        "subString": sub,
        "codeSet": [java_string_hash(t) for t in tags],
        "tagsSet": tags,
        "subVersion": 42,
    }
    return {
        "clientID": client_id,
        "producerDataSet": [{"groupName": "pg"}],
        "consumerDataSet": [
            {"groupName": group, "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "subscriptionDataSet": [subscription]}
        ],
    }


def conn(peer: str) -> Connection:
    return cast(Connection, FakeConn(peer))


def test_consumers_join_leave_and_expire() -> None:
    told: list[tuple[str, int]] = []
    clock = Clock()
    manager = ConsumerManager(lambda group, conns: told.append((group, len(conns))), clock)
    first, second = conn("10.0.0.1:1"), conn("10.0.0.2:2")
    manager.heartbeat(first, heartbeat("c1"))
    manager.heartbeat(second, heartbeat("c2"))
    manager.heartbeat(first, heartbeat("c1"))  # a known connection: no change
    assert told == [("cg", 1), ("cg", 2)] and manager.client_ids("cg") == ["c1", "c2"]
    sub = manager.subscription("cg", "T")
    assert sub is not None and sub.code_set == {java_string_hash("TagA"), java_string_hash("TagB")}
    assert sub.sub_version == 42 and manager.groups["cg"].consume_from == "CONSUME_FROM_FIRST_OFFSET"
    assert set(manager.producers["pg"]) == {id(first), id(second)}

    manager.connection_closed(first)
    assert told[-1] == ("cg", 1) and manager.client_ids("cg") == ["c2"] and id(first) not in manager.producers["pg"]

    clock.now += 200
    manager.scan_expired(120)
    assert told[-1] == ("cg", 0) and manager.client_ids("cg") == [] and not cast(FakeConn, second).is_open
    assert manager.producers["pg"] == {}
    assert manager.client_ids("other") == [] and manager.subscription("other", "T") is None


def test_unregister_tells_the_rest_of_the_group() -> None:
    told: list[tuple[str, int]] = []
    manager = ConsumerManager(lambda group, conns: told.append((group, len(conns))))
    one, two = conn("a:1"), conn("b:2")
    manager.heartbeat(one, heartbeat("c1"))
    manager.heartbeat(two, heartbeat("c2"))
    manager.unregister(one, "c1", "cg", "pg")
    assert told[-1] == ("cg", 1) and id(one) not in manager.producers["pg"]
    manager.unregister(one, "c1", "cg", None)  # already gone: nobody told
    assert len(told) == 3


# -- tag expressions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", [None, "", "  ", "*", " * "])
def test_every_message(expression: str | None) -> None:
    assert parse_tag_expression(expression) is None


def test_tag_codes() -> None:
    assert parse_tag_expression("TagA") == {java_string_hash("TagA")}
    assert parse_tag_expression(" TagA || TagB ") == {java_string_hash("TagA"), java_string_hash("TagB")}


@pytest.mark.parametrize("expression", ["TagA ||", "|| TagB", "A |||| B"])
def test_an_empty_tag_is_a_parse_failure(expression: str) -> None:
    with pytest.raises(KrocketError, match="empty tag") as info:
        parse_tag_expression(expression)
    assert info.value.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED


# -- long polling ------------------------------------------------------------------------------------------------


async def test_long_polling_wakes_matching_waiters_only() -> None:
    polling = LongPolling()
    tag_a = java_string_hash("A")
    wants_a = asyncio.ensure_future(polling.wait("T", 0, 5, {tag_a}, 5.0, lambda: False))
    wants_any = asyncio.ensure_future(polling.wait("T", 0, 5, None, 5.0, lambda: False))
    await asyncio.sleep(0)
    assert polling.suspended() == 2
    polling.notify("T", 0, 5, tag_a)  # not past their offset yet
    polling.notify("T", 1, 9, tag_a)  # another queue
    polling.notify("T", 0, 6, java_string_hash("B"))
    assert await asyncio.wait_for(wants_any, 1) is True
    assert not wants_a.done()
    polling.notify("T", 0, 7, tag_a)
    assert await asyncio.wait_for(wants_a, 1) is True
    assert polling.suspended() == 0


async def test_long_polling_times_out_and_wakes_all() -> None:
    polling = LongPolling()
    assert await polling.wait("T", 0, 0, None, 0.01, lambda: False) is False
    assert await polling.wait("T", 0, 0, None, 5.0, lambda: True) is True  # already there: no wait
    waiting = asyncio.ensure_future(polling.wait("T", 0, 0, None, 5.0, lambda: False))
    await asyncio.sleep(0)
    polling.wake_all()
    assert await waiting is True and polling.suspended() == 0


async def test_offset_writes_are_compacted_and_reload_the_latest(tmp_path: Path) -> None:
    offsets = ConsumerOffsetManager(tmp_path)
    for i in range(1500):  # past the journal's 1,000 lines: a snapshot is written by a thread meanwhile
        offsets.commit("g", f"T{i % 50}", i % 4, i)
        await offsets.persist_durably()
    offsets.delete_topic("T7")
    offsets.persist()
    offsets.close()
    assert json.loads((tmp_path / "consumerOffset.json").read_text())["offsetTable"]  # a snapshot exists
    assert len((tmp_path / "consumerOffset.json.journal").read_text().splitlines()) < 1000
    reloaded = ConsumerOffsetManager(tmp_path)
    reloaded.load()
    assert reloaded.table == offsets.table and "T7@g" not in reloaded.table
