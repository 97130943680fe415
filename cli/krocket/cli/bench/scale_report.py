"""The figures of ``krocket bench scale``, computed from its raw samples (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from krocket.cli.bench.stats import percentile, to_us

DECILES = 10


def by_decile(latencies_s: Sequence[float]) -> list[dict[str, int | None]]:
    """p50 and p99 (us) of each tenth of the samples, in the order they were taken: how a create's cost moves
    as the table grows."""
    n = len(latencies_s)
    out = []
    for k in range(DECILES):
        part = sorted(latencies_s[k * n // DECILES : (k + 1) * n // DECILES])
        out.append(
            {
                "p50_us": to_us(percentile(part, 0.5, presorted=True)),
                "p99_us": to_us(percentile(part, 0.99, presorted=True)),
            }
        )
    return out


def latency(latencies_s: Sequence[float]) -> dict[str, int | None]:
    ordered = sorted(latencies_s)
    return {
        "n": len(ordered),
        "p50_us": to_us(percentile(ordered, 0.5, presorted=True)),
        "p99_us": to_us(percentile(ordered, 0.99, presorted=True)),
        "max_us": to_us(ordered[-1] if ordered else None),
    }


def growth_ratio(deciles: list[dict[str, int | None]]) -> float | None:
    """The last decile's p50 over the first's (the issue's goal: within 1.5x)."""
    first, last = deciles[0]["p50_us"], deciles[-1]["p50_us"]
    return round(last / first, 2) if first and last else None


def per_round(before: dict[str, int], after: dict[str, int], namesrvs: int) -> dict[str, Any]:
    """Periodic registration of an unchanged broker between two reads of its registration stats: rounds, what
    each round sent to one name server, and whether anything but version checks went out."""
    checks = after["versionChecks"] - before["versionChecks"]
    sent = after["sentBytes"] - before["sentBytes"]
    return {
        "rounds": checks // max(1, namesrvs),
        "bytes_per_namesrv_per_round": round(sent / checks) if checks else None,
        "full_registrations": after["fullRegistrations"] - before["fullRegistrations"],
        "deltas": after["deltas"] - before["deltas"],
    }


def kib_per_topic(empty_kib: int | None, full_kib: int | None, topics: int) -> float | None:
    if empty_kib is None or full_kib is None or topics <= 0:
        return None
    return round((full_kib - empty_kib) / topics, 2)


def cpu_per_30s(cpu_s: float | None, window_s: float) -> float | None:
    """CPU seconds over ``window_s`` scaled to one 30 s registration period."""
    if cpu_s is None or window_s <= 0:
        return None
    return round(cpu_s * 30.0 / window_s, 3)
