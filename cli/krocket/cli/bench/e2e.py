"""The ``e2e`` verb: produce at an offered rate while long-polling consumers read; end-to-end latency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from krocket.cli.bench import stats
from krocket.cli.bench.bodies import STAMP_BYTES, stamped
from krocket.cli.bench.consume import ConsumeState, assign, consume_queue, queue_offsets
from krocket.cli.bench.options import MAX_ERRORS
from krocket.cli.bench.produce import Pacer, ProduceState, produce, produce_extra
from krocket.cli.bench.session import Session
from krocket.cli.bench.system import CpuMeter
from krocket.common.message import MessageExt


async def run_e2e(session: Session, broker_pid: int | None = None) -> dict[str, Any]:
    """Produce at ``--rate`` messages/s (0 = as fast as the mode allows) while pull consumers with long
    polling read the topic; latency is consume time minus the send time stamped in each body."""
    opts, progress = session.opts, session.progress
    c0 = session.consumers[0]
    start = await queue_offsets(c0, session.queues)
    cstate = ConsumeState()
    now_ns = time.time_ns

    def on_messages(msgs: list[MessageExt]) -> None:
        t = now_ns()
        lat = cstate.latencies.samples
        for m in msgs:
            lat.append((t - int.from_bytes(m.body[:STAMP_BYTES], "big")) / 1e9)

    far = time.perf_counter() + opts.duration + opts.consume_limit_s
    consumers = [
        asyncio.ensure_future(
            consume_queue(c, q, start[q], None, opts, cstate, progress, far, block_ms=1000, on_messages=on_messages)
        )
        for c, q in assign(session.queues, session.consumers)
    ]
    state = ProduceState(limit=opts.n, deadline=time.perf_counter() + opts.duration)
    pacer = Pacer(opts.rate) if opts.rate > 0 else None
    progress.phase = f"e2e {opts.mode}" + (f" at {opts.rate:.0f}/s" if pacer else " unthrottled")
    t0 = time.perf_counter()
    meter = CpuMeter(broker_pid)
    try:
        secs = await produce(session.producers, session.topic, opts, state, progress, stamped(opts.size), pacer)
        wait_until = time.perf_counter() + opts.consume_limit_s
        while cstate.consumed < state.done and time.perf_counter() < wait_until and cstate.errors < MAX_ERRORS:
            await asyncio.sleep(0.005)
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    csecs = (cstate.last_at or time.perf_counter()) - t0
    out: dict[str, Any] = {
        "produce": stats.produce_summary(state.latencies.samples, state.done, secs),
        "consume": stats.consume_summary(cstate.consumed, csecs),
        "e2e": stats.latency_summary(cstate.latencies.samples),
        "rate_offered": opts.rate,
        "cpu": {"produce+consume": meter.per_msg_us(state.done)},
        "commits": cstate.commits,
        **produce_extra(state),
    }
    if cstate.errors:
        out["pull_errors"] = cstate.errors
    return out
