"""The broker's ``/metrics``: every family, built at scrape time from what the broker counts anyway.

Recording stays where it was (``BrokerService`` totals, ``TrafficStats`` per topic and group, the request
counters and latency histograms of ``make_handler``, the store's flush histograms, the HA links); this module only
reads them. Every series carries ``cluster``, ``broker`` and ``broker_id`` (``Metrics.set_labels``).

The names are listed once, in ``BROKER_METRICS``: the Grafana dashboard's test checks its queries against them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from krocket.broker.fastpath import FastSendPath
from krocket.broker.ha.master import HAMaster
from krocket.broker.ha.slave import HASlave
from krocket.broker.long_polling import LongPolling
from krocket.broker.processors import ACL_DENIED, PULL_LATENCY, REQUESTS, SEND_LATENCY
from krocket.broker.service import BrokerService
from krocket.broker.store import MessageStore
from krocket.broker.store.consume_queue import ENTRY_BYTES
from krocket.broker.store.recovery import register_recovery_metrics
from krocket.common.metrics import Metrics, Sampled, Values

# Store-time look-ups (two small reads each) one scrape may make for consumer lag in seconds; a queue whose
# consumer offset has not moved is answered from the last scrape's look-up, so a steady state costs none.
LAG_LOOKUPS_PER_SCRAPE = 512


# Every family the broker exports, without the krocket_ prefix, and its type (the Grafana dashboard's test checks
# its queries against these; tests/integration/test_metrics.py checks a real scrape has exactly these).
BROKER_METRICS: dict[str, str] = {
    REQUESTS: "counter",
    ACL_DENIED: "counter",
    SEND_LATENCY: "histogram",
    PULL_LATENCY: "histogram",
    "broker_messages_in_total": "counter",
    "broker_messages_out_total": "counter",
    "broker_fast_path_sends_total": "counter",
    "broker_topics": "gauge",
    "broker_suspended_pulls": "gauge",
    "broker_disk_full": "gauge",
    "broker_disk_full_refusals_total": "counter",
    "broker_commitlog_max_offset_bytes": "gauge",
    "broker_topic_messages_in_total": "counter",
    "broker_topic_bytes_in_total": "counter",
    "broker_group_messages_out_total": "counter",
    "broker_group_bytes_out_total": "counter",
    "broker_consumer_lag_messages": "gauge",
    "broker_consumer_lag_seconds": "gauge",
    "broker_replication_slaves": "gauge",
    "broker_replication_lag_bytes": "gauge",
    "broker_replication_seconds_since_ack": "gauge",
    "broker_replication_slave_lag_bytes": "gauge",
    "broker_replication_slave_connected": "gauge",
    "store_disk_used_bytes": "gauge",
    "store_disk_free_bytes": "gauge",
    "store_commitlog_bytes": "gauge",
    "store_consume_queue_bytes": "gauge",
    "store_flush_latency_seconds": "histogram",
    "store_fsync_latency_seconds": "histogram",
    "store_recovery_cut_bytes_total": "counter",
    "store_recovery_corrupt_bytes_total": "counter",
    "store_recovery_corrupt_records_total": "counter",
}


class ConsumerLag:
    """Per (group, topic): messages not yet consumed, and seconds behind: now minus the store time of the first
    unconsumed message, the largest over the topic's queues (0 when nothing is behind)."""

    def __init__(self, service: BrokerService, max_lookups: int = LAG_LOOKUPS_PER_SCRAPE) -> None:
        self._service = service
        self._max_lookups = max_lookups
        self._store_times: dict[tuple[str, str, int], tuple[int, int]] = {}  # -> (offset looked up, store ms)

    def _store_time(self, topic: str, queue_id: int, offset: int) -> int:
        store = self._service.store
        queue = store.queues.get(topic, queue_id)
        entry = queue.entry(max(offset, queue.min_offset)) if queue is not None else None
        return store.commitlog.store_timestamp_at(entry[0]) if entry is not None else -1

    def collect(self) -> tuple[Values, Values]:
        store = self._service.store
        now_ms = time.time() * 1000
        messages: Values = {}
        seconds: Values = {}
        lookups = 0
        times = self._store_times
        kept: dict[tuple[str, str, int], tuple[int, int]] = {}
        for key, queues in self._service.offsets.table.items():
            topic, _, group = key.partition("@")
            total = 0
            behind = 0.0
            for queue_id, offset in queues.items():
                lag = store.max_offset(topic, queue_id) - offset
                if lag <= 0:
                    continue
                total += lag
                where = (group, topic, queue_id)
                known = times.get(where)
                if known is None or (known[0] != offset and lookups < self._max_lookups):
                    if lookups >= self._max_lookups:
                        continue  # over this scrape's budget: the next scrape looks it up
                    lookups += 1
                    known = (offset, self._store_time(topic, queue_id, offset))
                kept[where] = known
                if known[1] > 0:
                    behind = max(behind, (now_ms - known[1]) / 1000.0)
            label = (("group", group), ("topic", topic))
            messages[label] = messages.get(label, 0.0) + total
            seconds[label] = max(seconds.get(label, 0.0), behind)
        self._store_times = kept  # forgets queues that caught up or went away
        return messages, seconds


def _traffic(service: BrokerService) -> Iterator[Sampled]:
    traffic = service.traffic
    msgs_in: Values = {}
    bytes_in: Values = {}
    for topic, t in traffic.put.items():
        msgs_in[(("topic", topic),)] = float(t.messages)
        bytes_in[(("topic", topic),)] = float(t.bytes)
    yield Sampled("broker_topic_messages_in_total", "Messages stored, by the topic the producer named", "counter",
                  msgs_in)  # fmt: skip
    yield Sampled("broker_topic_bytes_in_total", "Commit log bytes stored, by topic", "counter", bytes_in)
    msgs_out: Values = {}
    bytes_out: Values = {}
    for (group, topic), t in traffic.get.items():
        key = (("group", group), ("topic", topic))
        msgs_out[key] = float(t.messages)
        bytes_out[key] = float(t.bytes)
    yield Sampled("broker_group_messages_out_total", "Messages served to pulls, by consumer group and topic",
                  "counter", msgs_out)  # fmt: skip
    yield Sampled("broker_group_bytes_out_total", "Bytes served to pulls, by consumer group and topic", "counter",
                  bytes_out)  # fmt: skip


def _replication(ha_master: HAMaster | None, ha_slave: HASlave | None) -> Iterator[Sampled]:
    if ha_master is not None:
        lag: Values = {}
        age: Values = {}
        for link in ha_master.status():
            slave = str(link["brokerId"]) if link["brokerId"] is not None else f"unknown {link['peer']}"
            lag[(("slave_broker_id", slave),)] = float(link["lagBytes"])
            age[(("slave_broker_id", slave),)] = float(link["secondsSinceAck"])
        yield Sampled("broker_replication_slaves", "Slaves connected to this master", "gauge",
                      {(): float(len(lag))})  # fmt: skip
        yield Sampled("broker_replication_lag_bytes", "Commit log bytes a slave has not acknowledged, by slave id",
                      "gauge", lag)  # fmt: skip
        yield Sampled("broker_replication_seconds_since_ack", "Seconds since a slave last reported, by slave id",
                      "gauge", age)  # fmt: skip
    if ha_slave is not None:
        status = ha_slave.status()
        behind = status["lagBytes"]
        yield Sampled("broker_replication_slave_lag_bytes",
                      "On a slave: bytes behind the master's end as last heard (-1 before the first frame)", "gauge",
                      {(): float(behind if behind is not None else -1)})  # fmt: skip
        yield Sampled("broker_replication_slave_connected", "On a slave: 1 while it follows a master", "gauge",
                      {(): float(status["master"] is not None)})  # fmt: skip


def _store(store: MessageStore) -> Iterator[Sampled]:
    space = store.space
    yield Sampled("store_disk_used_bytes", "Bytes used on the store's file system (sampled about once a second)",
                  "gauge", {(): float(max(space.total - space.free, 0))})  # fmt: skip
    yield Sampled("store_disk_free_bytes", "Bytes free for the broker on the store's file system", "gauge",
                  {(): float(space.free)})  # fmt: skip
    yield Sampled("store_commitlog_bytes", "Commit log bytes kept (end minus oldest offset)", "gauge",
                  {(): float(store.max_phy_offset - store.min_phy_offset)})  # fmt: skip
    cq_bytes = sum(q.max_offset - q.min_offset for q in store.queues.queues.values()) * ENTRY_BYTES
    yield Sampled("store_consume_queue_bytes", "Consume queue bytes kept (entries from each queue's oldest)",
                  "gauge", {(): float(cq_bytes)})  # fmt: skip


def register_broker_metrics(
    metrics: Metrics,
    service: BrokerService,
    polling: LongPolling,
    fast: FastSendPath | None,
    ha_master: HAMaster | None,
    ha_slave: HASlave | None,
) -> None:
    store = service.store
    config = service.config
    metrics.set_labels(cluster=config.broker_cluster_name, broker=config.broker_name, broker_id=str(config.broker_id))
    register_recovery_metrics(metrics, store.recovery_report)
    metrics.counter_fn("broker_messages_in_total", "Messages stored since start", lambda: service.sent_messages)
    metrics.counter_fn(
        "broker_messages_out_total", "Messages served to pulls since start", lambda: service.pulled_messages
    )
    metrics.counter_fn(
        "broker_fast_path_sends_total",
        "Sends served by the per-read fast path since start (the rest of broker_messages_in_total took the "
        "general path)",
        lambda: fast.served if fast is not None else 0,
    )
    metrics.gauge_fn("broker_commitlog_max_offset_bytes", "Commit log end offset", lambda: store.max_phy_offset)
    metrics.gauge_fn("broker_topics", "Topics on this broker", lambda: len(service.topics.topics))
    metrics.gauge_fn("broker_disk_full", "1 while a full disk refuses writes", lambda: float(store.space.full))
    metrics.counter_fn(
        "broker_disk_full_refusals_total", "Writes refused for a full disk", lambda: store.space.refusals
    )
    metrics.gauge_fn("broker_suspended_pulls", "Pull requests held by long polling", polling.suspended)
    metrics.histogram_of(
        "store_flush_latency_seconds",
        "Commit log flush rounds, from the round's start until its offset is on disk",
        store.flusher.flush_latency,
    )
    metrics.histogram_of("store_fsync_latency_seconds", "Commit log fdatasync calls", store.flusher.fsync_latency)
    lag = ConsumerLag(service)

    def families() -> Iterator[Sampled]:
        yield from _traffic(service)
        messages, seconds = lag.collect()
        yield Sampled("broker_consumer_lag_messages", "Messages not yet consumed, by group and topic", "gauge",
                      messages)  # fmt: skip
        yield Sampled("broker_consumer_lag_seconds",
                      "Seconds since the first unconsumed message was stored (the most behind queue), by group and "
                      "topic", "gauge", seconds)  # fmt: skip
        yield from _replication(ha_master, ha_slave)
        yield from _store(store)

    metrics.collector(families)
