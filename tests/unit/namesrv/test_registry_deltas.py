"""RouteRegistry with incremental registration: a master's full registration is the whole truth about its group's
topics, deltas change only what they name and move the held data version only from the version they start at,
version queries answer cheaply and keep a broker alive, and the per-group topic index serves pruning and write
permission changes."""

from __future__ import annotations

from krocket.common.register_body import TopicDelta, data_version
from krocket.common.topic import TopicConfig
from krocket.namesrv.registry import RouteRegistry

from tests.unit.namesrv.test_namesrv_registry import make, reg

V1, V2, V3 = ({"counter": n, "timestamp": 0} for n in (1, 2, 3))


def delta(from_version: dict, to_version: dict, upsert: dict[str, int] | None = None, *deleted: str) -> TopicDelta:
    configs = {t: TopicConfig(t, n, n) for t, n in (upsert or {}).items()}
    return TopicDelta(from_version, to_version, configs, list(deleted))


def queues(r: RouteRegistry, topic: str) -> dict[str, int]:
    route = r.route(topic)
    return {q.broker_name: q.write_queue_nums for q in route.queue_datas} if route is not None else {}


def test_a_full_registration_drops_the_topics_it_no_longer_names() -> None:
    r, _ = make()
    r.register(reg(topics={"A": 4, "B": 4}, version=1))
    r.register(reg("broker-b", addr="10.0.0.2:10911", topics={"B": 2}, version=1, conn=2))
    result = r.register(reg(topics={"A": 8}, version=2))
    assert sorted(result.topics_updated) == ["A", "B"]
    assert queues(r, "A") == {"broker-a": 8}
    assert queues(r, "B") == {"broker-b": 2}  # the other group keeps its queues
    r.register(reg("broker-b", addr="10.0.0.2:10911", topics={}, version=2, conn=2))
    assert r.route("B") is None and r.topics() == ["A"]


def test_a_delta_applies_creates_updates_and_deletes_and_moves_the_version() -> None:
    r, _ = make()
    r.register(reg(topics={"A": 4, "B": 4}, version=1))
    result = r.apply_delta("broker-a", 0, "10.0.0.1:10911", delta(V1, V2, {"A": 8, "C": 1}, "B"), conn_id=1)
    assert result.known and result.caught_up and sorted(result.topics_updated) == ["A", "B", "C"]
    assert (queues(r, "A"), queues(r, "C"), r.route("B")) == ({"broker-a": 8}, {"broker-a": 1}, None)
    assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V2, conn_id=1) is False
    assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V3, conn_id=1) is True


def test_a_delta_from_another_version_is_applied_but_does_not_catch_up() -> None:
    """A name server that missed a delta holds an older version: what it gets is applied, and the version it holds
    stays, so the broker's next version query finds it changed and registers in full."""
    r, _ = make()
    r.register(reg(topics={"A": 4}, version=1))
    missed = r.apply_delta("broker-a", 0, "10.0.0.1:10911", delta(V2, V3, {"C": 2}), conn_id=1)
    assert missed.known and not missed.caught_up and missed.topics_updated == ["C"]
    assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V3, conn_id=1) is True
    r.register(reg(topics={"A": 4, "B": 2, "C": 2}, version=3))  # the full registration that follows
    assert r.topics() == ["A", "B", "C"]
    assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V3, conn_id=1) is False


def test_unknown_brokers_other_connections_and_slaves() -> None:
    r, _ = make()
    unknown = r.apply_delta("broker-a", 0, "10.0.0.1:10911", delta(V1, V2, {"A": 4}))
    assert not unknown.known and r.topics() == []
    assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V1) is True
    r.register(reg(topics={"A": 4}, version=1))
    other = r.apply_delta("broker-a", 0, "10.0.0.1:10911", delta(V1, V2, {"X": 4}), conn_id=99)
    assert not other.known and r.topics() == ["A"]  # only the connection it registered over may change it
    assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V1, conn_id=99) is True
    assert r.query_data_version("broker-a", 1, "10.0.0.1:10911", V1, conn_id=1) is True  # another identity
    r.register(reg(broker_id=1, addr="10.0.0.9:10911", topics={}, version=1, conn=3))
    slave = r.apply_delta("broker-a", 1, "10.0.0.9:10911", delta(V1, V2, {"S": 4}), conn_id=3)
    assert slave.known and slave.caught_up and slave.topics_updated == [] and r.topics() == ["A"]


def test_version_queries_keep_a_broker_alive() -> None:
    r, clock = make()
    r.register(reg(topics={"A": 4}, version=1))
    for _ in range(5):
        clock.t += 100.0  # each under the 120 s expiry, 500 s in all
        assert r.query_data_version("broker-a", 0, "10.0.0.1:10911", V1, conn_id=1) is False
        assert r.scan_expired() == []
    clock.t += 121.0
    assert [info.addr for info in r.scan_expired()] == ["10.0.0.1:10911"]
    assert r.topics() == []


def test_the_group_index_serves_pruning_and_write_permission() -> None:
    r, _ = make()
    r.register(reg(topics={f"T{i}": 4 for i in range(50)}, version=1))
    r.register(reg("broker-b", addr="10.0.0.2:10911", topics={"T0": 4, "Own": 4}, version=1, conn=2))
    assert r.wipe_write_perm("broker-b") == 2
    assert r.add_write_perm("broker-b") == 2
    assert r.delete_topic("T0", cluster="c1") is True and r.route("T0") is None
    r.remove_by_connection(1)
    assert r.topics() == ["Own"]
    assert r.wipe_write_perm("broker-a") == 0


def test_data_versions_of_two_broker_processes_differ() -> None:
    assert data_version(5, 1000) != data_version(5, 2000)
    assert data_version(5, 1000) == {"stateVersion": 0, "timestamp": 1000, "counter": 5}
