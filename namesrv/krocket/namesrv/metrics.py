"""Name server metrics on ``prometheus_client`` (``krocket.common.metrics``): request counters kept by the
processor, and the route registry's state read at scrape time. Series about one broker carry its ``cluster``,
``broker`` and ``broker_id``, as the broker's own series do."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from krocket.common.metrics import (
    CONTENT_TYPE,
    LabelKey,
    Metrics,
    Sampled,
    Values,
    request_code_name,
    request_label,
)
from krocket.namesrv.registry import RouteRegistry

__all__ = ["CONTENT_TYPE", "NAMESRV_METRICS", "NamesrvMetrics", "code_name"]

code_name = request_code_name  # kept for callers of the old name

# Every family the name server exports, without the krocket_ prefix, and its type (the dashboard's test reads it).
NAMESRV_METRICS: dict[str, str] = {
    "namesrv_brokers": "gauge",
    "namesrv_topics": "gauge",
    "namesrv_requests_total": "counter",
    "namesrv_brokers_expired_total": "counter",
    "namesrv_brokers_disconnected_total": "counter",
    "namesrv_cluster_brokers": "gauge",
    "namesrv_broker_registered": "gauge",
    "namesrv_broker_registration_age_seconds": "gauge",
    "namesrv_broker_topics": "gauge",
}


class NamesrvMetrics:
    def __init__(self) -> None:
        self.requests: Counter[int] = Counter()
        self.expired_total = 0
        self.connection_removed_total = 0
        self._registry: RouteRegistry | None = None
        self.metrics = Metrics()
        self.metrics.collector(self._families)

    def count_request(self, code: int) -> None:
        self.requests[code] += 1

    def _families(self) -> Iterator[Sampled]:
        yield Sampled(
            "namesrv_requests_total",
            "Remoting requests received, by request code and name",
            "counter",
            {request_label(code): float(n) for code, n in sorted(self.requests.items())},
        )
        yield Sampled("namesrv_brokers_expired_total", "Brokers dropped for not registering in time", "counter",
                      {(): float(self.expired_total)})  # fmt: skip
        yield Sampled("namesrv_brokers_disconnected_total", "Brokers dropped because their connection closed",
                      "counter", {(): float(self.connection_removed_total)})  # fmt: skip
        registry = self._registry
        if registry is None:
            return
        yield Sampled("namesrv_brokers", "Brokers currently registered", "gauge", {(): float(registry.broker_count)})
        yield Sampled("namesrv_topics", "Topics with a route", "gauge", {(): float(registry.topic_count)})
        now = registry.now()
        per_cluster: Values = {}
        registered: Values = {}
        age: Values = {}
        for info in registry.live_brokers():
            cluster: LabelKey = (("cluster", info.cluster),)
            per_cluster[cluster] = per_cluster.get(cluster, 0.0) + 1
            key = (*cluster, ("broker", info.broker_name), ("broker_id", str(info.broker_id)))
            registered[key] = 1.0
            age[key] = max(now - info.last_update, 0.0)
        yield Sampled("namesrv_cluster_brokers", "Live brokers by cluster", "gauge", per_cluster)
        yield Sampled("namesrv_broker_registered", "1 per live broker registration", "gauge", registered)
        yield Sampled("namesrv_broker_registration_age_seconds", "Seconds since a broker last registered", "gauge",
                      age)  # fmt: skip
        topics: Values = {}
        for topic in registry.topics():
            route = registry.route(topic)
            if route is None:
                continue
            for queue in route.queue_datas:
                key = (("broker", queue.broker_name),)
                topics[key] = topics.get(key, 0.0) + 1
        yield Sampled("namesrv_broker_topics", "Topics routed to each broker group", "gauge", topics)

    def render(self, registry: RouteRegistry) -> str:
        self._registry = registry
        return self.metrics.render()

    def names(self, registry: RouteRegistry) -> list[str]:
        self._registry = registry
        return self.metrics.names()
