"""Name server metrics, rendered by hand in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections import Counter

from krocket.common.codes import RequestCode
from krocket.namesrv.registry import RouteRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def code_name(code: int) -> str:
    try:
        return RequestCode(code).name
    except ValueError:
        return "UNKNOWN"


class NamesrvMetrics:
    def __init__(self) -> None:
        self.requests: Counter[int] = Counter()
        self.expired_total = 0
        self.connection_removed_total = 0

    def count_request(self, code: int) -> None:
        self.requests[code] += 1

    def render(self, registry: RouteRegistry) -> str:
        lines = [
            "# HELP krocket_namesrv_brokers Brokers currently registered.",
            "# TYPE krocket_namesrv_brokers gauge",
            f"krocket_namesrv_brokers {registry.broker_count}",
            "# HELP krocket_namesrv_topics Topics with a route.",
            "# TYPE krocket_namesrv_topics gauge",
            f"krocket_namesrv_topics {registry.topic_count}",
            "# HELP krocket_namesrv_requests_total Remoting requests received, by request code.",
            "# TYPE krocket_namesrv_requests_total counter",
        ]
        for code in sorted(self.requests):
            lines.append(
                f'krocket_namesrv_requests_total{{code="{code}",name="{code_name(code)}"}} {self.requests[code]}'
            )
        lines += [
            "# HELP krocket_namesrv_brokers_expired_total Brokers dropped for not registering in time.",
            "# TYPE krocket_namesrv_brokers_expired_total counter",
            f"krocket_namesrv_brokers_expired_total {self.expired_total}",
            "# HELP krocket_namesrv_brokers_disconnected_total Brokers dropped because their connection closed.",
            "# TYPE krocket_namesrv_brokers_disconnected_total counter",
            f"krocket_namesrv_brokers_disconnected_total {self.connection_removed_total}",
        ]
        return "\n".join(lines) + "\n"
