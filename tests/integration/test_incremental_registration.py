"""Incremental registration with real processes (two name servers, two broker groups, a 1 s registration period):
every name server's routes stay equal to the masters' topic tables through creates, updates and deletes sent as
deltas, a name server that was down while topics changed (and restarted knowing nothing) catches up, a restarted
broker registers in full again, and an unchanged broker's periodic round is a version check of well under 1 KiB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import ConnectionPool
from krocket.common.route import TopicRouteData

from tests.support.broker_http import http_call
from tests.support.cluster import ChildProcess, LocalCluster, start_cluster, wait_until
from tests.support.remoting import call

Shape = dict[str, tuple[int, int, int]]  # topic -> (read queues, write queues, perm) of one group


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("increg")
    config = data / "broker.yaml"
    config.write_text("registerNameServerPeriod: 1000\n")
    c = start_cluster(
        data / "cluster", namesrvs=2, groups=2, auto_create=False, extra_broker_args=["--config", str(config)]
    )
    try:
        yield c
    finally:
        c.stop()


def masters(cluster: LocalCluster) -> list[ChildProcess]:
    return [b for b in cluster.brokers if b.broker_id == 0]


def broker_tables(cluster: LocalCluster) -> dict[str, Shape]:
    """Each master's user topics, by broker name."""
    out: dict[str, Shape] = {}
    for broker in masters(cluster):
        topics = http_call(broker, "GET", "/api/v1/topics")["topics"]
        out[str(broker.broker_name)] = {
            t["topicName"]: (t["readQueueNums"], t["writeQueueNums"], t["perm"])
            for t in topics
            if t["topicName"].startswith("Inc")
        }
    return out


async def namesrv_tables(addr: str) -> dict[str, Shape]:
    """What one name server routes, in the same shape."""
    pool = ConnectionPool()
    try:
        listed = await call(pool, addr, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        names = [t for t in json.loads(listed.body or b"{}").get("topicList", []) if t.startswith("Inc")]
        out: dict[str, Shape] = {}
        for topic in names:
            got = await call(pool, addr, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic})
            if got.code != ResponseCode.SUCCESS:
                continue
            for q in TopicRouteData.from_json(json.loads(got.body or b"{}")).queue_datas:
                out.setdefault(q.broker_name, {})[topic] = (q.read_queue_nums, q.write_queue_nums, q.perm)
        return out
    finally:
        await pool.close()


def routes_equal_tables(cluster: LocalCluster, namesrvs: list[ChildProcess] | None = None) -> bool:
    expected = {name: shape for name, shape in broker_tables(cluster).items() if shape}
    return all(asyncio.run(namesrv_tables(ns.addr)) == expected for ns in namesrvs or cluster.namesrvs)


def stats(broker: ChildProcess) -> dict[str, int]:
    return dict(http_call(broker, "GET", "/api/v1/broker")["registration"])


def topic(name: str, queues: int, perm: int = 6) -> dict[str, Any]:
    return {"topicName": name, "readQueueNums": queues, "writeQueueNums": queues, "perm": perm}


def test_creates_updates_and_deletes_reach_every_name_server_as_deltas(cluster: LocalCluster) -> None:
    a, b = masters(cluster)
    wait_until(lambda: all(stats(m)["fullRegistrations"] >= 2 for m in (a, b)), 15, message="first registrations")
    before = {m.name: stats(m) for m in (a, b)}
    for i in range(20):
        http_call(a, "POST", "/api/v1/topics", topic(f"IncA{i}", 4))
    for i in range(5):
        http_call(b, "POST", "/api/v1/topics", topic(f"IncB{i}", 2))
    http_call(a, "POST", "/api/v1/topics", topic("IncShared", 4))
    http_call(b, "POST", "/api/v1/topics", topic("IncShared", 8))
    wait_until(lambda: routes_equal_tables(cluster), 15, message="routes equal to the brokers' tables after creates")
    http_call(a, "PUT", "/api/v1/topics/IncA3", topic("IncA3", 16, perm=4))
    http_call(a, "DELETE", "/api/v1/topics/IncA7")
    http_call(b, "DELETE", "/api/v1/topics/IncShared")
    wait_until(lambda: routes_equal_tables(cluster), 15, message="routes after updates and deletes")
    routed = asyncio.run(namesrv_tables(cluster.namesrvs[1].addr))
    assert routed["broker-a"]["IncA3"] == (16, 16, 4) and "IncA7" not in routed["broker-a"]
    assert "IncShared" not in routed.get("broker-b", {}) and routed["broker-a"]["IncShared"] == (4, 4, 6)
    after = {m.name: stats(m) for m in (a, b)}
    for m in (a, b):
        assert after[m.name]["deltas"] > before[m.name]["deltas"], after
        assert after[m.name]["fullRegistrations"] == before[m.name]["fullRegistrations"], (before, after)


def test_a_name_server_that_was_down_catches_up_and_a_restarted_broker_registers_in_full(
    cluster: LocalCluster,
) -> None:
    a = masters(cluster)[0]
    http_call(a, "POST", "/api/v1/topics", topic("IncGone", 2))
    wait_until(lambda: routes_equal_tables(cluster), 15, message="a settled cluster")
    late = cluster.namesrvs[1]
    late.stop()
    for i in range(10):
        http_call(a, "POST", "/api/v1/topics", topic(f"IncLate{i}", 2))
    http_call(a, "DELETE", "/api/v1/topics/IncGone")
    wait_until(lambda: routes_equal_tables(cluster, [cluster.namesrvs[0]]), 15, message="the live name server")
    late.start()
    late.wait_ports()
    wait_until(lambda: routes_equal_tables(cluster), 20, message="the restarted name server caught up")

    fulls = stats(a)["fullRegistrations"]
    a.stop()
    a.start()
    a.wait_ports()
    wait_until(lambda: stats(a)["fullRegistrations"] >= 2, 20, message="the restarted broker's full registrations")
    assert stats(a)["fullRegistrations"] < fulls + 10  # a new process: its own counters
    http_call(a, "POST", "/api/v1/topics", topic("IncAfterRestart", 2))
    wait_until(lambda: routes_equal_tables(cluster), 20, message="routes after the broker restart")


def test_an_unchanged_brokers_periodic_round_is_a_small_version_check(cluster: LocalCluster) -> None:
    b = masters(cluster)[1]
    wait_until(lambda: routes_equal_tables(cluster), 15, message="a settled cluster")
    first = stats(b)
    # Three rounds at 1 s: two name servers each checked three times.
    wait_until(lambda: stats(b)["versionChecks"] - first["versionChecks"] >= 2 * 3, 15, message="three rounds")
    last = stats(b)
    checks = last["versionChecks"] - first["versionChecks"]
    assert last["fullRegistrations"] == first["fullRegistrations"] and last["deltas"] == first["deltas"]
    per_check = (last["sentBytes"] - first["sentBytes"]) / checks
    assert per_check < 1024, per_check
