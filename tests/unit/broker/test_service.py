"""BrokerService over a real store: when a send answers at once and when it waits, replication failures as
send statuses, reads on a slave, progress and topic stats."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, cast

import pytest

from krocket.broker.ha.master import FlushSlaveTimeoutError, HAMaster
from krocket.broker.service import PullOutcome, SendOutcome
from krocket.common.codes import ResponseCode
from krocket.common.errors import MessageIllegalError, TopicNotExistError
from krocket.common.topic import TopicConfig

from tests.unit.broker.broker_rig import BrokerRig, make_rig
from tests.unit.store.store_helpers import BORN_HOST


def put(rig: BrokerRig, topic: str = "T", queue_id: int = 0, body: bytes = b"x") -> Any:
    """``BrokerService.send``'s outcome, or the awaitable of it."""
    return rig.service.send(topic, queue_id, body, {"TAGS": "A"}, 0, 0, 0, BORN_HOST)


class FakeMaster:
    """An HAMaster whose slave never acknowledges."""

    def __init__(self) -> None:
        self.waited: list[int] = []

    async def wait_replicated(self, end_offset: int) -> None:
        self.waited.append(end_offset)
        raise FlushSlaveTimeoutError("no slave acknowledged in time")

    def add_ack_listener(self, listener: Any) -> None:
        pass  # it never acknowledges

    def acked_offset(self) -> int:
        return -1

    def has_in_sync_slave(self) -> bool:
        return True


def test_async_flush_sends_answer_at_once(rig: BrokerRig) -> None:
    rig.topic("T")
    outcome = put(rig)
    assert isinstance(outcome, SendOutcome) and outcome.code == ResponseCode.SUCCESS
    assert (outcome.queue_id, outcome.queue_offset) == (0, 0)


async def test_sync_flush_sends_wait(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, flush_disk_type="SYNC_FLUSH")
    try:
        rig.topic("T")
        pending = put(rig)
        assert inspect.isawaitable(pending)
        outcome = await pending
        assert outcome.code == ResponseCode.SUCCESS and outcome.queue_offset == 0
    finally:
        rig.store.close()


async def test_sync_master_turns_a_slave_timeout_into_the_send_status(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, broker_role="SYNC_MASTER")
    try:
        rig.topic("T")
        master = FakeMaster()
        rig.service.ha_master = cast(HAMaster, master)
        outcome = await put(rig)
        assert outcome.code == ResponseCode.FLUSH_SLAVE_TIMEOUT and outcome.remark == "no slave acknowledged in time"
        assert master.waited == [rig.store.max_phy_offset]
    finally:
        rig.store.close()


def test_async_master_with_a_slave_does_not_wait(rig: BrokerRig) -> None:
    rig.topic("T")
    rig.service.ha_master = cast(HAMaster, FakeMaster())
    assert isinstance(put(rig), SendOutcome)


def test_batch_checks(rig: BrokerRig) -> None:
    rig.topic("T")
    with pytest.raises(MessageIllegalError, match="holds no message"):
        rig.service.send_batch("T", 0, [], 0, 0, BORN_HOST)


def test_slave_reads_a_replicated_queue_before_its_topic_config(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, broker_id=1)
    try:
        rig.store.put_message("Replicated", 2, b"copied", {}, born_host=BORN_HOST)
        outcome = rig.service.pull("g", "Replicated", 2, 0, 32, None, 0, None)
        assert isinstance(outcome, PullOutcome) and outcome.code == ResponseCode.SUCCESS
        with pytest.raises(TopicNotExistError):
            rig.service.pull("g", "Unknown", 0, 0, 32, None, 0, None)
    finally:
        rig.store.close()


def test_unreadable_topic(rig: BrokerRig) -> None:
    rig.topics.upsert(TopicConfig("WriteOnly", 1, 1, perm=2))
    with pytest.raises(Exception, match="not readable") as info:
        rig.service.pull("g", "WriteOnly", 0, 0, 32, None, 0, None)
    assert getattr(info.value, "code", None) == ResponseCode.NO_PERMISSION


def test_query_offset_on_a_queue_that_lost_its_head(rig: BrokerRig) -> None:
    rig.topic("T")
    assert rig.service.query_offset("g", "T", 0) == 0
    rig.offsets.commit("g", "T", 0, 5)
    assert rig.service.query_offset("g", "T", 0, zero_if_not_found=False) == 5


def test_consumer_progress_and_topic_stats(rig: BrokerRig) -> None:
    rig.topic("T", queues=2)
    for _ in range(3):
        put(rig)
    rig.offsets.commit("g", "T", 0, 1)
    assert rig.service.consumer_progress("g") == [
        {"topic": "T", "queueId": 0, "brokerOffset": 3, "consumerOffset": 1, "lag": 2}
    ]
    assert rig.service.topic_stats("T") == [
        {"queueId": 0, "minOffset": 0, "maxOffset": 3},
        {"queueId": 1, "minOffset": 0, "maxOffset": 0},
    ]


def test_delete_topic_drops_its_offsets_and_queues(rig: BrokerRig) -> None:
    rig.topic("T")
    put(rig)
    rig.offsets.commit("g", "T", 0, 1)
    assert rig.service.delete_topic("T") is True
    assert rig.topics.get("T") is None and rig.offsets.query("g", "T", 0) is None
    assert rig.store.queue_ids("T") == []
    assert rig.service.delete_topic("T") is False


def test_create_topic_on_a_slave_is_refused(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, broker_id=2)
    try:
        with pytest.raises(Exception, match="created on the master"):
            rig.service.create_topic(TopicConfig("T", 1, 1))
    finally:
        rig.store.close()


def test_no_broker_suggestion_without_slaves(rig: BrokerRig) -> None:
    rig.topic("T")
    put(rig)
    outcome = rig.service.pull("g", "T", 0, 0, 32, None, 0, None)
    assert isinstance(outcome, PullOutcome) and outcome.suggest_broker_id == 0
