"""The ``consume`` (and ``backlog``) verb: store a backlog, then consume it, with the broker's memory."""

from __future__ import annotations

import time
from typing import Any

from krocket.cli.bench import stats
from krocket.cli.bench.consume import ConsumeState, consume_all, queue_offsets
from krocket.cli.bench.options import BenchOptions
from krocket.cli.bench.produce import ProduceState, produce, produce_extra
from krocket.cli.bench.session import Session
from krocket.cli.bench.system import CpuMeter, rss_kib


async def fill(session: Session, count: int, deadline_s: float) -> tuple[ProduceState, float]:
    """Store ``count`` messages fast: batches of ``--batch`` with a few in flight."""
    opts = session.opts
    fill_opts = BenchOptions(**{**opts.__dict__, "mode": "batch", "window": max(opts.window or 0, 4)})
    state = ProduceState(limit=count, deadline=time.perf_counter() + deadline_s)
    session.progress.phase = "fill backlog"
    secs = await produce(session.producers, session.topic, fill_opts, state, session.progress)
    return state, secs


async def run_consume(session: Session, broker_pid: int | None) -> dict[str, Any]:
    """Store a backlog (``--backlog``, default ``--n``) with batch sends, then consume it from the oldest
    message, committing offsets. With a local broker, report its resident memory before and after."""
    opts, progress = session.opts, session.progress
    count = opts.backlog if opts.backlog is not None else opts.n
    c0 = session.consumers[0]
    rss_before = rss_kib(broker_pid) if broker_pid else None
    start = await queue_offsets(c0, session.queues)
    # a backlog fill is not a timed measurement: allow enough time for slow (sync flush) brokers
    state, fill_secs = await fill(session, count, max(opts.duration, count / 5_000))
    fill_summary = stats.produce_summary(state.latencies.samples, state.done, fill_secs)
    end = await queue_offsets(c0, session.queues)
    rss_filled = rss_kib(broker_pid) if broker_pid else None
    progress.log(f"backlog of {state.done} messages stored in {fill_secs:.1f}s; consuming it")
    progress.phase = "consume backlog"
    cstate = ConsumeState()
    meter = CpuMeter(broker_pid)
    csecs = await consume_all(session, start, end, cstate)
    cpu = {"consume": meter.per_msg_us(cstate.consumed)}
    rss_after = rss_kib(broker_pid) if broker_pid else None
    out: dict[str, Any] = {
        "produce": fill_summary,
        "consume": stats.consume_summary(cstate.consumed, csecs),
        "backlog": {
            "msgs": state.done,
            "rss_empty_kib": rss_before,
            "rss_backlog_kib": rss_filled,
            "rss_consumed_kib": rss_after,
            "rss_ratio": round(rss_filled / rss_before, 3) if rss_before and rss_filled else None,
        },
        "commits": cstate.commits,
        "cpu": cpu,
        **produce_extra(state),
    }
    if cstate.errors:
        out["pull_errors"] = cstate.errors
    return out
