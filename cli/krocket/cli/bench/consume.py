"""Consuming in the bench: pull loops over the bench topic's queues, committing offsets as they go."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from krocket.cli.bench import stats
from krocket.cli.bench.options import MAX_ERRORS, BenchOptions
from krocket.cli.bench.progress import Progress
from krocket.cli.bench.session import Session
from krocket.client import MessageQueue, PullConsumer, PullStatus
from krocket.common.message import MessageExt


@dataclass
class ConsumeState:
    consumed: int = 0
    errors: int = 0
    commits: int = 0
    first_error: str | None = None
    last_at: float = 0.0
    latencies: stats.LatencyRecorder = field(default_factory=stats.LatencyRecorder)


async def consume_queue(
    consumer: PullConsumer,
    queue: MessageQueue,
    offset: int,
    end: int | None,
    opts: BenchOptions,
    state: ConsumeState,
    progress: Progress,
    deadline: float,
    block_ms: int = 0,
    on_messages: Callable[[list[MessageExt]], None] | None = None,
) -> int:
    """Pull ``queue`` from ``offset`` up to ``end`` (forever when None, until cancelled or the deadline),
    storing the group's offset with ``update_offset`` every ``--commit-every`` messages and at the end.
    Returns the next offset."""
    since_commit = 0
    try:
        while (end is None or offset < end) and time.perf_counter() < deadline and state.errors < MAX_ERRORS:
            try:
                result = await consumer.pull(queue, "*", offset, opts.pull_batch, block_ms=block_ms)
            except Exception as exc:
                state.errors += 1
                if state.first_error is None:
                    state.first_error = repr(exc)
                    progress.log(f"pull from {queue} failed: {exc!r}")
                await asyncio.sleep(0.05)
                continue
            if result.status is PullStatus.FOUND and result.messages:
                got = len(result.messages)
                if on_messages is not None:
                    on_messages(result.messages)
                state.consumed += got
                state.last_at = time.perf_counter()
                progress.consumed += got
                since_commit += got
                offset = result.next_begin_offset
                if since_commit >= opts.commit_every:
                    await consumer.update_offset(queue, offset)
                    state.commits += 1
                    since_commit = 0
            elif result.status is PullStatus.OFFSET_ILLEGAL or result.next_begin_offset > offset:
                offset = result.next_begin_offset
            elif block_ms == 0:
                if end is None:
                    await asyncio.sleep(0.001)
                else:
                    break  # nothing more to read although ``end`` was not reached
    finally:
        if since_commit:
            with contextlib.suppress(Exception):
                await asyncio.shield(consumer.update_offset(queue, offset))
                state.commits += 1
    return offset


async def queue_offsets(consumer: PullConsumer, queues: list[MessageQueue]) -> dict[MessageQueue, int]:
    offsets = await asyncio.gather(*(consumer.max_offset(q) for q in queues))
    return dict(zip(queues, offsets, strict=True))


def assign(queues: list[MessageQueue], consumers: list[PullConsumer]) -> list[tuple[PullConsumer, MessageQueue]]:
    """Queues dealt round-robin to consumers."""
    return [(consumers[i % len(consumers)], q) for i, q in enumerate(queues)]


async def consume_all(
    session: Session, start: dict[MessageQueue, int], end: dict[MessageQueue, int], cstate: ConsumeState
) -> float:
    """Consume every queue from ``start`` to ``end`` (one pull in flight per queue); returns seconds."""
    opts = session.opts
    deadline = time.perf_counter() + opts.consume_limit_s
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            consume_queue(c, q, start[q], end[q], opts, cstate, session.progress, deadline)
            for c, q in assign(session.queues, session.consumers)
        )
    )
    return time.perf_counter() - t0
