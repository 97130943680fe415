"""Delay bench (not a test): N delayed messages and timers pending on a local broker, its RSS against the same
broker empty, then the lateness of level-1 deliveries (p50/p99 after their due time).

    python -m krocket.cli.bench.delay [--pending 200000] [--timed 500]

stdout: one JSON line; stderr: progress.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from krocket.cli.arg_types import positive_int
from krocket.cli.bench.stats import percentile
from krocket.cli.bench.system import rss_kib
from krocket.cli.local_cluster import LocalCluster
from krocket.client import ConsumeStatus, Message, Producer, PushConsumer

LEVELS = "1s 1h"  # level 1 for the lateness phase, level 2 keeps the pending ones waiting
WINDOW = 256  # sends in flight


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _send_all(producer: Producer, messages: list[Message]) -> None:
    for i in range(0, len(messages), WINDOW):
        await asyncio.gather(*(producer.send(m) for m in messages[i : i + WINDOW]))


async def _pending_phase(cluster: LocalCluster, pending: int) -> dict[str, Any]:
    pid = cluster.brokers[0].pid or 0
    await asyncio.sleep(2.0)
    empty = rss_kib(pid) or 0
    body = b"x" * 128
    async with Producer("bench-delay-producer", cluster.namesrv_addr) as producer:
        started = time.monotonic()
        for done in range(0, pending, 10_000):
            count = min(10_000, pending - done)
            half = count // 2
            msgs = [Message("BenchDelay", body, delay_level=2) for _ in range(half)]
            msgs += [Message("BenchDelay", body, delay_seconds=86_400) for _ in range(count - half)]
            await _send_all(producer, msgs)
            _say(f"pending: {done + count}/{pending}, broker RSS {(rss_kib(pid) or 0) // 1024} MiB")
        elapsed = time.monotonic() - started
    await asyncio.sleep(3.0)
    loaded = rss_kib(pid) or 0
    return {"pending": pending, "send_s": round(elapsed, 1), "rss_empty_mib": empty // 1024,
            "rss_pending_mib": loaded // 1024}  # fmt: skip


async def _lateness_phase(cluster: LocalCluster, timed: int) -> dict[str, Any]:
    sent: dict[bytes, float] = {}
    late: list[float] = []
    lock = threading.Lock()
    all_in = threading.Event()

    def listener(messages: list[Any]) -> ConsumeStatus:
        now = time.time()
        with lock:
            for m in messages:
                start = sent.get(m.body)
                if start is not None:
                    late.append((now - start - 1.0) * 1000.0)
            if len(late) >= timed:
                all_in.set()
        return ConsumeStatus.SUCCESS

    warm = threading.Event()
    async with Producer("bench-late-producer", cluster.namesrv_addr) as producer:
        await producer.send(Message("BenchLate", b"warm-up"))  # creates the topic before the consumer starts

        def first(messages: list[Any]) -> ConsumeStatus:
            if any(m.body == b"warm-up" for m in messages):
                warm.set()
            return listener(messages)

        consumer = PushConsumer("bench-delay-group", cluster.namesrv_addr, consume_from="FIRST")
        consumer.subscribe("BenchLate")
        consumer.register_listener(first)
        await consumer.start()
        await asyncio.get_running_loop().run_in_executor(None, lambda: warm.wait(30))
        for i in range(timed):
            body = f"late-{i}".encode()
            sent[body] = time.time()
            await producer.send(Message("BenchLate", body, delay_level=1))
            await asyncio.sleep(0.002)
    await asyncio.get_running_loop().run_in_executor(None, lambda: all_in.wait(60))
    await consumer.shutdown()
    values = sorted(late)

    def at(p: float) -> float | None:
        value = percentile(values, p, presorted=True)
        return None if value is None else round(value, 1)

    return {
        "timed": timed,
        "received": len(values),
        "lateness_p50_ms": at(0.5),
        "lateness_p99_ms": at(0.99),
        "earliest_ms": at(0.0),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pending", type=positive_int, default=200_000, help="delayed messages and timers left pending (200000)"
    )
    parser.add_argument(
        "--timed", type=positive_int, default=500, help="level-1 messages whose lateness is measured (500)"
    )


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "delay",
        help="delayed messages and timers: broker RSS with --pending waiting, lateness p50/p99 when they come due",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=_run_verb)


def _run_verb(args: argparse.Namespace) -> int:
    run(args)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m krocket.cli.bench.delay")
    add_arguments(parser)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    """One delay bench: a one-broker cluster in a temporary directory; one JSON line on stdout."""
    with tempfile.TemporaryDirectory(prefix="krocket-bench-delay-") as tmp:
        config = Path(tmp) / "broker.yaml"
        config.write_text(f'messageDelayLevel: "{LEVELS}"\n')
        cluster = LocalCluster.plan(Path(tmp) / "c", namesrvs=1, groups=1, extra_broker_args=["--config", str(config)])
        cluster.start()
        try:
            row = {"bench": "delay"}
            row.update(asyncio.run(_lateness_phase(cluster, args.timed)))
            row.update(asyncio.run(_pending_phase(cluster, args.pending)))
            print(json.dumps(row), flush=True)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
