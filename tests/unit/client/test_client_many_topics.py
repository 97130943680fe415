"""A client of many topics stays cheap: concurrent route refreshes that report what changed, rebalance rounds that
ask for the consumer list once and skip unchanged topics, producers that look routes up lazily and forget idle ones."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import pytest

from krocket.client import Message, PushConsumer
from krocket.client.bounded import map_bounded
from krocket.client.instance import ROUTE_FETCH_CONCURRENCY, ClientInstance
from krocket.client.namesrv import same_route
from krocket.client.producer import ROUTE_IDLE_S, Producer
from krocket.client.rebalance import ConsumerIdsRound
from krocket.client.subscription import build_subscription
from krocket.client.types import MessageQueue
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.headers import RequestHeader
from krocket.common.remoting import RemotingCommand
from krocket.common.route import BrokerData, TopicRouteData

from tests.unit.client.client_fakes import FakeCluster
from tests.unit.client.test_push_rebalance import ME, Harness, queues, route


# -- map_bounded -----------------------------------------------------------------------------------------------
async def test_map_bounded_keeps_order_and_errors_and_limits_concurrency() -> None:
    running = peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (i % 3))
        running -= 1
        if i == 5:
            raise KrocketError("five")
        return i * 10

    results = await map_bounded(work, list(range(40)), 4)
    assert peak == 4
    assert [r for i, r in enumerate(results) if i != 5] == [i * 10 for i in range(40) if i != 5]
    assert isinstance(results[5], KrocketError)
    assert await map_bounded(work, [], 4) == []


# -- same_route -------------------------------------------------------------------------------------------------
def test_same_route_ignores_the_order_of_queue_and_broker_lists() -> None:
    a = route(["broker-a", "broker-b"])
    b = TopicRouteData(list(reversed(a.queue_datas)), list(reversed(a.broker_datas)))
    assert same_route(a, b) and same_route(None, None) and not same_route(a, None)
    assert not same_route(a, route(["broker-a", "broker-b"], queues=8))
    moved = route(["broker-a", "broker-b"])
    moved.broker_datas[0] = BrokerData("c", "broker-a", {0: "elsewhere:10911"})
    assert not same_route(a, moved)


# -- route refresh ----------------------------------------------------------------------------------------------
class FakeNamesrvRequests:
    """Stands in for ``NameServerClient.request``: route lookups answered from ``routes``, in flight counted."""

    def __init__(self) -> None:
        self.routes: dict[str, TopicRouteData] = {}
        self.asked: list[str] = []
        self.in_flight = self.peak = 0

    async def __call__(self, code: int, header: RequestHeader | None = None, timeout: float | None = None) -> Any:
        assert code == RequestCode.GET_ROUTEINFO_BY_TOPIC and header is not None
        topic = header.to_fields()["topic"]
        self.asked.append(topic)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.001)
        finally:
            self.in_flight -= 1
        request = RemotingCommand(code)
        found = self.routes.get(topic)
        if found is None:
            return request.response(ResponseCode.TOPIC_NOT_EXIST, "no route")
        return request.response(ResponseCode.SUCCESS, body=json.dumps(found.to_json()).encode())


class RecordingConsumer:
    group = "cg"

    def __init__(self) -> None:
        self.rounds: list[set[str] | None] = []

    def heartbeat_data(self) -> dict[str, Any]:
        return {"groupName": self.group}

    async def rebalance(self, topics: Collection[str] | None = None) -> None:
        self.rounds.append(None if topics is None else set(topics))

    async def persist_offsets(self) -> None:
        pass


@pytest.fixture
async def instance(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[ClientInstance, FakeNamesrvRequests]]:
    inst = ClientInstance("127.0.0.1:9876")
    fake = FakeNamesrvRequests()
    monkeypatch.setattr(inst.namesrv, "request", fake)
    heartbeats: list[int] = []

    async def no_heartbeat() -> None:
        heartbeats.append(1)

    monkeypatch.setattr(inst, "send_heartbeats", no_heartbeat)
    yield inst, fake
    await inst.pool.close()


async def test_routes_refresh_concurrently_and_only_changed_topics_are_rebalanced(
    instance: tuple[ClientInstance, FakeNamesrvRequests],
) -> None:
    inst, fake = instance
    consumer = RecordingConsumer()
    inst.add_consumer(consumer)
    topics = [f"T{i:03d}" for i in range(200)]
    for t in topics:
        fake.routes[t] = route()
    inst.topics.update(topics)
    assert await inst.refresh_routes() == set(topics)  # all new
    assert sorted(fake.asked) == topics  # one lookup per topic, no more
    assert 1 < fake.peak <= ROUTE_FETCH_CONCURRENCY
    kept = {t: inst.namesrv.cached_route(t) for t in topics}
    inst._rebalance_topics.clear()

    fake.asked.clear()
    fake.routes["T007"] = route(["broker-a"])  # one route changed
    fake.routes["T100"] = TopicRouteData(
        list(reversed(route().queue_datas)), list(reversed(route().broker_datas))
    )  # the same, listed in another order
    assert await inst.refresh_routes() == {"T007"}
    assert len(fake.asked) == len(topics)
    assert inst._rebalance_topics == {"T007"} and not inst._rebalance_all
    assert all(inst.namesrv.cached_route(t) is kept[t] for t in topics if t != "T007")  # unchanged: same object

    inst._rebalance_topics.clear()
    assert await inst.refresh_routes() == set()  # nothing changed: no rebalance asked for
    assert inst._rebalance_topics == set()


async def test_a_failed_lookup_keeps_the_cached_route(instance: tuple[ClientInstance, FakeNamesrvRequests]) -> None:
    inst, fake = instance
    fake.routes["A"] = route()
    found = await inst.fetch_routes(["A", "Gone"])
    assert found.changed == {"A"} and set(found.failed) == {"Gone"}
    cached = inst.namesrv.cached_route("A")
    del fake.routes["A"]
    found = await inst.fetch_routes(["A"])
    assert found.changed == set() and set(found.failed) == {"A"}
    assert inst.namesrv.cached_route("A") is cached


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_rebalance_loop_runs_changed_topics_at_once_and_every_topic_on_its_interval() -> None:
    inst = ClientInstance("127.0.0.1:9876", rebalance_interval=1.0)
    consumer = RecordingConsumer()
    inst.add_consumer(consumer)
    task = asyncio.get_running_loop().create_task(inst._rebalance_loop())
    try:
        inst.rebalance_soon({"A"})
        inst.rebalance_soon({"B"})
        await eventually(lambda: len(consumer.rounds) == 1)
        assert consumer.rounds == [{"A", "B"}]  # the changed topics only, in one round
        inst.rebalance_soon()
        await eventually(lambda: len(consumer.rounds) == 2)
        assert consumer.rounds[1] is None  # every topic (a broker said the group changed)

        async def changes() -> None:  # changes of a few topics more often than the interval
            while True:
                inst.rebalance_soon({"C"})
                await asyncio.sleep(0.1)

        churn = asyncio.get_running_loop().create_task(changes())
        try:
            await eventually(lambda: None in consumer.rounds[2:])  # do not hold the safety net off
        finally:
            churn.cancel()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await inst.pool.close()


# -- rebalance rounds -------------------------------------------------------------------------------------------
def many_topics(h: Harness, n: int) -> list[str]:
    names = [f"T{i:03d}" for i in range(n)]
    h.subs.clear()
    h.instance.routes.clear()
    for t in names:
        h.subs[t] = build_subscription(t, "*")
        h.instance.routes[t] = route()
    return names


async def test_rebalance_is_skipped_for_topics_whose_inputs_did_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    names = many_topics(h, 50)
    await h.rebalance.rebalance()
    stats = h.rebalance.stats
    assert (stats.allocated, stats.skipped) == (50, 0)
    assert len(h.ids_calls) == 1  # one consumer list for the 50 topics
    assert len(h.owned) == 50 * 8

    await h.rebalance.rebalance()  # nothing changed: no allocation, nothing started or stopped
    assert (stats.allocated, stats.skipped) == (50, 50)
    assert len(h.ids_calls) == 2 and len(h.pulls.started) == 400 and not h.pulls.stopped

    h.instance.routes["T003"] = route(["broker-a"])  # a route changed: that topic only
    await h.rebalance.rebalance()
    assert (stats.allocated, stats.skipped) == (51, 99)
    assert sorted(h.pulls.stopped) == queues("T003", ["broker-b"])

    await h.rebalance.rebalance(["T010", "T011", "nope"])  # the topics a route refresh found changed
    assert (stats.allocated, stats.skipped) == (51, 101)

    h.ids = ["10.0.0.0@other", ME]  # the group changed: every topic
    await h.rebalance.rebalance()
    assert stats.allocated == 101
    assert all(len([q for q in h.owned if q.topic == t]) == (2 if t == "T003" else 4) for t in names)


async def test_a_topic_that_lost_a_queue_or_could_not_start_one_is_rebalanced_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    many_topics(h, 3)
    missing = MessageQueue("T001", "broker-a", 2)
    h.start_failures.add(missing)
    await h.rebalance.rebalance()
    assert missing not in h.owned
    h.start_failures.clear()
    await h.rebalance.rebalance()  # same inputs, but it does not own what it wanted: done again
    assert missing in h.owned and h.rebalance.stats.allocated == 4

    reset = MessageQueue("T002", "broker-b", 0)
    h.rebalance.process_queues.pop(reset)  # what an offset reset does
    await h.rebalance.rebalance()
    assert reset in h.owned and h.rebalance.stats.allocated == 5


async def test_an_unlisted_client_sends_one_heartbeat_per_round_however_many_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    many_topics(h, 30)
    h.ids = ["10.0.0.0@other"]
    h.instance.on_heartbeat = ["10.0.0.0@other", ME]
    await h.rebalance.rebalance()
    assert h.instance.heartbeats == 1
    assert len(h.ids_calls) == 2  # before and after the heartbeat
    assert len(h.owned) == 30 * 4


async def test_consumer_ids_round_asks_each_broker_once_and_falls_back() -> None:
    asked: list[str] = []

    async def ask(addr: str) -> list[str]:
        asked.append(addr)
        await asyncio.sleep(0.001)
        if addr == "down:1":
            raise KrocketError("down")
        return ["b@2", ME]

    async def heartbeat() -> None:
        raise AssertionError("listed: no heartbeat needed")

    ids = ConsumerIdsRound(ask, heartbeat, ME)
    answers = await asyncio.gather(*(ids.ids(["down:1", "up:1"]) for _ in range(20)))
    assert answers == [(ME, "b@2")] * 20
    assert sorted(asked) == ["down:1", "up:1"] or asked == ["up:1"]
    assert await ids.ids(["up:1", "other:1"]) == (ME, "b@2")  # a broker that answered already comes first
    assert "other:1" not in asked
    with pytest.raises(KrocketError, match="no broker"):
        await ids.ids(["down:1"])


# -- producers --------------------------------------------------------------------------------------------------
@pytest.fixture
async def fake() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster()
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


def route_requests(fake: FakeCluster) -> int:
    return fake.namesrv.requests.count(RequestCode.GET_ROUTEINFO_BY_TOPIC)


async def test_a_producer_looks_routes_up_lazily_and_forgets_idle_ones(fake: FakeCluster) -> None:
    for t in ("A", "B", "C"):
        fake.create_topic(t)
    async with Producer("pg", fake.namesrv_addr) as producer:
        instance = producer.instance
        assert route_requests(fake) == 0  # nothing looked up before a send
        await producer.send(Message("A", b"x"))
        await producer.send(Message("A", b"x"))
        assert route_requests(fake) == 1
        await producer.send(Message("B", b"x"))
        assert route_requests(fake) == 2 and instance.topics == {"A", "B"}

        await instance.refresh_routes()  # only the topics sent to
        assert route_requests(fake) == 4

        await producer.send(Message("B", b"x"))  # A is not sent to again
        assert instance.forget_idle_routes(time.monotonic() + ROUTE_IDLE_S + 1) == ["A"]
        assert instance.topics == {"B"} and instance.namesrv.cached_route("A") is None
        await instance.refresh_routes()
        assert route_requests(fake) == 5  # B only

        result = await producer.send(Message("A", b"again"))  # a forgotten topic is looked up again on use
        assert result.queue.topic == "A" and route_requests(fake) == 6


async def test_subscribing_many_topics_after_start_sends_few_heartbeats(fake: FakeCluster) -> None:
    topics = [f"S{i:02d}" for i in range(40)]
    for t in ["First", *topics]:
        fake.create_topic(t, queues=1)
    consumer = PushConsumer("cg", fake.namesrv_addr, consume_from="FIRST")
    consumer.subscribe("First")
    consumer.register_listener(lambda msgs: None)
    await consumer.start()
    try:
        before = len(fake.brokers[0].heartbeats)
        for t in topics:
            consumer.subscribe(t)
        deadline = time.monotonic() + 10
        while not set(topics) <= {q.topic for q in consumer.assigned_queues()} and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert {q.topic for q in consumer.assigned_queues()} >= set(topics)
        assert len(fake.brokers[0].heartbeats) - before <= 2  # not one per subscribe
        last = fake.brokers[0].heartbeats[-1]["consumerDataSet"][0]["subscriptionDataSet"]
        assert {s["topic"] for s in last} >= set(topics)
    finally:
        await consumer.shutdown()
