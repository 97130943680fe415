"""The consumer manager's memory is bounded: groups per connection, and groups forgotten with their clients."""

from __future__ import annotations

from typing import Any, cast

import pytest

from krocket.broker.consumer_manager import MAX_GROUPS_PER_CONNECTION, ConsumerManager
from krocket.common.errors import MessageIllegalError
from krocket.common.remoting import Connection

from tests.unit.broker.broker_rig import FakeConn


def _beat(consumers: list[str], producers: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "clientID": "c1",
        "producerDataSet": [{"groupName": g} for g in producers],
        "consumerDataSet": [{"groupName": g, "subscriptionDataSet": [{"topic": "T"}]} for g in consumers],
    }


def test_one_connection_registers_a_bounded_number_of_groups() -> None:
    manager = ConsumerManager(lambda group, conns: None)
    conn = cast(Connection, FakeConn("10.0.0.1:1"))
    for i in range(MAX_GROUPS_PER_CONNECTION - 1):
        manager.heartbeat(conn, _beat([f"g{i}"]))
    manager.heartbeat(conn, _beat(["g0"], ("pg",)))  # known groups and one more: exactly at the bound
    with pytest.raises(MessageIllegalError, match=f"at most {MAX_GROUPS_PER_CONNECTION}"):
        manager.heartbeat(conn, _beat(["one-too-many"]))
    assert "one-too-many" not in manager.groups and len(manager.groups) == MAX_GROUPS_PER_CONNECTION - 1
    other = cast(Connection, FakeConn("10.0.0.2:2"))  # the bound is per connection
    manager.heartbeat(other, _beat(["one-too-many"]))
    manager.unregister(conn, "c1", "g1", "pg")  # unregistering frees room
    manager.heartbeat(conn, _beat(["fits-again"]))


def test_groups_are_forgotten_when_their_last_client_leaves() -> None:
    manager = ConsumerManager(lambda group, conns: None)
    one, two = cast(Connection, FakeConn("a:1")), cast(Connection, FakeConn("b:2"))
    manager.heartbeat(one, _beat(["shared", "only-one"], ("pg",)))
    manager.heartbeat(two, _beat(["shared"]))
    manager.connection_closed(one)
    assert set(manager.groups) == {"shared"} and "pg" not in manager.producers
    manager.unregister(two, "c1", "shared", None)
    assert manager.groups == {}
