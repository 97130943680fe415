"""The rows of ``krocket bench compare``: each krocket setting measured, its peer class and its target.

The send rows run twice: with the broker's compiled fast path (the default) and with its Python twin
(``KROCKET_NO_EXTENSIONS=1``, the ``-py`` rows); the one-at-a-time rows also with the idle spin on. The ``grpc-*``
rows (``krocket bench grpc``: RocketMQ 5.x clients over gRPC) have no peer and no target; the SDK rows need the
5.x SDK's environment (``.venv-rmq5`` or ``$KROCKET_RMQ5_VENV``) and show "not run" without it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    env: dict[str, str] = field(default_factory=dict)  # environment of the bench process (and its local cluster)
    check: str | None = None  # the target check (compare_verdicts.target_met) when not the key's own
    redis_ratio: float | None = None  # target: at least this times Redis's median rate in the same mode
    redis_p99: bool = False  # target: a p99 no worse than Redis's in the same mode
    broker_cpu_us: float | None = None  # target: broker CPU per message at most this


PYTHON_TWIN = {"KROCKET_NO_EXTENSIONS": "1"}
IDLE_SPIN_MICROS = 200


def _twin(row: Row, broker_cpu_us: float | None = None) -> Row:
    """The same row on the broker's Python fast path."""
    return replace(
        row,
        key=row.key + "-py",
        title=row.title + " (Python twin)",
        env={**row.env, **PYTHON_TWIN},
        check=row.check or row.key,
        broker_cpu_us=broker_cpu_us,
        target=row.target if broker_cpu_us is None else row.target.replace("5 us", f"{broker_cpu_us:g} us"),
    )


GRPC_TARGET = "- (5.x clients over gRPC: no target)"


def grpc_rows() -> list[Row]:
    """``krocket bench grpc``, one client setting per row (``--clients``)."""
    sdk = "5.x SDK (rocketmq-python-client 5.1.2) over gRPC"
    return [
        Row("grpc-sdk-seq", f"{sdk}: send one at a time", ["grpc", "--clients", "sdk-seq"], None, None, GRPC_TARGET),
        Row(
            "grpc-sdk-threads8",
            f"{sdk}: send from 8 threads",
            ["grpc", "--clients", "sdk-threads", "--threads", "8"],
            None,
            None,
            GRPC_TARGET,
        ),
        Row(
            "grpc-sdk-async",
            f"{sdk}: send_async, 64 in flight",
            ["grpc", "--clients", "sdk-async", "--window", "64"],
            None,
            None,
            GRPC_TARGET,
        ),
        Row(
            "grpc-stubs-window",
            "krocket's grpc.aio stubs: 256 SendMessage in flight (the broker's gRPC ceiling)",
            ["grpc", "--clients", "stubs-window", "--stub-window", "256"],
            None,
            None,
            GRPC_TARGET,
        ),
    ]


def default_rows(backlog: int, rate: float) -> list[Row]:
    seq = Row(
        "seq-async",
        "one-at-a-time acked send, async flush",
        ["produce", "--mode", "seq"],
        "async",
        "seq",
        ">= 1.0x Redis seq",
        redis_ratio=1.0,
    )
    spin = Row(
        "seq-async-spin",
        f"one-at-a-time acked send, async flush, idle spin {IDLE_SPIN_MICROS} us",
        ["produce", "--mode", "seq", "--idle-spin-micros", str(IDLE_SPIN_MICROS)],
        "async",
        "seq",
        ">= 1.2x Redis seq, p99 no worse",
        redis_ratio=1.2,
        redis_p99=True,
    )
    seq_sync = Row(
        "seq-sync",
        "one-at-a-time acked send, SYNC_FLUSH",
        ["produce", "--mode", "seq", "--flush", "sync"],
        "sync",
        "seq",
        ">= 3 k/s, p99 <= 1 ms",
    )
    window = Row(
        "window-async",
        "pipelined send (window 256, one connection), async flush",
        ["produce", "--mode", "window"],
        "async",
        "batch",
        ">= 1.2x Redis pipelined (>= 100 k/s), p99 <= 10 ms, broker CPU <= 5 us/send",
        redis_ratio=1.2,
        broker_cpu_us=5.0,
    )
    batch = Row(
        "batch-async",
        "batched send (100 x 4 in flight), async flush",
        ["produce", "--mode", "batch"],
        "async",
        "batch",
        ">= 137 k/s (before the fast path), p99 <= 10 ms",
    )
    return [
        seq,
        _twin(seq),
        spin,
        _twin(spin),
        seq_sync,
        _twin(seq_sync),
        window,
        _twin(window, broker_cpu_us=12.0),
        batch,
        _twin(batch),
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
            ">= 293 k/s (before the fast path)",
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
        *grpc_rows(),
    ]
