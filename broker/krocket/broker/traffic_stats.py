"""Per-topic and per-group traffic of one broker: totals since start and rates over the last minute.

One place counts what goes in and out, and everything that reports traffic reads it: ``/metrics`` (counters by
topic and group), the admin requests behind ``krocket stats``, ``broker status``, ``topic status`` and the TPS
columns of ``cluster list``, and the name server's console. Recording is a dict lookup and two additions per call
(the send fast path records once per topic per read, not per message); rates come from one-second buckets in a
60-slot ring per key, so nothing is scanned on the hot path and nothing grows with time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

WINDOW_SECONDS = 60


@dataclass
class Traffic:
    """Totals since the broker started, and a ring of per-second message and byte counts."""

    messages: int = 0
    bytes: int = 0
    ring_messages: list[int] = field(default_factory=lambda: [0] * WINDOW_SECONDS)
    ring_bytes: list[int] = field(default_factory=lambda: [0] * WINDOW_SECONDS)
    ring_second: list[int] = field(default_factory=lambda: [-1] * WINDOW_SECONDS)

    def add(self, second: int, messages: int, nbytes: int) -> None:
        self.messages += messages
        self.bytes += nbytes
        slot = second % WINDOW_SECONDS
        if self.ring_second[slot] != second:
            self.ring_second[slot] = second
            self.ring_messages[slot] = 0
            self.ring_bytes[slot] = 0
        self.ring_messages[slot] += messages
        self.ring_bytes[slot] += nbytes

    def rate(self, now_second: int, seconds: int = WINDOW_SECONDS) -> tuple[float, float]:
        """Messages and bytes per second over the last ``seconds`` whole seconds (the current one excluded)."""
        seconds = max(1, min(seconds, WINDOW_SECONDS - 1))
        first = now_second - seconds
        msgs = byts = 0
        for slot in range(WINDOW_SECONDS):
            if first <= self.ring_second[slot] < now_second:
                msgs += self.ring_messages[slot]
                byts += self.ring_bytes[slot]
        return msgs / seconds, byts / seconds


class TrafficStats:
    """``put`` is keyed by topic; ``get`` by (group, topic): what a consumer group pulled of a topic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.put: dict[str, Traffic] = {}
        self.get: dict[tuple[str, str], Traffic] = {}

    def record_put(self, topic: str, messages: int, nbytes: int) -> None:
        traffic = self.put.get(topic)
        if traffic is None:
            traffic = self.put[topic] = Traffic()
        traffic.add(int(self._clock()), messages, nbytes)

    def record_get(self, group: str, topic: str, messages: int, nbytes: int) -> None:
        key = (group, topic)
        traffic = self.get.get(key)
        if traffic is None:
            traffic = self.get[key] = Traffic()
        traffic.add(int(self._clock()), messages, nbytes)

    def forget_topic(self, topic: str) -> None:
        """A deleted topic stops being reported."""
        self.put.pop(topic, None)
        for key in [k for k in self.get if k[1] == topic]:
            del self.get[key]

    def forget_group(self, group: str) -> None:
        for key in [k for k in self.get if k[0] == group]:
            del self.get[key]

    def now_second(self) -> int:
        return int(self._clock())

    def put_rate(self, topic: str | None = None, seconds: int = WINDOW_SECONDS) -> tuple[float, float]:
        """Messages and bytes per second put into ``topic`` (every topic when None)."""
        now = self.now_second()
        items = [self.put[topic]] if topic is not None and topic in self.put else []
        if topic is None:
            items = list(self.put.values())
        return _sum_rates(t.rate(now, seconds) for t in items)

    def get_rate(
        self, group: str | None = None, topic: str | None = None, seconds: int = WINDOW_SECONDS
    ) -> tuple[float, float]:
        """Messages and bytes per second pulled, filtered by group and/or topic (None: any)."""
        now = self.now_second()
        return _sum_rates(
            t.rate(now, seconds)
            for (g, tp), t in self.get.items()
            if (group is None or g == group) and (topic is None or tp == topic)
        )


def _sum_rates(rates: Iterable[tuple[float, float]]) -> tuple[float, float]:
    msgs = byts = 0.0
    for m, b in rates:
        msgs += m
        byts += b
    return msgs, byts
