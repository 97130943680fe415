"""PushRebalance in-process: a fake client instance (routes, brokers), fake consumer lists and fake pulls."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from krocket.client import broker_api
from krocket.client.offset_store import RemoteBrokerOffsetStore
from krocket.client.process_queue import ProcessQueue
from krocket.client.rebalance import PushRebalance, subscribe_queues
from krocket.client.subscription import SubscriptionData, build_subscription
from krocket.client.throttle import LogThrottle
from krocket.client.types import MessageModel, MessageQueue
from krocket.common.errors import KrocketError, TopicNotExistError
from krocket.common.route import BrokerData, QueueData, TopicRouteData

ME = "10.0.0.1@me"


def route(brokers: Iterable[str] = ("broker-a", "broker-b"), queues: int = 4, perm: int = 6) -> TopicRouteData:
    names = list(brokers)
    return TopicRouteData(
        [QueueData(n, queues, queues, perm) for n in names],
        [BrokerData("c", n, {0: f"{n}:10911"}) for n in names],
    )


class FakeInstance:
    """What the rebalance uses of a ClientInstance: routes, client id, broker addresses, heartbeats."""

    def __init__(self) -> None:
        self.client_id = ME
        self.routes: dict[str, TopicRouteData] = {}
        self.pool = object()
        self.heartbeats = 0
        self.on_heartbeat: list[str] = []  # consumer ids the brokers list after the next heartbeat

    async def route(self, topic: str) -> TopicRouteData:
        if topic not in self.routes:
            raise TopicNotExistError(f"no route of {topic}")
        return self.routes[topic]

    def broker_addr(self, name: str) -> str | None:
        return f"{name}:10911"

    async def send_heartbeats(self) -> None:
        self.heartbeats += 1


@dataclass
class FakePulls:
    started: dict[MessageQueue, tuple[ProcessQueue, int]] = field(default_factory=dict)
    stopped: list[MessageQueue] = field(default_factory=list)

    def start(self, mq: MessageQueue, pq: ProcessQueue, offset: int) -> None:
        self.started[mq] = (pq, offset)

    def stop(self, mq: MessageQueue) -> None:
        self.stopped.append(mq)


@dataclass
class Settings:
    group: str = "cg"
    message_model: MessageModel = MessageModel.CLUSTERING


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: MessageModel = MessageModel.CLUSTERING) -> None:
        self.instance = FakeInstance()
        self.pulls = FakePulls()
        self.ids: list[str] = [ME]
        self.ids_calls: list[str] = []
        self.fail_ids = False
        self.committed: dict[MessageQueue, int] = {}
        self.start_failures: set[MessageQueue] = set()
        self.subs: dict[str, SubscriptionData] = {"T": build_subscription("T", "*")}
        self.store = RemoteBrokerOffsetStore(self._query, self._commit)
        self.rebalance = PushRebalance(
            Settings(message_model=model),
            self.instance,  # type: ignore[arg-type]
            self.store,
            self.subs,
            self._start_offset,
            self.pulls,
            LogThrottle(),
        )
        self.instance.routes["T"] = route()
        monkeypatch.setattr(broker_api, "consumer_ids", self._consumer_ids)

    async def _consumer_ids(self, pool: object, addr: str, group: str) -> list[str]:
        self.ids_calls.append(addr)
        if self.fail_ids:
            raise KrocketError("broker down")
        if self.instance.heartbeats and self.instance.on_heartbeat:
            self.ids, self.instance.on_heartbeat = self.instance.on_heartbeat, []
        return list(self.ids)

    async def _query(self, mq: MessageQueue) -> int:
        return -1

    async def _commit(self, mq: MessageQueue, offset: int) -> None:
        self.committed[mq] = offset

    async def _start_offset(self, mq: MessageQueue) -> int:
        if mq in self.start_failures:
            raise KrocketError("no offset")
        return 100 + mq.queue_id

    @property
    def owned(self) -> list[MessageQueue]:
        return sorted(self.rebalance.process_queues)


def queues(topic: str = "T", brokers: Iterable[str] = ("broker-a", "broker-b"), n: int = 4) -> list[MessageQueue]:
    return sorted(MessageQueue(topic, b, i) for b in brokers for i in range(n))


def test_subscribe_queues_lists_readable_queues_sorted() -> None:
    r = TopicRouteData(
        [QueueData("broker-b", 2, 2, 6), QueueData("broker-a", 1, 3, 6), QueueData("broker-c", 2, 2, 2)], []
    )
    assert subscribe_queues("T", r) == [
        MessageQueue("T", "broker-a", 0),
        MessageQueue("T", "broker-b", 0),
        MessageQueue("T", "broker-b", 1),
    ]  # broker-c is write-only (perm 2)


async def test_a_lone_consumer_takes_every_queue_from_its_start_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.rebalance.rebalance()
    assert h.owned == queues()
    assert {mq: offset for mq, (_, offset) in h.pulls.started.items()} == {mq: 100 + mq.queue_id for mq in queues()}
    assert all(h.rebalance.process_queues[mq] is pq for mq, (pq, _) in h.pulls.started.items())
    await h.rebalance.rebalance()  # nothing changed: nothing started again
    assert len(h.pulls.started) == 8 and not h.pulls.stopped


async def test_a_second_consumer_takes_half_and_the_lost_queues_are_dropped_and_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.rebalance.rebalance()
    lost = queues()[:4]  # "10.0.0.0@other" sorts before ME: it gets the first half
    for mq in lost:
        h.store.update(mq, 150)
    pqs = {mq: h.rebalance.process_queues[mq] for mq in lost}
    h.ids = ["10.0.0.0@other", ME]
    await h.rebalance.rebalance()
    assert h.owned == queues()[4:]
    assert h.pulls.stopped == lost
    assert all(pq.dropped for pq in pqs.values())
    assert h.committed == dict.fromkeys(lost, 150)  # committed before the queue is handed over
    assert all(h.store.read(mq) == -1 for mq in lost)  # and forgotten


async def test_unlisted_client_sends_a_heartbeat_and_asks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    h.ids = ["10.0.0.0@other"]
    h.instance.on_heartbeat = ["10.0.0.0@other", ME]
    await h.rebalance.rebalance()
    assert h.instance.heartbeats == 1
    assert h.owned == queues()[4:]


async def test_still_unlisted_after_a_heartbeat_keeps_the_current_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.rebalance.rebalance()
    h.ids = ["10.0.0.0@other"]
    await h.rebalance.rebalance()
    assert h.instance.heartbeats == 1
    assert h.owned == queues() and not h.pulls.stopped


async def test_no_broker_answering_keeps_the_current_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.rebalance.rebalance()
    h.fail_ids = True
    await h.rebalance.rebalance()
    assert sorted(h.ids_calls[1:]) == ["broker-a:10911", "broker-b:10911"]  # both brokers were asked
    assert h.owned == queues() and not h.pulls.stopped


async def test_a_topic_without_route_keeps_its_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.rebalance.rebalance()
    del h.instance.routes["T"]
    await h.rebalance.rebalance()
    assert h.owned == queues() and not h.pulls.stopped


async def test_broadcasting_takes_every_queue_without_asking_for_consumers(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, MessageModel.BROADCASTING)
    h.ids = ["10.0.0.0@other", ME]
    await h.rebalance.rebalance()
    assert h.owned == queues() and not h.ids_calls


async def test_queues_of_an_unsubscribed_topic_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    h.subs["U"] = build_subscription("U", "*")
    h.instance.routes["U"] = route(["broker-a"], 2)
    await h.rebalance.rebalance()
    assert h.owned == sorted(queues() + queues("U", ["broker-a"], 2))
    del h.subs["U"]
    await h.rebalance.rebalance()
    assert h.owned == queues()
    assert sorted(h.pulls.stopped) == queues("U", ["broker-a"], 2)


async def test_a_queue_without_start_offset_is_skipped_until_the_next_rebalance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    missing = queues()[0]
    h.start_failures.add(missing)
    await h.rebalance.rebalance()
    assert h.owned == queues()[1:]
    h.start_failures.clear()
    await h.rebalance.rebalance()
    assert h.owned == queues()
