"""Producing in the bench: the modes (seq, window, batch; ``--client sync``), their counters, offered load,
and the ``produce`` verb (produce, then consume and commit everything produced, like the peer kit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from krocket.cli.bench import stats
from krocket.cli.bench.bodies import payload
from krocket.cli.bench.consume import ConsumeState, consume_all, queue_offsets
from krocket.cli.bench.options import MAX_ERRORS, BenchOptions
from krocket.cli.bench.progress import Progress
from krocket.cli.bench.session import Session
from krocket.cli.bench.system import CpuMeter
from krocket.client import Message, Producer, SendResult, SendStatus

DRAIN_TIMEOUT_S = 30.0  # longest wait for in-flight sends after the produce deadline


class Pacer:
    """Offered load: message ``i`` may leave at ``t0 + i / rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.t0 = time.perf_counter()
        self.released = 0

    async def wait(self, count: int) -> None:
        due = self.t0 + self.released / self.rate
        self.released += count
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class ProduceState:
    limit: int
    deadline: float
    claimed: int = 0
    done: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: stats.LatencyRecorder = field(default_factory=stats.LatencyRecorder)
    first_error: str | None = None

    def running(self) -> bool:
        return self.claimed < self.limit and time.perf_counter() < self.deadline and self.errors < MAX_ERRORS

    def sent(self, k: int, secs: float, result: SendResult, progress: Progress) -> None:
        if result.status is not SendStatus.SEND_OK:
            self.statuses[result.status.value] = self.statuses.get(result.status.value, 0) + k
        self.latencies.add(secs, k)
        self.done += k
        progress.produced += k

    def failed(self, k: int, exc: Exception, progress: Progress) -> None:
        """Count a failed send and keep going (bounded by MAX_ERRORS); its messages are claimed again."""
        self.errors += 1
        self.claimed -= k
        if self.first_error is None:
            self.first_error = repr(exc)
            progress.log(f"send failed: {exc!r}")


async def produce(
    producers: list[Producer],
    topic: str,
    opts: BenchOptions,
    state: ProduceState,
    progress: Progress,
    make_body: Callable[[], bytes] | None = None,
    pacer: Pacer | None = None,
) -> float:
    """Send until ``state.limit`` messages or ``state.deadline``; returns the elapsed seconds."""
    if opts.mode == "window" and pacer is None:
        return await produce_window(producers, topic, opts, state, progress, make_body)
    fixed = Message(topic, payload(opts.size))
    batch_mode = opts.mode == "batch"
    per_request = opts.msgs_per_request

    async def worker(producer: Producer) -> None:
        while state.running():
            k = min(per_request, state.limit - state.claimed)
            state.claimed += k
            if pacer is not None:
                await pacer.wait(k)
            msgs = [fixed] * k if make_body is None else [Message(topic, make_body()) for _ in range(k)]
            t = time.perf_counter()
            try:
                if batch_mode:
                    result = await producer.send_batch(msgs)
                else:
                    result = await producer.send(msgs[0])
            except Exception as exc:
                state.failed(k, exc, progress)
                continue
            state.sent(k, time.perf_counter() - t, result, progress)

    t0 = time.perf_counter()
    tasks = [worker(p) for p in producers for _ in range(opts.inflight)]
    await asyncio.wait_for(asyncio.gather(*tasks), max(state.deadline - t0, 0) + DRAIN_TIMEOUT_S)
    return time.perf_counter() - t0


async def produce_window(
    producers: list[Producer],
    topic: str,
    opts: BenchOptions,
    state: ProduceState,
    progress: Progress,
    make_body: Callable[[], bytes] | None = None,
) -> float:
    """The window mode: ``opts.inflight`` sends in flight per producer, kept there from this one loop by the send
    callbacks (``Producer.send_async``: no task or coroutine per message); each message's latency is recorded
    from the moment it was handed to the producer. Returns the elapsed seconds."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    fixed = Message(topic, payload(opts.size))
    clock = time.perf_counter
    in_flight = 0

    def launch(producer: Producer) -> None:
        nonlocal in_flight
        state.claimed += 1
        in_flight += 1
        msg = fixed if make_body is None else Message(topic, make_body())
        started = clock()

        def on_done(result: SendResult | None, error: BaseException | None) -> None:
            nonlocal in_flight
            in_flight -= 1
            if result is not None:
                state.sent(1, clock() - started, result, progress)
            else:
                state.failed(1, error if isinstance(error, Exception) else RuntimeError(repr(error)), progress)
            if state.running():
                launch(producer)
            elif in_flight == 0 and not finished.done():
                finished.set_result(None)

        producer.send_async(msg, on_done)

    t0 = clock()
    for producer in producers:
        for _ in range(opts.inflight):
            if state.running():
                launch(producer)
    if in_flight == 0:
        finished.set_result(None)
    await asyncio.wait_for(finished, max(state.deadline - t0, 0) + DRAIN_TIMEOUT_S)
    return clock() - t0


def produce_blocking(
    producer: Producer, topic: str, opts: BenchOptions, state: ProduceState, progress: Progress
) -> float:
    """``--client sync``: one-at-a-time sends on this (worker) thread over blocking sockets, as
    ``SyncProducer.send`` does once the route is known; returns the elapsed seconds."""
    pool = producer.blocking_pool()
    msg = Message(topic, payload(opts.size))
    t0 = time.perf_counter()
    try:
        while state.running():
            state.claimed += 1
            t = time.perf_counter()
            try:
                result = producer.send_blocking(msg, pool.request)
                if result is None:
                    raise RuntimeError(f"the route of {topic} is not cached after the warm-up send")
            except Exception as exc:
                state.failed(1, exc, progress)
                continue
            state.sent(1, time.perf_counter() - t, result, progress)
    finally:
        pool.close()
    return time.perf_counter() - t0


def produce_extra(state: ProduceState) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if state.errors:
        extra["send_errors"] = state.errors
        extra["first_error"] = state.first_error
    if state.statuses:
        extra["send_statuses"] = state.statuses
    return extra


async def run_produce(session: Session, broker_pid: int | None = None) -> dict[str, Any]:
    """Produce phase (seq/window/batch), then consume and commit everything produced (like the peer kit)."""
    opts, progress = session.opts, session.progress
    c0 = session.consumers[0]
    start = await queue_offsets(c0, session.queues)
    state = ProduceState(limit=opts.n, deadline=time.perf_counter() + opts.duration)
    progress.phase = f"produce {opts.mode}"
    meter = CpuMeter(broker_pid)
    if opts.client == "sync":
        secs = await asyncio.to_thread(produce_blocking, session.producers[0], session.topic, opts, state, progress)
    else:
        secs = await produce(session.producers, session.topic, opts, state, progress)
    cpu = {"produce": meter.per_msg_us(state.done)}
    prod = stats.produce_summary(state.latencies.samples, state.done, secs)
    end = await queue_offsets(c0, session.queues)
    progress.phase = "consume"
    cstate = ConsumeState()
    meter = CpuMeter(broker_pid)
    csecs = await consume_all(session, start, end, cstate)
    cpu["consume"] = meter.per_msg_us(cstate.consumed)
    extra = produce_extra(state)
    extra["commits"] = cstate.commits
    extra["cpu"] = cpu
    return {"produce": prod, "consume": stats.consume_summary(cstate.consumed, csecs), **extra}
