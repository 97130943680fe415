"""The maths of ``krocket bench compare``: medians over rounds, the best same-class peer, verdicts, targets."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from krocket.cli.bench.compare_rows import Row
from krocket.cli.bench.stats import median_of

AHEAD_FACTOR = 1.2
PEER_CLASS = {"redis": "async", "nats": "async", "rabbit": "sync", "rabbit-quorum": "sync", "rabbit-aiormq": "sync"}


def peer_medians(peer_runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(peer, mode, loop) -> medians of produce rate/p50/p99 and consume rate, with the run count."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in peer_runs:
        groups[r["peer"], r["mode"], r.get("loop", "?")].append(r)
    return {key: medians(rs) for key, rs in groups.items()}


def medians(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(rs),
        "produce": median_of(r["produce"]["msgs_per_s"] for r in rs),
        "p50": median_of(r["produce"].get("p50_us") for r in rs),
        "p99": median_of(r["produce"].get("p99_us") for r in rs),
        "consume": median_of(r["consume"]["msgs_per_s"] for r in rs),
        "e2e_p50": median_of(r.get("e2e", {}).get("p50_us") for r in rs),
        "e2e_p99": median_of(r.get("e2e", {}).get("p99_us") for r in rs),
        "e2e_p999": median_of(r.get("e2e", {}).get("p999_us") for r in rs),
        "rss_empty": median_of(r.get("backlog", {}).get("rss_empty_kib") for r in rs),
        "rss_backlog": median_of(r.get("backlog", {}).get("rss_backlog_kib") for r in rs),
        "backlog_msgs": median_of(r.get("backlog", {}).get("msgs") for r in rs),
        "broker_cpu": median_of(((r.get("cpu") or {}).get("produce") or {}).get("broker_us_per_msg") for r in rs),
    }


def best_peer(
    pmed: dict[tuple[str, str, str], dict[str, Any]], durability: str, mode: str
) -> tuple[tuple[str, str, str], dict[str, Any]] | None:
    """The same-class peer setting with the highest median rate (consume: any mode's consume rate)."""
    best = None
    for key, m in pmed.items():
        if PEER_CLASS.get(key[0]) != durability:
            continue
        if mode != "consume" and key[1] != mode:
            continue
        value = m["consume"] if mode == "consume" else m["produce"]
        if value is not None and (best is None or value > best[2]):
            best = (key, m, value)
    return (best[0], best[1]) if best else None


def verdict(
    k_rate: float | None, k_p99: float | None, p_rate: float | None, p_p99: float | None, rate_only: bool = False
) -> str:
    """ahead: >= 1.2x the peer's rate with a p99 no worse; else parity (0.8-1.2x) or behind (< 0.8x)."""
    if not k_rate or not p_rate:
        return "-"
    ratio = k_rate / p_rate
    p99_ok = rate_only or k_p99 is None or p_p99 is None or k_p99 <= p_p99
    if ratio >= AHEAD_FACTOR and p99_ok:
        word = "**ahead**"
    elif ratio >= AHEAD_FACTOR:
        word = "faster, p99 worse: not ahead"
    elif ratio >= 0.8:
        word = "parity"
    else:
        word = "behind"
    return f"{word} ({ratio:.2f}x)"


def redis_median(pmed: dict[tuple[str, str, str], dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """Redis's medians in ``mode`` on its better event loop (the issue's targets name Redis)."""
    best = None
    for (peer, peer_mode, _loop), m in pmed.items():
        better = best is None or (m["produce"] or 0) > best["produce"]
        if peer == "redis" and peer_mode == mode and m["produce"] is not None and better:
            best = m
    return best


def target_met(
    row: Row,
    m: dict[str, Any],
    async_batch_rate: float | None = None,
    pmed: dict[tuple[str, str, str], dict[str, Any]] | None = None,
) -> str:
    """The performance target (floor) of the row: met / missed (None figures count as missed), "-" for a row
    without one. ``async_batch_rate``: the ASYNC_MASTER batch median, which the SYNC_MASTER row is held against
    (with a slave like it when that row ran, else without). ``pmed``: the peers' medians, for the rows whose
    target is a multiple of Redis's rate."""
    if row.target.startswith("-"):
        return "-"

    def ge(v: float | None, floor: float) -> bool:
        return v is not None and v >= floor

    def le(v: float | None, ceil: float) -> bool:
        return v is not None and v <= ceil

    ok = True
    if row.redis_ratio is not None:
        redis = redis_median(pmed or {}, row.peer_mode or "seq")
        ok = redis is not None and ge(m["produce"], row.redis_ratio * redis["produce"])
        if row.redis_p99:
            ok = ok and redis is not None and le(m["p99"], redis["p99"] if redis["p99"] is not None else -1)
    if row.broker_cpu_us is not None:
        ok = ok and le(m["broker_cpu"], row.broker_cpu_us)
    checks = {
        "seq-async": True,
        "seq-async-spin": True,
        "seq-sync": ge(m["produce"], 3000) and le(m["p99"], 1000),
        "window-async": ge(m["produce"], 100_000) and le(m["p99"], 10_000),
        "batch-async": ge(m["produce"], 137_000) and le(m["p99"], 10_000),
        "batch-sync": ge(m["produce"], 50_000),
        "batch-sync-master": async_batch_rate is not None and ge(m["produce"], 0.7 * async_batch_rate),
        "consume": ge(m["consume"], 293_000),
        "produce+consume": ge(m["produce"], 60_000) and ge(m["consume"], 60_000),
        "e2e": le(m["e2e_p50"], 1000) and le(m["e2e_p99"], 5000),
        "backlog": m["rss_empty"] is not None
        and m["rss_backlog"] is not None
        and m["rss_backlog"] <= 1.1 * m["rss_empty"],
    }
    return "met" if ok and checks.get(row.check or row.key) else "**missed**"
