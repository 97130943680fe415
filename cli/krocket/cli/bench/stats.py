"""Statistics of a benchmark run, computed the way the peer kit (Redis Streams, NATS JetStream and RabbitMQ
benchmarked by one harness) does.

A percentile is the sample at index ``int(n * p)`` of the sorted samples (clamped to the last one), so krocket's
p50/p99 figures are directly comparable with the peers'. Rates are whole messages per second.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

# The keys of one run's JSON line, as the peer kit prints them (plus krocket's own extras).
PRODUCE_KEYS = ("msgs", "msgs_per_s", "p50_us", "p99_us", "secs")
CONSUME_KEYS = ("msgs", "msgs_per_s", "secs")
LATENCY_KEYS = ("msgs", "p50_us", "p99_us", "p999_us", "max_us")


def percentile(samples: Sequence[float], p: float, *, presorted: bool = False) -> float | None:
    """The ``p`` quantile (0 <= p <= 1) of ``samples``: the element at ``int(len * p)`` of the sorted samples."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"percentile must be within [0, 1], got {p}")
    if not samples:
        return None
    s = samples if presorted else sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def to_us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e6)


def rate(msgs: int, secs: float) -> int:
    """Whole messages per second; 0 when no time passed."""
    return round(msgs / secs) if secs > 0 else 0


def produce_summary(latencies_s: Sequence[float], msgs: int, secs: float) -> dict[str, Any]:
    """The peer kit's ``produce`` object: latencies are per message, in seconds."""
    s = sorted(latencies_s)
    return {
        "msgs": msgs,
        "msgs_per_s": rate(msgs, secs),
        "p50_us": to_us(percentile(s, 0.5, presorted=True)),
        "p99_us": to_us(percentile(s, 0.99, presorted=True)),
        "secs": round(secs, 2),
    }


def consume_summary(msgs: int, secs: float) -> dict[str, Any]:
    return {"msgs": msgs, "msgs_per_s": rate(msgs, secs), "secs": round(secs, 2)}


def latency_summary(latencies_s: Sequence[float]) -> dict[str, Any]:
    """End-to-end (produce to consume) latency: p50, p99, p999 and max, in microseconds."""
    s = sorted(latencies_s)
    return {
        "msgs": len(s),
        "p50_us": to_us(percentile(s, 0.5, presorted=True)),
        "p99_us": to_us(percentile(s, 0.99, presorted=True)),
        "p999_us": to_us(percentile(s, 0.999, presorted=True)),
        "max_us": to_us(s[-1]) if s else None,
    }


def result_line(
    mode: str,
    produce: dict[str, Any] | None,
    consume: dict[str, Any] | None,
    *,
    msg_bytes: int,
    window: int,
    **extra: Any,
) -> dict[str, Any]:
    """One run's JSON object: the peer kit's shape with ``"system": "krocket"`` in place of ``"peer"``."""
    line: dict[str, Any] = {
        "system": "krocket",
        "mode": mode,
        "produce": produce if produce is not None else produce_summary([], 0, 0.0),
        "consume": consume if consume is not None else consume_summary(0, 0.0),
        "msg_bytes": msg_bytes,
        "window": window,
    }
    line.update(extra)
    return line


def median_of(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None when there are none)."""
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


class LatencyRecorder:
    """Collects per-message latencies; keeps every sample (a run is bounded by --n)."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: list[float] = []

    def add(self, seconds: float, count: int = 1) -> None:
        if count == 1:
            self.samples.append(seconds)
        else:
            self.samples.extend([seconds] * count)

    def __len__(self) -> int:
        return len(self.samples)
