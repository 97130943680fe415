"""The workloads of ``krocket bench``: produce, consume (from a backlog) and end-to-end, on asyncio.

Every loop is bounded by a message count and a deadline. One run creates its own topic, measures, and deletes
the topic again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from krocket.cli.bench import stats
from krocket.cli.bench.system import CpuMeter, rss_kib
from krocket.client import Admin, Message, MessageQueue, Producer, PullConsumer, PullStatus, SendResult, SendStatus
from krocket.common.message import MessageExt
from krocket.common.remoting.blocking import BlockingConnectionPool

MODES = ("seq", "window", "batch")
VERBS = ("produce", "consume", "e2e")
DEFAULT_WINDOW = {"seq": 1, "window": 256, "batch": 4}
STAMP_BYTES = 8  # e2e: the first bytes of a body carry time.time_ns() at send
ROUTE_WAIT_S = 30.0
DRAIN_TIMEOUT_S = 30.0  # longest wait for in-flight sends after the produce deadline
MAX_ERRORS = 100  # a run gives up after this many failed sends or pulls


@dataclass
class BenchOptions:
    verb: str = "produce"
    mode: str = "seq"
    size: int = 1024
    n: int = 200_000
    duration: float = 45.0
    window: int | None = None
    batch: int = 100
    flush: str = "async"
    replication: str = "async"
    producers: int = 1
    consumers: int = 1
    rate: float = 20_000.0
    pin: bool = False
    queues: int = 4
    pull_batch: int = 1024
    commit_every: int = 10_000
    consume_budget: float | None = None
    backlog: int | None = None
    loop: str = "asyncio"
    client: str = "async"  # "sync": one-at-a-time sends on a thread over blocking sockets (SyncProducer's path)

    @property
    def inflight(self) -> int:
        """Requests in flight per producer: 1 for seq, ``--window`` otherwise."""
        if self.mode == "seq":
            return 1
        return max(1, self.window or DEFAULT_WINDOW[self.mode])

    @property
    def msgs_per_request(self) -> int:
        return self.batch if self.mode == "batch" else 1

    @property
    def window_msgs(self) -> int:
        """Messages in flight at most (the peer kit's ``window``)."""
        return self.inflight * self.msgs_per_request * max(1, self.producers)

    @property
    def consume_limit_s(self) -> float:
        return self.consume_budget if self.consume_budget is not None else self.duration * 2 + 20


class Progress:
    """Counters of a run and a periodic one-line display of them on stderr."""

    def __init__(self, enabled: bool, interval: float = 1.0) -> None:
        self.enabled = enabled
        self.interval = interval
        self.phase = ""
        self.produced = 0
        self.consumed = 0
        self._task: asyncio.Task[None] | None = None
        self._tty = enabled and sys.stderr.isatty()

    def log(self, message: str) -> None:
        if self.enabled:
            self._clear()
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self._tty:
            print("\r\033[K", end="", file=sys.stderr)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._show())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._clear()

    async def _show(self) -> None:
        last = (time.perf_counter(), self.produced, self.consumed)
        while True:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            dt = now - last[0]
            p_rate = (self.produced - last[1]) / dt if dt > 0 else 0
            c_rate = (self.consumed - last[2]) / dt if dt > 0 else 0
            last = (now, self.produced, self.consumed)
            text = (
                f"[bench] {self.phase}: produced {self.produced} ({p_rate / 1000:.1f} k/s), "
                f"consumed {self.consumed} ({c_rate / 1000:.1f} k/s)"
            )
            if self._tty:
                print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)
            else:
                print(text, file=sys.stderr, flush=True)


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


def payload(size: int) -> bytes:
    """A fixed incompressible-looking body of ``size`` bytes (repeatable between runs)."""
    block = bytes((i * 131 + 7) & 0xFF for i in range(256))
    return (block * (size // 256 + 1))[:size]


def stamped(size: int) -> Callable[[], bytes]:
    """Bodies that start with the send time (``time.time_ns()``) for end-to-end latency."""
    rest = payload(max(size - STAMP_BYTES, 0))

    def make() -> bytes:
        return time.time_ns().to_bytes(STAMP_BYTES, "big") + rest

    return make


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


def produce_blocking(
    producer: Producer, topic: str, opts: BenchOptions, state: ProduceState, progress: Progress
) -> float:
    """``--client sync``: one-at-a-time sends on this (worker) thread over blocking sockets, as
    ``SyncProducer.send`` does once the route is known; returns the elapsed seconds."""
    pool = BlockingConnectionPool(connect_timeout=producer.send_timeout)
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


class Session:
    """Clients of one run: a topic made for it, producers and pull consumers."""

    def __init__(self, namesrv: str, opts: BenchOptions, progress: Progress, tag: str) -> None:
        self.namesrv = namesrv
        self.opts = opts
        self.progress = progress
        self.topic = f"bench-{tag}-{os.getpid()}-{time.time_ns() // 1_000_000}"
        group = self.topic.replace("bench-", "bench_")
        self.admin = Admin(namesrv)
        self.producers = [
            Producer(f"{group}-p", namesrv, instance_name=f"bench-p{i}") for i in range(max(1, opts.producers))
        ]
        self.consumers = [
            PullConsumer(f"{group}-c", namesrv, instance_name=f"bench-c{i}") for i in range(max(1, opts.consumers))
        ]
        self.queues: list[MessageQueue] = []

    @property
    def clients(self) -> list[Producer | PullConsumer]:
        return [*self.producers, *self.consumers]

    async def __aenter__(self) -> Session:
        await self.admin.start()
        try:
            await self.admin.create_topic(self.topic, self.opts.queues, self.opts.queues)
            for client in self.clients:
                await client.start()
            self.queues = await self._wait_route()
            # warm up: routes and connections of every producer and consumer
            for p in self.producers:
                await p.send(Message(self.topic, payload(self.opts.size)))
            for c in self.consumers:
                await c.max_offset(self.queues[0])
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _wait_route(self) -> list[MessageQueue]:
        deadline = time.monotonic() + ROUTE_WAIT_S
        while True:
            try:
                queues = await self.consumers[0].fetch_queues(self.topic)
                if queues:
                    return sorted(queues)
            except Exception:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.shutdown()
        with contextlib.suppress(Exception):
            await self.admin.delete_topic(self.topic)
        with contextlib.suppress(Exception):
            await self.admin.shutdown()


def _produce_extra(state: ProduceState) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if state.errors:
        extra["send_errors"] = state.errors
        extra["first_error"] = state.first_error
    if state.statuses:
        extra["send_statuses"] = state.statuses
    return extra


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
    extra = _produce_extra(state)
    extra["commits"] = cstate.commits
    extra["cpu"] = cpu
    return {"produce": prod, "consume": stats.consume_summary(cstate.consumed, csecs), **extra}


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
        **_produce_extra(state),
    }
    if cstate.errors:
        out["pull_errors"] = cstate.errors
    return out


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
        **_produce_extra(state),
    }
    if cstate.errors:
        out["pull_errors"] = cstate.errors
    return out


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
        run=index,
        **body,
    )
