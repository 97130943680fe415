"""Delay levels and timers: level parsing, where a delayed put is stored, due times, and the delivery over a real
store (re-put when due, in order, offsets persisted and resumed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from krocket.broker.schedule import DelayLevels, delivered_properties, entry_due_ms, schedule_if_delayed
from krocket.broker.schedule.delivery import ScheduleDelivery, install_due_times
from krocket.broker.schedule.levels import DEFAULT_DELAY_LEVELS, parse_duration_ms
from krocket.broker.schedule.routing import TIMER_QUEUES, timer_queue_delay_ms, timer_queue_for
from krocket.common.errors import ConfigError, MessageIllegalError
from krocket.common.record import decode_records
from krocket.common.topic import SCHEDULE_TOPIC, TIMER_TOPIC

from tests.unit.broker.broker_rig import BrokerRig
from tests.unit.store.store_helpers import BORN_HOST

LEVELS = DelayLevels.parse("1s 2s 3s")
NOW = 1_700_000_000_000


def test_default_levels_are_rocketmqs_eighteen() -> None:
    levels = DelayLevels.parse(DEFAULT_DELAY_LEVELS)
    assert levels.max_level == 18
    assert levels.delay_ms(1) == 1000 and levels.delay_ms(3) == 10_000 and levels.delay_ms(18) == 7_200_000
    assert levels.delay_ms(99) == 7_200_000  # above the max clamps to the max


@pytest.mark.parametrize("text", ["", "1x", "0s", "-1s", "s", "1.5s", "1s two"])
def test_bad_levels_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="messageDelayLevel"):
        DelayLevels.parse(text)


def test_duration_units() -> None:
    assert [parse_duration_ms(t) for t in ("250ms", "2s", "3m", "1h", "1d")] == [
        250,
        2000,
        180_000,
        3_600_000,
        86_400_000,
    ]


def test_broker_config_validates_the_levels(tmp_path: Path) -> None:
    from krocket.broker.config import BrokerConfig

    with pytest.raises(ConfigError, match="messageDelayLevel"):
        BrokerConfig(store_path_root_dir=str(tmp_path), message_delay_level="1s nope").validate()


def test_a_delay_level_goes_to_the_schedule_queue_of_its_level() -> None:
    topic, queue, props = schedule_if_delayed({"DELAY": "2", "UNIQ_KEY": "U"}, "T", 3, LEVELS, NOW)
    assert (topic, queue) == (SCHEDULE_TOPIC, 1)
    assert props == {"DELAY": "2", "UNIQ_KEY": "U", "REAL_TOPIC": "T", "REAL_QID": "3"}
    assert schedule_if_delayed({"DELAY": "9"}, "T", 0, LEVELS, NOW)[:2] == (SCHEDULE_TOPIC, 2)  # clamped to 3


@pytest.mark.parametrize("props", [{}, {"DELAY": "0"}, {"DELAY": "-1"}, {"TAGS": "a"}])
def test_undelayed_messages_stay_where_they_were_sent(props: dict[str, str]) -> None:
    assert schedule_if_delayed(props, "T", 1, LEVELS, NOW) == ("T", 1, props)


def test_timers_go_to_the_largest_timer_queue_that_fits() -> None:
    topic, queue, props = schedule_if_delayed({"TIMER_DELAY_SEC": "3"}, "T", 0, LEVELS, NOW)
    assert (topic, queue) == (TIMER_TOPIC, 4)  # 1.6 s <= 3 s < 3.2 s
    assert props == {"TIMER_DELIVER_MS": str(NOW + 3000), "REAL_TOPIC": "T", "REAL_QID": "0"}
    assert schedule_if_delayed({"TIMER_DELIVER_MS": str(NOW + 50)}, "T", 0, LEVELS, NOW)[:2] == (TIMER_TOPIC, 0)
    due_now = schedule_if_delayed({"TIMER_DELIVER_MS": str(NOW - 5), "K": "v"}, "T", 2, LEVELS, NOW)
    assert due_now == ("T", 2, {"K": "v"})


def test_timer_queues_cover_three_days_and_halve_what_is_left() -> None:
    three_days = 3 * 86_400_000
    assert timer_queue_for(three_days) == TIMER_QUEUES - 1
    for remaining in (100, 150, 999, 1000, 123_456, three_days):
        q = timer_queue_for(remaining)
        assert timer_queue_delay_ms(q) <= remaining < 2 * timer_queue_delay_ms(q) or q == TIMER_QUEUES - 1


@pytest.mark.parametrize(
    "props",
    [{"TIMER_DELAY_SEC": str(3 * 86_400 + 1)}, {"TIMER_DELIVER_MS": str(NOW + 3 * 86_400_000 + 1)},
     {"TIMER_DELAY_SEC": "-1"}, {"TIMER_DELIVER_MS": "soon"}, {"DELAY": "x"}],
)  # fmt: skip
def test_bad_or_too_far_timers_are_illegal(props: dict[str, str]) -> None:
    with pytest.raises(MessageIllegalError):
        schedule_if_delayed(props, "T", 0, LEVELS, NOW)


def test_due_times_and_delivered_properties() -> None:
    assert entry_due_ms(SCHEDULE_TOPIC, 1, NOW, LEVELS) == NOW + 2000
    assert entry_due_ms(SCHEDULE_TOPIC, 7, NOW, LEVELS) == NOW + 3000  # past the table: the highest
    assert entry_due_ms(TIMER_TOPIC, 3, NOW, LEVELS) == NOW + 800
    assert entry_due_ms("T", 0, NOW, LEVELS) is None
    props = {"DELAY": "2", "TIMER_DELIVER_MS": "1", "UNIQ_KEY": "U", "REAL_TOPIC": "T", "REAL_QID": "0"}
    assert delivered_properties(props) == {"UNIQ_KEY": "U", "REAL_TOPIC": "T", "REAL_QID": "0"}


def _send(rig: BrokerRig, props: dict[str, str], body: bytes = b"x", queue_id: int = 0) -> None:
    rig.service.send("T", queue_id, body, props, 0, 0, 0, BORN_HOST)


def _real(rig: BrokerRig, queue_id: int = 0) -> list[bytes]:
    got = rig.store.get_messages("T", queue_id, 0, max_msgs=100)
    return [m.body for m in decode_records(got.body)] if got.body else []


def test_delivery_over_a_real_store(rig: BrokerRig, tmp_path: Path) -> None:
    install_due_times(rig.store, rig.service.delay_levels)
    rig.service.delay_levels = LEVELS
    rig.topic("T")
    delivery = ScheduleDelivery(rig.store, LEVELS, tmp_path / "config")
    delivery.offsets.load()
    _send(rig, {"DELAY": "1", "UNIQ_KEY": "U1"}, b"a")
    _send(rig, {"DELAY": "1"}, b"b")
    _send(rig, {"DELAY": "2"}, b"c", queue_id=1)
    _send(rig, {}, b"now")
    assert _real(rig) == [b"now"]
    cq = rig.store.dispatcher.queues.get(SCHEDULE_TOPIC, 0)
    assert cq is not None
    entries = list(cq.iter_entries(0, 10))
    stored_at = decode_records(rig.store.get_messages(SCHEDULE_TOPIC, 0, 0).body)[0].store_timestamp
    assert entries[0][3] == stored_at + 1000  # the tag slot holds the due time
    assert delivery.pending() == 3
    assert delivery.deliver_due(stored_at + 999) == 0
    assert delivery.deliver_due(stored_at + 1500) == 2
    assert _real(rig) == [b"now", b"a", b"b"]
    delivered = decode_records(rig.store.get_messages("T", 0, 1).body)[0]
    assert delivered.properties["UNIQ_KEY"] == "U1" and "DELAY" not in delivered.properties
    assert delivery.deliver_due(stored_at + 1500) == 0  # nothing twice
    delivery.offsets.persist()
    saved = json.loads((tmp_path / "config" / "delayOffset.json").read_text())
    assert saved["offsetTable"] == {"1": 2, "2": 0}
    resumed = ScheduleDelivery(rig.store, LEVELS, tmp_path / "config")
    resumed.offsets.load()
    assert resumed.pending() == 1
    assert resumed.deliver_due(stored_at + 60_000) == 1
    assert _real(rig, 1) == [b"c"]


def test_timer_hops_until_due(rig: BrokerRig, tmp_path: Path) -> None:
    install_due_times(rig.store, LEVELS)
    rig.topic("T")
    delivery = ScheduleDelivery(rig.store, LEVELS, tmp_path / "config")
    _send(rig, {"TIMER_DELAY_SEC": "3"}, b"t")
    assert rig.store.dispatcher.queues.get(TIMER_TOPIC, 4) is not None  # 1.6 s <= 3 s < 3.2 s
    msg = decode_records(rig.store.get_messages(TIMER_TOPIC, 4, 0).body)[0]
    due = int(msg.properties["TIMER_DELIVER_MS"])
    clock = msg.store_timestamp + 1600
    hops = 0
    while not _real(rig):
        delivered = delivery.deliver_due(clock)
        hops += delivered
        clock += 50
        assert clock <= due + 1000, "the timer was not delivered"
    assert clock - 50 >= due  # never before its time
    assert hops >= 2  # 1.6 s, then the rest in smaller queues
    assert "TIMER_DELIVER_MS" not in decode_records(rig.store.get_messages("T", 0, 0).body)[0].properties


def test_a_batch_refuses_delayed_messages(rig: BrokerRig) -> None:
    from krocket.common.batch import BatchItem

    rig.topic("T")
    with pytest.raises(MessageIllegalError, match="delayed"):
        rig.service.send_batch("T", 0, [BatchItem(b"x", {"DELAY": "1"})], 0, 0, BORN_HOST)


def test_a_slave_keeps_the_larger_offset_of_each_queue(tmp_path: Path) -> None:
    from krocket.broker.schedule.offsets import copy_from_master, merge_offsets, read_table

    mine = {"offsetTable": {"1": 7, "2": 1}, "timerOffsetTable": {}}
    theirs = {"offsetTable": {"1": 5, "2": 4}, "timerOffsetTable": {"3": 2}}
    assert merge_offsets(mine, theirs) == {"offsetTable": {"1": 7, "2": 4}, "timerOffsetTable": {"3": 2}}
    copy_from_master(tmp_path, theirs)
    assert read_table(tmp_path) == theirs


async def test_get_all_delay_offset_serves_the_persisted_table(rig: BrokerRig, tmp_path: Path) -> None:
    from krocket.common.codes import RequestCode, ResponseCode
    from krocket.common.remoting import RemotingCommand

    (tmp_path / "config" / "delayOffset.json").write_text('{"offsetTable": {"2": 9}}')
    response = await rig.answer(RemotingCommand(RequestCode.GET_ALL_DELAY_OFFSET))
    assert response.code == ResponseCode.SUCCESS
    assert json.loads(response.body) == {"offsetTable": {"2": 9}, "timerOffsetTable": {}}


def test_offsets_are_written_only_once_the_re_puts_are_on_disk(rig: BrokerRig, tmp_path: Path) -> None:
    install_due_times(rig.store, LEVELS)
    rig.service.delay_levels = LEVELS
    rig.topic("T")
    rig.store.flush()
    delivery = ScheduleDelivery(rig.store, LEVELS, tmp_path / "config")
    path = tmp_path / "config" / "delayOffset.json"
    _send(rig, {"DELAY": "1"}, b"a")
    assert delivery.deliver_due(int(time.time() * 1000) + 5000) == 1
    delivery.persist_flushed()
    assert not path.exists()  # the re-put is not flushed yet: the old (no) offsets stay
    rig.store.flush()
    delivery.persist_flushed()
    assert json.loads(path.read_text())["offsetTable"] == {"1": 1}


def test_the_client_message_sets_the_delay_and_timer_properties() -> None:
    from krocket.common.message import Message

    assert Message("T", b"x", delay_level=2).wire_properties() == {"DELAY": "2"}
    assert Message("T", b"x", delay_seconds=3).wire_properties() == {"TIMER_DELAY_SEC": "3"}
    assert Message("T", b"x", deliver_at_ms=NOW).wire_properties() == {"TIMER_DELIVER_MS": str(NOW)}
    assert Message("T", b"x").wire_properties() == {}
