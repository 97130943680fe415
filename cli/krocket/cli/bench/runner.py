"""One measured ``krocket bench`` run: its own topic and clients, the verb's workload, one JSON result.

Every loop is bounded by a message count and a deadline. One run creates its own topic, measures, and deletes
the topic again. The workloads: ``produce.run_produce``, ``backlog.run_consume`` and ``e2e.run_e2e``.
"""

from __future__ import annotations

from typing import Any

from krocket.cli.bench import stats
from krocket.cli.bench.backlog import run_consume
from krocket.cli.bench.e2e import run_e2e
from krocket.cli.bench.options import BenchOptions
from krocket.cli.bench.produce import run_produce
from krocket.cli.bench.progress import Progress
from krocket.cli.bench.session import Session


async def run_once(
    namesrv: str, opts: BenchOptions, progress: Progress, broker_pid: int | None, index: int = 0
) -> dict[str, Any]:
    """One measured run of ``opts.verb``; returns its JSON object."""
    tag = f"{opts.verb}-{opts.mode}"
    async with Session(namesrv, opts, progress, tag) as session:
        progress.start()
        try:
            if opts.verb == "produce":
                body = await run_produce(session, broker_pid)
            elif opts.verb == "consume":
                body = await run_consume(session, broker_pid)
            elif opts.verb == "e2e":
                body = await run_e2e(session, broker_pid)
            else:
                raise ValueError(f"unknown verb {opts.verb!r}")
        finally:
            await progress.stop()
    produce_part = body.pop("produce")
    consume_part = body.pop("consume")
    return stats.result_line(
        opts.mode if opts.verb != "consume" else "backlog",
        produce_part,
        consume_part,
        msg_bytes=opts.size,
        window=opts.window_msgs if opts.verb != "consume" else 0,
        verb=opts.verb,
        loop=opts.loop,
        client=opts.client,
        flush=opts.flush,
        replication=opts.replication,
        pinned=opts.pin,
        producers=opts.producers,
        consumers=opts.consumers,
        queues=len(session.queues),
        batch=opts.msgs_per_request,
        inflight=opts.inflight,
        pull_batch=opts.pull_batch,
        commit_every=opts.commit_every,
        idle_spin_micros=opts.idle_spin_micros,
        run=index,
        **body,
    )
