"""/metrics of a live cluster (a name server, a master and its slave) after known traffic, parsed with
prometheus_client's parser: types, per-topic and per-group series and their values, request code names, the
constant labels, replication by slave broker id, and the name server's series. The families scraped are exactly
the ones the code lists (``BROKER_METRICS``, ``NAMESRV_METRICS``), which the Grafana dashboard's test reads."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from krocket.broker.metrics import BROKER_METRICS
from krocket.client import Message, Producer, PullConsumer
from krocket.client.types import PullStatus
from krocket.namesrv.metrics import NAMESRV_METRICS

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until, wait_until_async

TOPIC = "MetricsT"
GROUP = "metrics-cg"
SINGLES = 20
BATCH = 4
TOTAL = SINGLES + BATCH + 1  # and one more, sent while a pull is long-polling for it
COMMITTED = 3  # the group's committed offset on one queue (0 on the other)

Families = dict[str, Any]


def scrape(port: int) -> Families:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families: Families, name: str, suffix: str = "", /, **labels: str) -> list[Sample]:
    return [
        s
        for s in families[name].samples
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(families: Families, name: str, suffix: str = "", /, **labels: str) -> float:
    found = samples(families, name, suffix, **labels)
    assert len(found) == 1, (name, labels, families[name].samples)
    return float(found[0].value)


def parsed(families: dict[str, str]) -> dict[str, str]:
    """Listed families as the parser names them (a counter without its ``_total``), with their types."""
    return {f"krocket_{n}".removesuffix("_total"): kind for n, kind in families.items()}


async def traffic(cluster: LocalCluster, master_http: int) -> dict[str, int]:
    await create_topic(cluster, TOPIC, queues=2)
    pulls_at_once = 0
    async with Producer("metrics-producer", cluster.namesrv_addr) as producer:
        for i in range(SINGLES):
            await producer.send(Message(TOPIC, f"single {i}".encode()))
        await producer.send_batch([Message(TOPIC, f"batch {i}".encode()) for i in range(BATCH)])
        async with PullConsumer(GROUP, cluster.namesrv_addr) as consumer:
            queues = sorted(await consumer.fetch_queues(TOPIC), key=lambda q: q.queue_id)
            for queue in queues:
                offset = 0
                while True:
                    result = await consumer.pull(queue, "*", offset, 8)
                    pulls_at_once += 1
                    if result.status is not PullStatus.FOUND:
                        break
                    offset = result.next_begin_offset
            # A long poll at the end of the first queue, answered by one more message sent to that queue.
            head = await consumer.max_offset(queues[0])
            polled = asyncio.ensure_future(consumer.pull(queues[0], "*", head, 8, block_ms=20000))
            await wait_until_async(
                lambda: value(scrape(master_http), "krocket_broker_suspended_pulls") == 1, 20, message="a long poll"
            )
            await producer.send(Message(TOPIC, b"late"), selector=lambda qs, _m, _a: next(q for q in qs if
                                                                                          q.queue_id == 0))  # fmt: skip
            assert len((await polled).messages) == 1
            await consumer.update_offset(queues[0], COMMITTED)
            await consumer.update_offset(queues[1], 0)
    return {"pulls_at_once": pulls_at_once}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("metrics")
    cluster = start_cluster(root, namesrvs=1, groups=1, slaves=1)
    try:
        master, slave = cluster.brokers
        counts = asyncio.run(traffic(cluster, master.http_port))
        head = master.http_json("/api/v1/broker")["maxPhyOffset"]
        wait_until(lambda: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head, 20, message="replication")

        def flushed_and_acked() -> bool:
            got = scrape(master.http_port)
            acked = samples(got, "krocket_broker_replication_lag_bytes", slave_broker_id="1")
            return value(got, "krocket_store_fsync_latency_seconds", "_count") > 0 and [a.value for a in acked] == [0]

        wait_until(flushed_and_acked, 20, interval=0.2, message="a flush round and the slave's ack")
        yield {
            "master": scrape(master.http_port),
            "slave": scrape(slave.http_port),
            "namesrv": scrape(cluster.namesrvs[0].http_port),
            **counts,
        }
    finally:
        cluster.stop()


def test_every_broker_series_is_labelled_with_cluster_broker_and_id(scraped: dict[str, Any]) -> None:
    for role, broker_id in (("master", "0"), ("slave", "1")):
        for family in scraped[role].values():
            for s in family.samples:
                assert (s.labels.get("cluster"), s.labels.get("broker"), s.labels.get("broker_id")) == (
                    "DefaultCluster",
                    "broker-a",
                    broker_id,
                ), (role, s)


def test_the_families_exported_are_the_ones_listed_for_the_dashboard(scraped: dict[str, Any]) -> None:
    exported = {name: f.type for role in ("master", "slave") for name, f in scraped[role].items()}
    listed = parsed(BROKER_METRICS)
    del listed["krocket_broker_acl_denied"]  # only with ACL on
    assert exported == listed
    assert {name: f.type for name, f in scraped["namesrv"].items()} == parsed(NAMESRV_METRICS)


def test_types_counters_gauges_and_histograms(scraped: dict[str, Any]) -> None:
    m = scraped["master"]
    for name in (
        "krocket_broker_requests",
        "krocket_broker_messages_in",
        "krocket_broker_messages_out",
        "krocket_broker_fast_path_sends",
        "krocket_broker_topic_messages_in",
        "krocket_broker_topic_bytes_in",
        "krocket_broker_group_messages_out",
        "krocket_broker_group_bytes_out",
        "krocket_broker_disk_full_refusals",
        "krocket_store_recovery_cut_bytes",
    ):
        assert m[name].type == "counter", name
        assert all(s.name == name + "_total" for s in m[name].samples), name
    for name in (
        "krocket_broker_consumer_lag_messages",
        "krocket_broker_consumer_lag_seconds",
        "krocket_broker_topics",
        "krocket_store_disk_used_bytes",
        "krocket_store_disk_free_bytes",
        "krocket_store_commitlog_bytes",
        "krocket_store_consume_queue_bytes",
        "krocket_broker_replication_lag_bytes",
    ):
        assert m[name].type == "gauge", name
    for name in (
        "krocket_broker_send_latency_seconds",
        "krocket_broker_pull_latency_seconds",
        "krocket_store_flush_latency_seconds",
        "krocket_store_fsync_latency_seconds",
    ):
        assert m[name].type == "histogram", name
        buckets = samples(m, name, "_bucket")
        assert buckets[-1].labels["le"] == "+Inf"
        assert buckets[-1].value == value(m, name, "_count")
        assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative


def test_per_topic_and_per_group_traffic_and_lag(scraped: dict[str, Any]) -> None:
    m = scraped["master"]
    assert value(m, "krocket_broker_topic_messages_in", "_total", topic=TOPIC) == TOTAL
    bytes_in = value(m, "krocket_broker_topic_bytes_in", "_total", topic=TOPIC)
    assert TOTAL * 100 < bytes_in < TOTAL * 400  # commit log records of ~10-byte bodies
    assert value(m, "krocket_broker_group_messages_out", "_total", group=GROUP, topic=TOPIC) == TOTAL
    assert value(m, "krocket_broker_group_bytes_out", "_total", group=GROUP, topic=TOPIC) == bytes_in
    assert value(m, "krocket_broker_consumer_lag_messages", group=GROUP, topic=TOPIC) == TOTAL - COMMITTED
    assert 0 < value(m, "krocket_broker_consumer_lag_seconds", group=GROUP, topic=TOPIC) < 300
    assert value(m, "krocket_broker_messages_in", "_total") >= TOTAL


def test_requests_by_code_name_and_latency_counts(scraped: dict[str, Any]) -> None:
    m = scraped["master"]
    assert value(m, "krocket_broker_requests", "_total", name="SEND_MESSAGE_V2") == SINGLES + 1
    assert value(m, "krocket_broker_requests", "_total", name="SEND_BATCH_MESSAGE", code="320") == 1
    assert value(m, "krocket_broker_requests", "_total", name="PULL_MESSAGE") == scraped["pulls_at_once"] + 1
    # Every send was answered at once (ASYNC_FLUSH); the long poll is not timed, the other pulls are.
    assert value(m, "krocket_broker_send_latency_seconds", "_count") == SINGLES + 2
    assert value(m, "krocket_broker_pull_latency_seconds", "_count") == scraped["pulls_at_once"]
    assert 0 < value(m, "krocket_broker_send_latency_seconds", "_sum") < 5


def test_store_series(scraped: dict[str, Any]) -> None:
    m = scraped["master"]
    assert value(m, "krocket_store_disk_used_bytes") > 0 and value(m, "krocket_store_disk_free_bytes") > 0
    assert value(m, "krocket_store_commitlog_bytes") >= value(m, "krocket_broker_topic_bytes_in", "_total",
                                                               topic=TOPIC)  # fmt: skip
    assert value(m, "krocket_store_consume_queue_bytes") >= TOTAL * 20
    assert value(m, "krocket_store_flush_latency_seconds", "_count") > 0


def test_replication_is_labelled_by_the_slaves_broker_id(scraped: dict[str, Any]) -> None:
    m, s = scraped["master"], scraped["slave"]
    assert [x.labels["slave_broker_id"] for x in samples(m, "krocket_broker_replication_lag_bytes")] == ["1"]
    assert value(m, "krocket_broker_replication_slaves") == 1
    assert 0 <= value(m, "krocket_broker_replication_seconds_since_ack", slave_broker_id="1") < 15
    assert value(s, "krocket_broker_replication_slave_connected") == 1
    assert value(s, "krocket_broker_replication_slave_lag_bytes") == 0


def test_the_name_servers_series(scraped: dict[str, Any]) -> None:
    n = scraped["namesrv"]
    assert value(n, "krocket_namesrv_brokers") == 2
    assert value(n, "krocket_namesrv_cluster_brokers", cluster="DefaultCluster") == 2
    registered = {(x.labels["broker"], x.labels["broker_id"]) for x in samples(n, "krocket_namesrv_broker_registered")}
    assert registered == {("broker-a", "0"), ("broker-a", "1")}
    assert value(n, "krocket_namesrv_broker_topics", broker="broker-a") >= 1
    assert value(n, "krocket_namesrv_requests", "_total", name="REGISTER_BROKER") >= 2
    assert n["krocket_namesrv_requests"].type == "counter"
