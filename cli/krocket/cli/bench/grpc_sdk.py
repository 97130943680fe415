"""``krocket bench grpc``: RocketMQ 5.x clients over the broker's gRPC port (apache.rocketmq.v2.MessagingService).

The official 5.x Python SDK (``rocketmq-python-client==5.1.2``) runs in its own virtual environment
(``--sdk-python``, default ``$KROCKET_RMQ5_VENV/bin/python``, else ``./.venv-rmq5/bin/python``): its package
``rocketmq`` is the 4.x C++ client's too and its generated protocol modules clash with the broker's, so it cannot
be imported here. The bench runs ``grpc_sdk_driver.py`` (this folder, importing nothing of krocket) there, once per
client setting, and reads its JSON lines. ``stubs-window`` measures krocket's own stubs over grpc.aio in this
process instead: the broker's gRPC ceiling without the SDK's cost.

Every run gets its own topic (message type NORMAL, through the admin API), sends up to ``--n`` messages (or for
``--duration`` s), then receives and acks them all with a 5.x consumer, and deletes the topic and the consumer
group. stdout: one JSON line per run, in the other bench rows' shape; stderr: progress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krocket.cli.arg_types import non_negative_float, positive_int
from krocket.cli.bench import grpc_report as report
from krocket.cli.bench import system
from krocket.cli.bench.command import (
    RUNNING_CLUSTERS,
    add_output_arguments,
    bench_target,
    event_loop_runner,
    stop_clusters_on_signal,
)
from krocket.cli.bench.grpc_report import Variant
from krocket.cli.bench.progress import Progress
from krocket.client import Admin
from krocket.common.errors import ConfigError
from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE, NORMAL

EPILOG = f"""\
examples:
  krocket bench grpc --local --pin --n 3000
  krocket bench grpc --local --clients sdk-seq,sdk-async --window 128
  krocket bench grpc --local --clients stubs-window --n 50000 --stub-window 256
  krocket bench grpc --namesrv 127.0.0.1:9876 --grpc-endpoint 127.0.0.1:8081 --json

clients: sdk-seq (send, one thread), sdk-threads (send in --threads threads), sdk-async (send_async, --window in
flight), stubs-window (krocket's grpc.aio stubs, --stub-window SendMessage calls in flight); default all.

The 5.x SDK's environment: {report.how_to_make_venv(Path(report.DEFAULT_SDK_VENV))}
"""

ROUTE_WAIT_S = 30.0
DRIVER_SLACK_S = 90.0  # a driver's start, route and shutdown, on top of its phases' limits


@dataclass
class GrpcOptions:
    n: int = 3000
    stub_n: int = 20_000
    size: int = 1024
    duration: float = 60.0
    consume_budget: float | None = None
    warmup: int = 20
    threads: int = 8
    window: int = 64
    stub_window: int = 256
    batch: int = 32
    invisible_s: int = 30
    queues: int = 4
    pin: bool = False
    quiet: bool = False

    @property
    def consume_limit_s(self) -> float:
        return self.consume_budget if self.consume_budget is not None else self.duration * 2 + 20


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "grpc",
        help="RocketMQ 5.x clients over gRPC: the official Python SDK (its own venv) and krocket's stubs",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--namesrv", default=None, help="name servers of a running cluster (default $NAMESRV_ADDR)")
    where.add_argument("--local", action="store_true", help="a temporary one-broker cluster for the run")
    p.add_argument("--grpc-endpoint", default=None, metavar="HOST:PORT", help="with --namesrv: a broker's gRPC port")
    p.add_argument("--sdk-python", default=None, metavar="PATH", help="the 5.x SDK environment's python")
    p.add_argument("--clients", default="all", help=f"comma-separated: {', '.join(report.CLIENTS)} (default all)")
    p.add_argument("--n", type=positive_int, default=3000, help="messages per SDK run, at most (default 3000)")
    p.add_argument("--stub-n", type=positive_int, default=20_000, help="messages per stubs run (default 20000)")
    p.add_argument("--size", type=positive_int, default=1024, help="message body bytes (default 1024)")
    p.add_argument("--duration", type=non_negative_float, default=60.0, help="send-phase limit, s (default 60)")
    p.add_argument("--consume-budget", type=non_negative_float, default=None, help="consume-phase limit, s")
    p.add_argument("--warmup", type=positive_int, default=20, help="warm-up sends before measuring (default 20)")
    p.add_argument("--threads", type=positive_int, default=8, help="sdk-threads: sending threads (default 8)")
    p.add_argument("--window", type=positive_int, default=64, help="sdk-async: send_async in flight (default 64)")
    p.add_argument("--stub-window", type=positive_int, default=256, help="stubs: sends in flight (default 256)")
    p.add_argument("--batch", type=positive_int, default=32, help="messages per receive (default 32)")
    p.add_argument("--invisible", type=positive_int, default=30, help="a receive's invisible time, s (default 30)")
    p.add_argument("--queues", type=positive_int, default=4, help="queues of the bench topic (default 4)")
    p.add_argument("--runs", type=positive_int, default=1, help="rounds of every client (default 1)")
    p.add_argument("--pin", action="store_true", help="broker (of --local) on CPU 0, the clients on CPU 1")
    p.add_argument(
        "--loop", choices=["asyncio", "uvloop"], default=argparse.SUPPRESS,
        help="event loop of this process (the stubs) and of the --local cluster (default: the global --loop)",
    )  # fmt: skip
    add_output_arguments(p)
    p.set_defaults(func=grpc_main)


def options_from(args: argparse.Namespace) -> GrpcOptions:
    return GrpcOptions(
        n=args.n, stub_n=args.stub_n, size=args.size, duration=args.duration, consume_budget=args.consume_budget,
        warmup=args.warmup, threads=args.threads, window=args.window, stub_window=args.stub_window,
        batch=args.batch, invisible_s=args.invisible, queues=args.queues, pin=args.pin, quiet=args.quiet,
    )  # fmt: skip


def check_sdk(python: Path) -> str:
    """The SDK's version in ``python``'s environment; ``ConfigError`` saying how to make it when unusable."""
    if not python.exists():
        raise ConfigError(report.missing_sdk_message(python, "no such interpreter"))
    probe = "import importlib.metadata as m, rocketmq.v5; print(m.version('rocketmq-python-client'))"
    try:
        done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(report.missing_sdk_message(python, str(exc))) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["import failed"])[-1]
        raise ConfigError(report.missing_sdk_message(python, last))
    return done.stdout.strip()


class BenchTopic:
    """A NORMAL topic (and consumer group name) for one run, made through the admin API and deleted after."""

    def __init__(self, namesrv: str, tag: str, queues: int) -> None:
        stamp = f"{os.getpid()}-{time.time_ns() // 1_000_000}"
        self.topic = f"bench-{tag}-{stamp}"
        self.group = f"bench_{tag}-{stamp}-c"
        self.queues = queues
        self.admin = Admin(namesrv)

    async def __aenter__(self) -> BenchTopic:
        await self.admin.start()
        try:
            await self.admin.create_topic(
                self.topic, self.queues, self.queues, attributes={MESSAGE_TYPE_ATTRIBUTE: NORMAL}
            )
            deadline = time.monotonic() + ROUTE_WAIT_S
            while True:
                try:
                    if (await self.admin.topic_route(self.topic)).queue_datas:
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.admin.delete_topic(self.topic)
        with contextlib.suppress(Exception):
            await self.admin.delete_group(self.group)
        with contextlib.suppress(Exception):
            await self.admin.shutdown()


def driver_args(variant: Variant, opts: GrpcOptions, endpoint: str, topic: BenchTopic, pid: int | None) -> list[str]:
    args = [
        "--endpoints", endpoint, "--topic", topic.topic, "--group", topic.group, "--n", str(opts.n),
        "--size", str(opts.size), "--duration", str(opts.duration), "--consume-budget", str(opts.consume_limit_s),
        "--warmup", str(opts.warmup), "--send", variant.send, "--threads", str(variant.threads),
        "--window", str(max(variant.window, 1)), "--batch", str(opts.batch), "--invisible", str(opts.invisible_s),
    ]  # fmt: skip
    if pid:
        args += ["--broker-pid", str(pid)]
    if opts.quiet:
        args.append("--quiet")
    return args


async def run_driver(python: Path, args: list[str], timeout: float, home: Path) -> report.DriverReport:
    """The SDK driver in its own interpreter (``-I``: no krocket, no PYTHON* variables); its report. The SDK's
    own log goes under ``home`` (~/logs/rocketmq_python)."""
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        str(python), "-I", str(report.DRIVER), *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return report.DriverReport(error=f"the SDK driver ran past {timeout:.0f} s and was stopped")
    parsed = report.parse_driver_output(out.decode(errors="replace"))
    if proc.returncode != 0 and parsed.error is None:
        parsed.error = f"the SDK driver exited {proc.returncode}"
    if not parsed.ok:
        log = "".join(p.read_text(errors="replace") for p in sorted(home.rglob("*.log")))
        parsed.error = (parsed.error or "the SDK driver did not finish") + (f"; SDK log: {log[-1500:]}" if log else "")
    return parsed


async def run_variant(
    variant: Variant, opts: GrpcOptions, namesrv: str, endpoint: str, pid: int | None, python: Path | None,
    progress: Progress,
) -> tuple[dict[str, Any] | None, str | None]:  # fmt: skip
    """One run of ``variant`` on a topic of its own: (its figures, None) or (None, why it failed)."""
    async with BenchTopic(namesrv, variant.name, opts.queues) as topic:
        if variant.sdk:
            assert python is not None
            progress.log(f"{variant.name}: SDK driver on {endpoint}, topic {topic.topic}")
            home = Path(tempfile.mkdtemp(prefix="krocket-bench-rmq5-"))
            try:
                timeout = opts.duration + opts.consume_limit_s + DRIVER_SLACK_S
                parsed = await run_driver(python, driver_args(variant, opts, endpoint, topic, pid), timeout, home)
            finally:
                shutil.rmtree(home, ignore_errors=True)
            if not parsed.ok or parsed.produce is None:
                return None, parsed.error
            figures = report.phase_result(variant, parsed.produce, parsed.consume)
            figures["startup_s"] = parsed.ready.get("startup_s")
            return figures, None
        from krocket.cli.bench.grpc_stubs import run_stubs  # imports the broker's generated stubs

        progress.log(f"{variant.name}: krocket's grpc.aio stubs on {endpoint}, topic {topic.topic}")
        progress.start()
        try:
            produce, consume = await run_stubs(
                endpoint, topic.topic, topic.group, n=opts.stub_n, size=opts.size, window=variant.window,
                warmup=opts.warmup, duration=opts.duration, consume_budget=opts.consume_limit_s, batch=opts.batch,
                invisible_s=opts.invisible_s, broker_pid=pid, progress=progress,
            )  # fmt: skip
        finally:
            await progress.stop()
        return report.phase_result(variant, produce, consume), None


def _endpoint_of(args: argparse.Namespace) -> str:
    if not args.grpc_endpoint:
        raise ConfigError("--namesrv needs --grpc-endpoint HOST:PORT: the gRPC port of one of its brokers")
    host, _, port = args.grpc_endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--grpc-endpoint {args.grpc_endpoint!r} is not HOST:PORT")
    return str(args.grpc_endpoint)


def grpc_main(args: argparse.Namespace) -> int:
    opts = options_from(args)
    variants = report.variants(report.parse_clients(args.clients), opts.threads, opts.window, opts.stub_window)
    progress = Progress(enabled=not args.quiet)
    target = bench_target(args)
    local = target is None
    if local and args.grpc_endpoint:
        raise ConfigError("--grpc-endpoint names a running cluster's broker: use it with --namesrv, not --local")
    if args.profile_broker and not local:
        raise ConfigError("--profile-broker needs --local")
    endpoint = None if local else _endpoint_of(args)
    python, sdk_version = None, None
    if any(v.sdk for v in variants):
        python = report.sdk_python_path(args.sdk_python)
        sdk_version = check_sdk(python)
        progress.log(f"5.x SDK rocketmq-python-client {sdk_version} in {python}")
    pin = opts.pin and system.can_pin()
    if opts.pin and not pin:
        progress.log("--pin ignored: fewer than two usable CPUs")
    if pin:
        system.pin_self()  # the SDK driver, started from here, inherits CPU 1
        progress.log(f"client pinned to CPU {system.CLIENT_CPU}")
    run = event_loop_runner(getattr(args, "loop", "asyncio"))
    signal.signal(signal.SIGTERM, stop_clusters_on_signal)
    cluster = None
    failures = 0
    try:
        if local:
            cluster = system.BenchCluster(pin=pin, progress=progress.log, profile_out=args.profile_broker)
            RUNNING_CLUSTERS.append(cluster)
            cluster.start()
            namesrv, pid = cluster.namesrv, cluster.broker_pid
            endpoint = cluster.cluster.brokers[0].grpc_addr
            if not endpoint:
                raise ConfigError("the local broker serves no gRPC port")
        else:
            namesrv, pid = str(target), None
        assert endpoint is not None
        for index in range(args.runs):
            for variant in variants:
                figures, error = run(run_variant(variant, opts, namesrv, endpoint, pid, python, progress))
                if figures is None:
                    failures += 1
                    progress.log(f"{variant.name} failed: {error}")
                    continue
                line = report.result_line(
                    variant, figures, msg_bytes=opts.size, transport="grpc",
                    sdk=f"rocketmq-python-client {sdk_version}" if variant.sdk else "krocket grpc.aio stubs",
                    batch=opts.batch, invisible_s=opts.invisible_s, pinned=pin, queues=opts.queues,
                    cluster="local" if local else "remote", run=index,
                )  # fmt: skip
                if report.failed(line):
                    failures += 1
                if not args.json:
                    print(report.human_line(line), flush=True)
                print(json.dumps(line), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
            RUNNING_CLUSTERS.remove(cluster)
    return 1 if failures else 0
