"""The 5.x SDK side of ``krocket bench grpc``: drives the official RocketMQ 5.x Python SDK
(``rocketmq-python-client==5.1.2``) in its own interpreter and prints what it measured as JSON lines.

It runs in the SDK's virtual environment (``$KROCKET_RMQ5_VENV`` or ``.venv-rmq5``), started by the bench as
``SDK_PYTHON -I grpc_sdk_driver.py ...``: the SDK's package ``rocketmq`` is also the 4.x C++ client's, and its
generated protocol modules clash with the broker's in one process. It imports nothing of krocket (``-I`` keeps
this folder off ``sys.path``; ``main`` drops it too, so no module here shadows one the SDK imports).

One run: a Producer sends ``--warmup`` messages, then up to ``--n`` messages of ``--size`` bytes (or until
``--duration`` s) with ``--send``: ``sync`` = ``producer.send`` one at a time in each of ``--threads`` threads,
``async`` = ``producer.send_async`` futures, ``--window`` of them in flight; each send's latency is recorded
from the call to its receipt. Then a SimpleConsumer receives everything (``receive(--batch, --invisible)`` in
``--threads`` threads, or one thread with ``--send async``) and acks each message: ``consumer.ack`` (sync), or
``--send async``: ``_ack_async``, ``--window`` acks in flight, reaped by polling (5.1.2's public ``ack_async``
drops the future it makes, and that future never runs its callbacks: see ``consume_async``). The consume time
ends at the last ack. Lines on stdout::

    {"ready": {"startup_s": ...}}
    {"produce": {"msgs", "secs", "latencies_us": [...], "errors", "first_error", "client_cpu_s", "broker_cpu_s"}}
    {"consume": {"msgs", "unique", "missing", "acked", "secs", "errors", "first_error", "client_cpu_s", ...}}
    {"done": true}

``client_cpu_s`` is this process's CPU time (every SDK thread), ``broker_cpu_s`` that of ``--broker-pid`` from
``/proc`` (null without it). Progress goes to stderr as ``[bench] ...`` lines unless ``--quiet``. Every loop is
bounded: by the message count, the phase deadline and ``MAX_ERRORS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

MAX_ERRORS = 100  # a phase gives up after this many failed calls
PROGRESS_S = 1.0
REAP_S = 0.0005  # how often acks in flight are polled (consume_async)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of process ``pid`` from /proc, None when unreadable (or no pid)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


_finished_lock = threading.Lock()
_finished_cpu_s = 0.0  # CPU time of the bench's send/receive threads that have ended


def finished_thread(cpu_s: float) -> None:
    """A bench thread that is about to end adds its CPU time (``time.thread_time()``) here."""
    global _finished_cpu_s
    with _finished_lock:
        _finished_cpu_s += cpu_s


def thread_group(name: str) -> str:
    """Where a thread's CPU is reported: the SDK's shared asyncio loop that drives grpc.aio (``io_loop``), its
    callback and decode pools, the threads calling the SDK (``callers``: the bench's and the main thread) or
    ``other`` (grpc's C-core threads, the SDK's schedulers, this driver's progress line)."""
    if name == "channel_io_loop_thread":
        return "io_loop"
    if name.startswith("client_callback_worker"):
        return "callbacks"
    if "message_decode_thread" in name:
        return "decode"
    if name == "MainThread" or name.startswith(("bench-send", "bench-receive")):
        return "callers"
    return "other"


def python_threads_cpu() -> dict[int, tuple[str, float]]:
    """native id -> (name, CPU seconds) of this process's live Python threads, from /proc/self/task."""
    out = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[t.native_id] = (t.name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError):
            continue
    return out


class Meter:
    """CPU seconds of this process (split by thread group) and of the broker over one phase."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.client0 = time.process_time()
        self.broker0 = cpu_seconds(broker_pid)
        self.threads0 = python_threads_cpu()
        self.finished0 = _finished_cpu_s

    def read(self) -> dict[str, Any]:
        broker = cpu_seconds(self.broker_pid)
        client = time.process_time() - self.client0
        groups = {"callers": _finished_cpu_s - self.finished0, "io_loop": 0.0, "callbacks": 0.0, "decode": 0.0}
        for tid, (name, cpu) in python_threads_cpu().items():
            before = self.threads0.get(tid)
            group = thread_group(name)
            if group != "other":
                groups[group] += cpu - (before[1] if before else 0.0)
        groups["other"] = max(client - sum(groups.values()), 0.0)
        return {
            "client_cpu_s": round(client, 4),
            "broker_cpu_s": None if broker is None or self.broker0 is None else round(broker - self.broker0, 4),
            "threads_cpu_s": {k: round(v, 4) for k, v in groups.items()},
        }


class Tally:
    """Counters one phase's threads share (under one lock)."""

    def __init__(self, limit: int, deadline: float) -> None:
        self.limit = limit
        self.deadline = deadline
        self.lock = threading.Lock()
        self.claimed = 0
        self.done = 0
        self.errors = 0
        self.first_error: str | None = None
        self.latencies_us: list[int] = []
        self.ids: list[str] = []

    def claim(self) -> bool:
        with self.lock:
            if self.claimed >= self.limit or self.errors >= MAX_ERRORS or time.monotonic() >= self.deadline:
                return False
            self.claimed += 1
            return True

    def ok(self, started: float, message_id: str) -> None:
        us = round((time.perf_counter() - started) * 1e6)
        with self.lock:
            self.done += 1
            self.latencies_us.append(us)
            self.ids.append(message_id)

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.errors += 1
            self.claimed -= 1  # claimed again
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"
                log(f"failed: {self.first_error}")


QUIET = False


def log(text: str) -> None:
    if not QUIET:
        print(f"[bench] {text}", file=sys.stderr, flush=True)


def show_progress(what: str, count: Callable[[], int], stop: threading.Event) -> threading.Thread:
    """A thread that logs ``count()`` and its rate every second until ``stop`` is set."""

    def run() -> None:
        last_t, last_n = time.perf_counter(), 0
        while not stop.wait(PROGRESS_S):
            now, n = time.perf_counter(), count()
            log(f"{what}: {n} ({(n - last_n) / max(now - last_t, 1e-9) / 1000:.1f} k/s)")
            last_t, last_n = now, n

    t = threading.Thread(target=run, name="bench-progress", daemon=True)
    if not QUIET:
        t.start()
    return t


def config(args: argparse.Namespace) -> Any:
    from rocketmq import ClientConfiguration, Credentials

    return ClientConfiguration(args.endpoints, Credentials("", ""), request_timeout=args.request_timeout)


def new_message(topic: str, body: bytes) -> Any:
    from rocketmq import Message

    msg = Message()
    msg.topic = topic
    msg.body = body
    return msg


def send_sync(producer: Any, topic: str, body: bytes, tally: Tally, threads: int) -> float:
    """``producer.send`` one at a time in each of ``threads`` threads; returns the elapsed seconds."""

    def worker() -> None:
        while tally.claim():
            msg = new_message(topic, body)
            started = time.perf_counter()
            try:
                receipt = producer.send(msg)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                tally.failed(exc)
                continue
            tally.ok(started, receipt.message_id)
        finished_thread(time.thread_time())

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, name=f"bench-send-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def send_async(producer: Any, topic: str, body: bytes, tally: Tally, window: int, drain_s: float) -> float:
    """``producer.send_async`` with up to ``window`` futures in flight; returns the elapsed seconds."""
    slots = threading.BoundedSemaphore(window)

    def done(started: float, future: Future[Any]) -> None:
        try:
            receipt = future.result()
        except Exception as exc:  # noqa: BLE001 - counted, reported
            tally.failed(exc)
        else:
            tally.ok(started, receipt.message_id)
        finally:
            slots.release()

    t0 = time.perf_counter()
    while tally.claim():
        if not slots.acquire(timeout=max(tally.deadline - time.monotonic(), 0) + drain_s):
            tally.failed(TimeoutError(f"no send completed within {drain_s:.0f} s"))
            break
        started = time.perf_counter()
        try:
            future = producer.send_async(new_message(topic, body))
        except Exception as exc:  # noqa: BLE001 - counted, reported
            slots.release()
            tally.failed(exc)
            continue
        future.add_done_callback(lambda f, s=started: done(s, f))
    for _ in range(window):  # every send answered (or the drain time is up)
        if not slots.acquire(timeout=drain_s):
            break
    return time.perf_counter() - t0


class Received:
    """What the consumer got: every delivery's message id, acks and failures."""

    def __init__(self, expect: set[str], deadline: float) -> None:
        self.expect = expect
        self.deadline = deadline
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.deliveries = 0
        self.acked = 0
        self.last_ack: float | None = None
        self.errors = 0
        self.first_error: str | None = None

    def running(self) -> bool:
        with self.lock:
            return not self.expect <= self.seen and self.errors < MAX_ERRORS and time.monotonic() < self.deadline

    def got(self, message_id: str) -> None:
        with self.lock:
            self.deliveries += 1
            self.seen.add(message_id)

    def ack_ok(self) -> None:
        with self.lock:
            self.acked += 1
            self.last_ack = time.perf_counter()

    def elapsed(self, t0: float) -> float:
        """Seconds from ``t0`` to the last ack (not to the end of the receives still long-polling then)."""
        return (self.last_ack if self.last_ack is not None else time.perf_counter()) - t0

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"
                log(f"failed: {self.first_error}")


def consume_sync(consumer: Any, got: Received, args: argparse.Namespace) -> float:
    """``receive`` + ``ack`` of each message, in ``--threads`` threads; returns the elapsed seconds."""

    def worker() -> None:
        while got.running():
            try:
                messages = consumer.receive(args.batch, args.invisible)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                got.failed(exc)
                time.sleep(0.1)
                continue
            for message in messages or []:
                got.got(message.message_id)
                try:
                    consumer.ack(message)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    got.failed(exc)
                    continue
                got.ack_ok()
        finished_thread(time.thread_time())

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, name=f"bench-receive-{i}") for i in range(args.threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return got.elapsed(t0)


def consume_async(consumer: Any, got: Received, args: argparse.Namespace) -> float:
    """``receive`` in one thread, each message acked with ``_ack_async``, ``--window`` acks in flight.

    5.1.2's ``SimpleConsumer.ack_async`` returns nothing, and the future ``_ack_async`` makes is an
    ``asyncio.Future`` created outside any running loop: its done-callbacks never run and ``result()`` does not
    wait. It is marked done from the SDK's callback thread, so the acks in flight are reaped by polling
    ``done()`` (every ``REAP_S``) - what a caller of this SDK can do."""
    pending: list[Any] = []

    def reap() -> int:
        still = []
        for future in pending:
            if not future.done():
                still.append(future)
            elif future.exception() is not None:
                got.failed(future.exception())
            else:
                got.ack_ok()
        reaped = len(pending) - len(still)
        pending[:] = still
        return reaped

    def wait_below(limit: int) -> bool:
        deadline = time.monotonic() + args.drain
        while len(pending) > limit:
            if not reap():
                if time.monotonic() > deadline:
                    return False
                time.sleep(REAP_S)
        return True

    t0 = time.perf_counter()
    while got.running():
        try:
            messages = consumer.receive(args.batch, args.invisible)
        except Exception as exc:  # noqa: BLE001 - counted, reported
            got.failed(exc)
            time.sleep(0.1)
            continue
        for message in messages or []:
            got.got(message.message_id)
            if not wait_below(args.window - 1):
                got.failed(TimeoutError(f"no ack completed within {args.drain:.0f} s"))
                break
            try:
                pending.append(consumer._ack_async(message))
            except Exception as exc:  # noqa: BLE001 - counted, reported
                got.failed(exc)
        reap()
    if not wait_below(0):
        got.failed(TimeoutError(f"{len(pending)} acks still in flight after {args.drain:.0f} s"))
    return got.elapsed(t0)


def produce_phase(args: argparse.Namespace, body: bytes) -> Tally:
    from rocketmq import Producer

    t0 = time.perf_counter()
    producer = Producer(config(args), (args.topic,))
    producer.startup()
    try:
        warm = Tally(args.warmup, time.monotonic() + args.duration + args.drain)
        send_sync(producer, args.topic, body, warm, 1)
        if warm.errors and not warm.done:
            raise RuntimeError(f"every warm-up send failed: {warm.first_error}")
        emit({"ready": {"startup_s": round(time.perf_counter() - t0, 3), "warmup": warm.done}})
        tally = Tally(args.n, time.monotonic() + args.duration)
        stop = threading.Event()
        show_progress(f"sdk send {args.send}", lambda: tally.done, stop)
        meter = Meter(args.broker_pid)
        if args.send == "sync":
            secs = send_sync(producer, args.topic, body, tally, args.threads)
        else:
            secs = send_async(producer, args.topic, body, tally, args.window, args.drain)
        cpu = meter.read()
        stop.set()
    finally:
        producer.shutdown()
    emit(
        {
            "produce": {
                "msgs": tally.done,
                "secs": round(secs, 4),
                "latencies_us": tally.latencies_us,
                "errors": tally.errors,
                "first_error": tally.first_error,
                **cpu,
            }
        }
    )
    tally.ids.extend(warm.ids)  # the consumer gets the warm-up messages too
    return tally


def consume_phase(args: argparse.Namespace, expect: set[str]) -> None:
    from rocketmq import FilterExpression, SimpleConsumer

    consumer = SimpleConsumer(config(args), args.group, {args.topic: FilterExpression()}, await_duration=args.await_s)
    consumer.startup()
    try:
        got = Received(expect, time.monotonic() + args.consume_budget)
        stop = threading.Event()
        show_progress("sdk receive+ack", lambda: got.acked, stop)
        meter = Meter(args.broker_pid)
        secs = consume_async(consumer, got, args) if args.send == "async" else consume_sync(consumer, got, args)
        cpu = meter.read()
        stop.set()
    finally:
        consumer.shutdown()
    emit(
        {
            "consume": {
                "msgs": got.deliveries,
                "unique": len(got.seen),
                "missing": len(expect - got.seen),
                "acked": got.acked,
                "secs": round(secs, 4),
                "errors": got.errors,
                "first_error": got.first_error,
                **cpu,
            }
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="grpc_sdk_driver.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", required=True, help="host:port of a broker's gRPC port")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True, help="the SimpleConsumer's group")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--duration", type=float, default=60.0, help="send-phase limit, seconds")
    p.add_argument("--consume-budget", type=float, default=120.0, help="consume-phase limit, seconds")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--send", choices=("sync", "async"), default="sync")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="messages per receive")
    p.add_argument("--invisible", type=int, default=30, help="invisible duration of a receive, seconds")
    p.add_argument("--await-s", type=int, default=2, help="a receive's long-polling time, seconds")
    p.add_argument("--request-timeout", type=int, default=10)
    p.add_argument("--drain", type=float, default=30.0, help="longest wait for calls in flight, seconds")
    p.add_argument("--broker-pid", type=int, default=None)
    p.add_argument("--no-consume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for name in ("n", "size", "threads", "window", "batch", "invisible", "await_s"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    global QUIET
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]  # no shadowing of SDK modules
    args = parse_args(argv)
    QUIET = args.quiet
    try:
        import rocketmq.v5  # noqa: F401 - the 5.x SDK, not the 4.x C++ client's package of the same name
    except ImportError as exc:
        emit({"error": f"the RocketMQ 5.x SDK is not importable here ({sys.executable}): {exc}"})
        return 3
    try:
        tally = produce_phase(args, b"x" * args.size)
        if not args.no_consume:
            consume_phase(args, set(tally.ids))
    except Exception as exc:  # noqa: BLE001 - reported to the bench
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({"done": True})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the SDK's scheduler threads can keep a plain exit waiting
