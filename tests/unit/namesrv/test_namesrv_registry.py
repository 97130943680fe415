"""RouteRegistry: registration, master/slave, clusters, expiry with a fake clock, connection removal."""

from __future__ import annotations

import json

import pytest

from krocket.common.route import TopicRouteData, dumps
from krocket.common.topic import TopicConfig
from krocket.namesrv.registry import Registration, RegistrationConflictError, RouteRegistry


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def reg(
    name: str = "broker-a",
    broker_id: int = 0,
    addr: str = "10.0.0.1:10911",
    cluster: str = "c1",
    topics: dict[str, int] | None = None,
    conn: int | None = 1,
    version: int = 1,
    ha: str = "",
) -> Registration:
    configs = None
    if topics is not None:
        configs = {t: TopicConfig(t, n, n) for t, n in topics.items()}
    return Registration(
        cluster,
        name,
        broker_id,
        addr,
        ha or addr.replace("10911", "10912"),
        configs,
        {"counter": version, "timestamp": 0},
        conn,
    )


def make() -> tuple[RouteRegistry, FakeClock]:
    clock = FakeClock()
    return RouteRegistry(clock=clock), clock


def test_master_registration_defines_route() -> None:
    r, _ = make()
    result = r.register(reg(topics={"T": 4}))
    assert result.first and result.changed and result.topics_updated == ["T"]
    assert result.master_addr is None  # a master is told nothing, as in RocketMQ
    route = r.route("T")
    assert route is not None
    assert [q.broker_name for q in route.queue_datas] == ["broker-a"]
    assert route.broker_datas[0].broker_addrs == {0: "10.0.0.1:10911"}
    assert r.route("missing") is None
    assert r.topics() == ["T"]


def test_route_json_shape_is_rocketmq() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}))
    r.register(reg(broker_id=1, addr="10.0.0.2:10911", topics={"T": 4}))
    route = r.route("T")
    assert route is not None
    data = json.loads(dumps(route.to_json()))
    assert data == {
        "queueDatas": [
            {"brokerName": "broker-a", "readQueueNums": 4, "writeQueueNums": 4, "perm": 6, "topicSysFlag": 0}
        ],
        "brokerDatas": [
            {"cluster": "c1", "brokerName": "broker-a", "brokerAddrs": {"0": "10.0.0.1:10911", "1": "10.0.0.2:10911"}}
        ],
        "filterServerTable": {},
    }
    assert b'"brokerAddrs":{"0":' in dumps(route.to_json())
    assert TopicRouteData.from_json(data).broker("broker-a") is not None


def test_refresh_is_not_a_change_and_same_version_keeps_topics() -> None:
    r, clock = make()
    r.register(reg(topics={"T": 4}))
    clock.t += 30
    again = r.register(reg(topics={"T": 4}))
    assert not again.first and not again.changed
    r.delete_topic("T")
    # Same dataVersion: the refresh does not bring a deleted topic back (as RocketMQ).
    r.register(reg(topics={"T": 4}))
    assert r.route("T") is None
    # A new dataVersion does.
    changed = r.register(reg(topics={"T": 8}, version=2))
    assert changed.changed and changed.topics_updated == ["T"]
    route = r.route("T")
    assert route is not None and route.queue_datas[0].write_queue_nums == 8


def test_slave_does_not_change_queue_data_and_learns_master() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}, ha="10.0.0.1:10912"))
    slave = r.register(reg(broker_id=1, addr="10.0.0.2:10911", topics={"T": 16, "SlaveOnly": 2}, conn=2))
    assert slave.topics_updated == []
    assert slave.master_addr == "10.0.0.1:10911"
    assert slave.ha_server_addr == "10.0.0.1:10912"
    route = r.route("T")
    assert route is not None and route.queue_datas[0].read_queue_nums == 4
    assert r.route("SlaveOnly") is None


def test_slave_alone_gets_no_master() -> None:
    r, _ = make()
    result = r.register(reg(broker_id=1, addr="10.0.0.2:10911", topics={"T": 4}))
    assert result.master_addr is None and result.ha_server_addr is None
    assert r.route("T") is None
    assert r.cluster_info()["brokerAddrTable"]["broker-a"]["brokerAddrs"] == {"1": "10.0.0.2:10911"}


def test_master_gone_slave_keeps_group_and_queue_data() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}, conn=1))
    r.register(reg(broker_id=1, addr="10.0.0.2:10911", conn=2))
    gone = r.remove_by_connection(1)
    assert [g.addr for g in gone] == ["10.0.0.1:10911"]
    route = r.route("T")
    assert route is not None
    assert route.broker_datas[0].broker_addrs == {1: "10.0.0.2:10911"}
    assert route.broker_datas[0].master_addr() is None
    assert route.queue_datas[0].broker_name == "broker-a"
    # The last broker of the group leaves: its queue data and the topic go.
    r.remove_by_connection(2)
    assert r.route("T") is None
    assert r.topics() == []
    assert r.cluster_info() == {"brokerAddrTable": {}, "clusterAddrTable": {}}


def test_multiple_groups_and_clusters() -> None:
    r, _ = make()
    r.register(reg("broker-a", topics={"T": 4, "A": 1}, conn=1))
    r.register(reg("broker-b", addr="10.0.0.3:10911", topics={"T": 2}, conn=2))
    r.register(reg("broker-x", addr="10.0.1.1:10911", cluster="c2", topics={"X": 1}, conn=3))
    route = r.route("T")
    assert route is not None
    assert [q.broker_name for q in route.queue_datas] == ["broker-a", "broker-b"]
    assert [b.broker_name for b in route.broker_datas] == ["broker-a", "broker-b"]
    info = r.cluster_info()
    assert info["clusterAddrTable"] == {"c1": ["broker-a", "broker-b"], "c2": ["broker-x"]}
    assert info["brokerAddrTable"]["broker-x"] == {
        "cluster": "c2",
        "brokerName": "broker-x",
        "brokerAddrs": {"0": "10.0.1.1:10911"},
    }
    assert r.topics() == ["A", "T", "X"]
    r.remove_by_connection(2)
    route = r.route("T")
    assert route is not None and [q.broker_name for q in route.queue_datas] == ["broker-a"]
    # Delete a topic in one cluster only.
    r.register(reg("broker-y", addr="10.0.1.2:10911", cluster="c2", topics={"T": 1}, conn=4))
    assert r.delete_topic("T", cluster="c2")
    route = r.route("T")
    assert route is not None and [q.broker_name for q in route.queue_datas] == ["broker-a"]
    assert r.delete_topic("T") and r.route("T") is None
    assert not r.delete_topic("T")


def test_expiry_with_fake_clock() -> None:
    r, clock = make()
    r.register(reg(topics={"T": 4}))
    clock.t += 60
    r.register(reg(broker_id=1, addr="10.0.0.2:10911", conn=2))
    clock.t += 60
    assert r.scan_expired() == []  # exactly 120 s is not yet expired
    clock.t += 1
    gone = r.scan_expired()
    assert [g.addr for g in gone] == ["10.0.0.1:10911"]
    assert r.route("T") is not None  # the slave still carries the group
    clock.t += 60
    assert [g.addr for g in r.scan_expired()] == ["10.0.0.2:10911"]
    assert r.route("T") is None and r.broker_count == 0


def test_refresh_postpones_expiry() -> None:
    r, clock = make()
    r.register(reg(topics={"T": 4}))
    for _ in range(10):
        clock.t += 30
        r.register(reg(topics={"T": 4}))
        assert r.scan_expired() == []
    assert r.broker_count == 1


def test_remove_by_connection_only_touches_that_connection() -> None:
    r, _ = make()
    r.register(reg("broker-a", topics={"T": 4}, conn=1))
    r.register(reg("broker-b", addr="10.0.0.3:10911", topics={"T": 4}, conn=2))
    assert r.remove_by_connection(99) == []
    assert len(r.remove_by_connection(1)) == 1
    assert [b.broker_name for b in r.live_brokers()] == ["broker-b"]
    # Re-registering over a new connection moves ownership: the old connection closing is harmless.
    r.register(reg("broker-b", addr="10.0.0.3:10911", topics={"T": 4}, conn=3))
    assert r.remove_by_connection(2) == []
    assert r.broker_count == 1


def test_unregister() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}))
    assert r.unregister("c1", "broker-a", 1, "10.0.0.1:10911") is None  # wrong id
    removed = r.unregister("c1", "broker-a", 0, "10.0.0.1:10911")
    assert removed is not None and removed.broker_id == 0
    assert r.route("T") is None and r.cluster_info()["clusterAddrTable"] == {}
    assert r.unregister("c1", "broker-a", 0, "10.0.0.1:10911") is None


def test_slave_promoted_to_master_on_same_address() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}, conn=1))
    r.register(reg(broker_id=1, addr="10.0.0.2:10911", conn=2))
    r.remove_by_connection(1)
    promoted = r.register(reg(broker_id=0, addr="10.0.0.2:10911", topics={"T": 4}, conn=2))
    assert promoted.first
    route = r.route("T")
    assert route is not None and route.broker_datas[0].broker_addrs == {0: "10.0.0.2:10911"}
    assert r.broker_count == 1


def test_new_address_for_same_broker_id_displaces_old_once_its_connection_is_gone() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}, conn=1))
    with pytest.raises(RegistrationConflictError, match="held by the live broker 10.0.0.1:10911"):
        r.register(reg(addr="10.0.0.9:10911", topics={"T": 4}, conn=2))
    r.remove_by_connection(1)
    r.register(reg(topics={"T": 4}, conn=1))  # registered again, then the process restarts elsewhere
    r.remove_by_connection(1)
    result = r.register(reg(addr="10.0.0.9:10911", topics={"T": 4}, conn=2))
    assert result.changed
    assert [b.addr for b in r.live_brokers()] == ["10.0.0.9:10911"]
    # The old connection closing does not take the new process's route away.
    assert r.remove_by_connection(1) == []
    route = r.route("T")
    assert route is not None and route.broker_datas[0].master_addr() == "10.0.0.9:10911"


def test_registration_without_topics_keeps_existing_queue_data() -> None:
    r, _ = make()
    r.register(reg(topics={"T": 4}))
    r.register(reg(topics=None, version=5))
    assert r.route("T") is not None


def test_live_holder_keeps_its_slot_against_takeovers() -> None:
    r, clock = make()
    real = reg(topics={"T": 4}, conn=1)
    real.peer_host = "10.0.0.1"
    r.register(real)
    fake_addr = reg(addr="10.6.6.6:10911", topics={"T": 1}, conn=7)
    fake_addr.peer_host = "10.6.6.6"
    fake_same_addr = reg(topics={"T": 1}, conn=7, version=9)  # the real address, from another host
    fake_same_addr.peer_host = "10.6.6.6"
    fake_identity = reg(name="broker-z", broker_id=1, conn=7)  # the real address under another identity
    fake_identity.peer_host = "10.6.6.6"
    for fake in (fake_addr, fake_same_addr, fake_identity):
        with pytest.raises(RegistrationConflictError) as refused:
            r.register(fake)
        assert refused.value.holder.addr == "10.0.0.1:10911"
    route = r.route("T")
    assert route is not None and route.broker_datas[0].broker_addrs == {0: "10.0.0.1:10911"}
    assert route.queue_datas[0].write_queue_nums == 4
    # The holder itself re-registers freely, also over a new connection from its own host.
    clock.t += 30
    again = reg(topics={"T": 4}, conn=2)
    again.peer_host = "10.0.0.1"
    r.register(again)
    assert r.remove_by_connection(1) == [] and r.broker_count == 1


def test_expired_holder_without_connection_gives_way() -> None:
    r, clock = make()
    r.register(reg(topics={"T": 4}, conn=None))
    with pytest.raises(RegistrationConflictError):
        r.register(reg(addr="10.0.0.9:10911", conn=None))
    clock.t += r.expiry + 1
    r.register(reg(addr="10.0.0.9:10911", topics={"T": 4}, conn=None))
    route = r.route("T")
    assert route is not None and route.broker_datas[0].master_addr() == "10.0.0.9:10911"
