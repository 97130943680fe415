"""The rows of ``krocket bench compare``: each krocket setting measured, its peer class and its target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    key: str
    title: str
    args: list[str]
    durability: str | None  # "async" | "sync" | None (no peer figure to compare with)
    peer_mode: str | None  # peer kit mode to compare with ("seq" | "batch"); "consume" = consume rates
    target: str
    metric: str = "produce"  # which krocket figure is the row's rate: "produce" | "consume"
    extra_runs: list[dict[str, Any]] = field(default_factory=list)


def default_rows(backlog: int, rate: float) -> list[Row]:
    return [
        Row(
            "seq-async",
            "one-at-a-time acked send, async flush",
            ["produce", "--mode", "seq"],
            "async",
            "seq",
            ">= 8.3 k/s, p99 <= 400 us",
        ),
        Row(
            "seq-sync",
            "one-at-a-time acked send, SYNC_FLUSH",
            ["produce", "--mode", "seq", "--flush", "sync"],
            "sync",
            "seq",
            ">= 3 k/s, p99 <= 1 ms",
        ),
        Row(
            "window-async",
            "pipelined send (window 256), async flush",
            ["produce", "--mode", "window"],
            "async",
            "batch",
            ">= 90 k/s, p99 <= 10 ms",
        ),
        Row(
            "batch-async",
            "batched send (100 x 4 in flight), async flush",
            ["produce", "--mode", "batch"],
            "async",
            "batch",
            ">= 90 k/s, p99 <= 10 ms",
        ),
        Row(
            "batch-sync",
            "batched send (100 x 4 in flight), SYNC_FLUSH",
            ["produce", "--mode", "batch", "--flush", "sync"],
            "sync",
            "batch",
            ">= 50 k/s",
        ),
        Row(
            "batch-async-master",
            "batched send, async flush, ASYNC_MASTER with 1 slave",
            ["produce", "--mode", "batch", "--replication", "async", "--slaves", "1"],
            None,
            None,
            "- (what the SYNC_MASTER row is held against)",
        ),
        Row(
            "batch-sync-master",
            "batched send, async flush, SYNC_MASTER with 1 slave",
            ["produce", "--mode", "batch", "--replication", "sync", "--slaves", "1"],
            None,
            None,
            ">= 0.7 of the ASYNC_MASTER (1 slave) batch rate",
        ),
        Row(
            "consume",
            "consume a backlog (pull, offsets committed)",
            ["consume"],
            "async",
            "consume",
            ">= 150 k/s",
            metric="consume",
        ),
        Row(
            "produce+consume",
            "produce and consume at once (batch, unthrottled)",
            ["e2e", "--mode", "batch", "--rate", "0"],
            None,
            None,
            ">= 60 k in + 60 k out",
        ),
        Row(
            "e2e",
            f"end-to-end latency at {rate / 1000:g} k/s offered (batches of 10)",
            ["e2e", "--mode", "batch", "--batch", "10", "--rate", f"{rate:g}"],
            None,
            None,
            "p50 <= 1 ms, p99 <= 5 ms",
        ),
        Row(
            "backlog",
            f"broker RSS with a {backlog:,} message backlog",
            ["backlog", "--backlog", str(backlog)],
            None,
            None,
            "RSS within 10 % of empty",
        ),
    ]
