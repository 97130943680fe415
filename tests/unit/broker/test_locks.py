"""LOCK_BATCH_MQ (41) / UNLOCK_BATCH_MQ (42): RocketMQ's lock rules with a fake clock, and the processors in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krocket.broker.rebalance_lock import LOCK_MAX_LIVE_MS, RebalanceLockManager
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import MessageIllegalError
from krocket.common.lock_body import LockBatchRequest, LockedQueue, parse_lock_ok_body

from tests.unit.broker.broker_rig import make_rig, request

Q0 = LockedQueue("T", "broker-a", 0)
Q1 = LockedQueue("T", "broker-a", 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def locks(clock: FakeClock) -> RebalanceLockManager:
    return RebalanceLockManager(clock_ms=clock)


def test_a_free_queue_is_granted_and_held_by_that_client(locks: RebalanceLockManager) -> None:
    assert locks.try_lock_batch("g", "c1", [Q0, Q1]) == [Q0, Q1]
    assert locks.holder("g", Q0) == "c1"


def test_a_live_lock_of_another_client_is_not_granted(locks: RebalanceLockManager) -> None:
    locks.try_lock_batch("g", "c1", [Q0])
    assert locks.try_lock_batch("g", "c2", [Q0, Q1]) == [Q1]
    assert locks.holder("g", Q0) == "c1"


def test_locks_are_per_group(locks: RebalanceLockManager) -> None:
    locks.try_lock_batch("g1", "c1", [Q0])
    assert locks.try_lock_batch("g2", "c2", [Q0]) == [Q0]


def test_a_lock_expires_after_60_s_and_is_taken_over(locks: RebalanceLockManager, clock: FakeClock) -> None:
    locks.try_lock_batch("g", "c1", [Q0])
    clock.now += LOCK_MAX_LIVE_MS
    assert locks.try_lock_batch("g", "c2", [Q0]) == []  # still alive at exactly 60 s
    clock.now += 1
    assert locks.holder("g", Q0) is None
    assert locks.try_lock_batch("g", "c2", [Q0]) == [Q0]
    assert locks.holder("g", Q0) == "c2"


def test_renewal_by_the_holder_keeps_the_lock_alive(locks: RebalanceLockManager, clock: FakeClock) -> None:
    locks.try_lock_batch("g", "c1", [Q0])
    for _ in range(5):
        clock.now += 20_000
        assert locks.try_lock_batch("g", "c1", [Q0]) == [Q0]
    clock.now += 59_000
    assert locks.try_lock_batch("g", "c2", [Q0]) == []


def test_only_the_holder_unlocks(locks: RebalanceLockManager) -> None:
    locks.try_lock_batch("g", "c1", [Q0, Q1])
    assert locks.unlock_batch("g", "c2", [Q0]) == []
    assert locks.holder("g", Q0) == "c1"
    assert locks.unlock_batch("g", "c1", [Q0]) == [Q0]
    assert locks.try_lock_batch("g", "c2", [Q0]) == [Q0]
    assert locks.holder("g", Q1) == "c1"


def test_expired_locks_are_purged(locks: RebalanceLockManager, clock: FakeClock) -> None:
    locks.try_lock_batch("g", "c1", [Q0, Q1])
    clock.now += LOCK_MAX_LIVE_MS + 1
    assert locks.purge_expired() == 2
    assert locks.purge_expired() == 0


def test_lock_body_is_parsed_leniently_as_rocketmq_clients_send_it() -> None:
    raw = b'{"consumerGroup":"g","clientId":"127.0.0.1@1","mqSet":[{"brokerName":"b","queueId":"3","topic":"T"}]}'
    req = LockBatchRequest.from_body(raw)
    assert (req.consumer_group, req.client_id, req.queues) == ("g", "127.0.0.1@1", [LockedQueue("T", "b", 3)])
    assert LockBatchRequest.from_body(req.to_body()) == req


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"clientId":"c","mqSet":[]}',
        b'{"consumerGroup":"g","clientId":"c","mqSet":[{"topic":"T"}]}',
        b'{"consumerGroup":"g","clientId":"c","mqSet":[{"topic":"T","brokerName":"b","queueId":"x"}]}',
    ],
)
def test_a_malformed_lock_body_is_refused(raw: bytes) -> None:
    with pytest.raises(MessageIllegalError):
        LockBatchRequest.from_body(raw)


async def test_lock_and_unlock_through_the_processors(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    c1 = LockBatchRequest("g", "c1", [Q0, Q1]).to_body()
    reply = await rig.answer(request(RequestCode.LOCK_BATCH_MQ, body=c1))
    assert reply.code == ResponseCode.SUCCESS
    assert json.loads(reply.body or b"")["lockOKMQSet"][0] == {"topic": "T", "brokerName": "broker-a", "queueId": 0}
    assert parse_lock_ok_body(reply.body) == [Q0, Q1]

    c2 = LockBatchRequest("g", "c2", [Q0, Q1]).to_body()
    reply = await rig.answer(request(RequestCode.LOCK_BATCH_MQ, body=c2))
    assert parse_lock_ok_body(reply.body) == []

    unlock = LockBatchRequest("g", "c1", [Q1]).to_body()
    assert (await rig.answer(request(RequestCode.UNLOCK_BATCH_MQ, body=unlock))).code == ResponseCode.SUCCESS
    reply = await rig.answer(request(RequestCode.LOCK_BATCH_MQ, body=c2))
    assert parse_lock_ok_body(reply.body) == [Q1]


async def test_a_malformed_lock_request_is_answered_message_illegal(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    reply = await rig.answer(request(RequestCode.LOCK_BATCH_MQ, body=b"{"))
    assert reply.code == ResponseCode.MESSAGE_ILLEGAL
