"""``ConsumerLag``, behind krocket_broker_consumer_lag_messages and _seconds: messages not consumed per group and
topic, seconds since the first unconsumed message was stored (the most behind queue), and a bounded number of
store look-ups per scrape (an unchanged offset is answered from the last one)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from krocket.broker.metrics import ConsumerLag
from krocket.common.codes import ResponseCode

from tests.unit.broker.broker_rig import BrokerRig, make_rig, send_header, send_v2


async def _send(rig: BrokerRig, topic: str, queue_id: int) -> None:
    response = await rig.answer(send_v2(send_header(topic, queue_id), b"x"))
    assert response.code == ResponseCode.SUCCESS, response.remark


async def test_lag_in_messages_and_seconds_with_bounded_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    rig.topic("T", queues=4)
    now = [1_750_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])  # store times and the scrape's clock
    for queue_id in range(4):
        for _ in range(3):
            await _send(rig, "T", queue_id)
        now[0] += 10.0  # queue 0's messages are the oldest
    for queue_id in range(4):
        rig.offsets.commit("g", "T", queue_id, 1 if queue_id == 0 else 3)  # only queue 0 is behind
    rig.offsets.commit("g", "T", 1, 2)  # and queue 1, by one message stored 10 s after queue 0's
    lookups: list[tuple[str, int, int]] = []
    lag = ConsumerLag(rig.service, max_lookups=1)
    real = lag._store_time

    def counted(topic: str, queue_id: int, offset: int) -> int:
        lookups.append((topic, queue_id, offset))
        return real(topic, queue_id, offset)

    monkeypatch.setattr(lag, "_store_time", counted)
    key = (("group", "g"), ("topic", "T"))
    messages, seconds = lag.collect()
    assert messages == {key: 3.0}
    assert len(lookups) == 1  # the budget: one queue this scrape
    messages, seconds = lag.collect()
    assert len(lookups) == 2  # the other one now; the first from the last scrape
    assert seconds == {key: pytest.approx(40.0)}  # queue 0's messages were stored 40 s before now
    lag.collect()
    assert len(lookups) == 2  # nothing moved: no look-up
    rig.offsets.commit("g", "T", 0, 3)  # queue 0 caught up: queue 1's message is the oldest unconsumed
    messages, seconds = lag.collect()
    assert messages == {key: 1.0} and seconds == {key: pytest.approx(30.0)}
    assert len(lookups) == 2
    rig.offsets.commit("g", "T", 1, 3)
    assert lag.collect() == ({key: 0.0}, {key: 0.0})
    rig.store.close()
