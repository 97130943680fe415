"""``krocket bench produce|consume|e2e|backlog|compare|floor|delay|grpc|scale``: argument parsing and the run driver."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from krocket.cli.arg_types import non_negative_float, non_negative_int, positive_int
from krocket.cli.bench import system
from krocket.cli.bench.options import MODES, BenchOptions
from krocket.cli.bench.progress import Progress
from krocket.cli.bench.runner import run_once
from krocket.cli.server_commands import idle_spin_micros_argument
from krocket.common.errors import ConfigError

EPILOG = """\
examples:
  krocket bench produce --local --mode seq --pin
  krocket bench produce --local --mode batch --batch 100 --flush sync
  krocket bench consume --local --backlog 1000000
  krocket bench e2e --local --rate 20000 --mode window
  krocket bench produce --namesrv 127.0.0.1:9876 --mode window --window 256 --json
  NAMESRV_ADDR=127.0.0.1:9876 krocket bench e2e --rate 5000

target: --namesrv, else $NAMESRV_ADDR, else --local (a temporary cluster); with none of them bench exits 2.

stdout: one JSON line per run, in the peer kit's shape ; stderr: progress.
"""


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--profile-broker, --json and --quiet, as every bench run takes them."""
    p.add_argument(
        "--profile-broker",
        metavar="PATH",
        default=None,
        help="--local: run the broker under cProfile and write its stats to PATH when it stops",
    )
    p.add_argument("--json", action="store_true", help="stdout gets only the JSON lines")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--namesrv",
        default=None,
        help="name servers host:port[;host:port] of a running cluster (default $NAMESRV_ADDR)",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="start a one-broker cluster in a temporary directory for the run, stop it afterwards (also when "
        "$NAMESRV_ADDR is set); one of --namesrv, $NAMESRV_ADDR or --local is needed",
    )
    p.add_argument("--size", type=positive_int, default=1024, help="message body bytes (default 1024)")
    p.add_argument("--n", type=positive_int, default=200_000, help="messages per run, at most (default 200000)")
    p.add_argument(
        "--duration", type=non_negative_float, default=45.0, help="produce-phase time limit in seconds (default 45)"
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="seq",
        help="seq: one acked send at a time; window: up to --window sends in flight per producer; "
        "batch: send_batch of --batch messages, --window batches in flight (default seq)",
    )
    p.add_argument(
        "--window", type=positive_int, default=None, help="requests in flight per producer (window 256, batch 4)"
    )
    p.add_argument("--batch", type=positive_int, default=100, help="messages per send_batch (default 100)")
    p.add_argument("--flush", choices=["sync", "async"], default="async", help="--local broker's flush (async)")
    p.add_argument(
        "--replication",
        choices=["sync", "async"],
        default="async",
        help="--local: ASYNC_MASTER or SYNC_MASTER (default async)",
    )
    p.add_argument(
        "--slaves",
        type=non_negative_int,
        default=None,
        help="--local: slaves of the broker (default 1 with --replication sync, else 0)",
    )
    p.add_argument("--producers", type=positive_int, default=1, help="producer clients (connections), default 1")
    p.add_argument("--consumers", type=positive_int, default=1, help="pull consumer clients, default 1")
    p.add_argument(
        "--rate",
        type=non_negative_float,
        default=20_000.0,
        help="e2e: offered load in messages/s, 0 = as fast as possible (default 20000)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="broker (of --local) on CPU 0, this client on CPU 1 (needs 2+ CPUs; otherwise ignored)",
    )
    p.add_argument("--queues", type=positive_int, default=4, help="queues of the bench topic (default 4)")
    p.add_argument("--pull-batch", type=positive_int, default=1024, help="messages per pull, at most (1024)")
    p.add_argument(
        "--commit-every",
        type=positive_int,
        default=10_000,
        help="consumers store their offset (update_offset) every this many messages per queue and at the end",
    )
    p.add_argument("--consume-budget", type=non_negative_float, default=None, help="consume-phase limit, seconds")
    p.add_argument("--runs", type=positive_int, default=1, help="measured runs, one JSON line each (default 1)")
    p.add_argument(
        "--loop", choices=["asyncio", "uvloop"], default=argparse.SUPPRESS,
        help="event loop of this client and of the --local cluster (default: the global --loop)",
    )  # fmt: skip
    p.add_argument(
        "--client", choices=["async", "sync"], default="async",
        help="produce --mode seq only: 'sync' sends from a thread over blocking sockets, as SyncProducer.send does",
    )  # fmt: skip
    p.add_argument(
        "--idle-spin-micros",
        type=idle_spin_micros_argument,
        default=0,
        metavar="N",
        help="--local: its brokers poll without blocking for up to N us after each I/O event (idleSpinMicros; "
        "default 0 = off; asyncio loop only); the JSON line reports it",
    )
    add_output_arguments(p)


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure produce/consume rates and latency (JSON like the peer benchmark kit)",
        description="Benchmarks of a krocket cluster, shaped like the peer kit's (JSON lines).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = bench.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (
        ("produce", "send --n messages (or for --duration), then consume them all"),
        ("consume", "store a backlog with batch sends, then consume it from the oldest message"),
        ("backlog", "as consume, reporting the broker's resident memory empty and with the backlog"),
        ("e2e", "produce at --rate while consuming; produce-to-consume latency p50/p99/p999"),
    ):
        p = verbs.add_parser(
            verb, help=text, description=text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_run_arguments(p)
        if verb in ("consume", "backlog"):
            p.add_argument(
                "--backlog", type=positive_int, default=None, metavar="N", help="messages to store first (--n)"
            )
        p.set_defaults(func=bench_main)
    from krocket.cli.bench import compare, delay, floor, grpc_sdk, scale

    compare.register(verbs)
    floor.register(verbs)
    delay.register(verbs)
    grpc_sdk.register(verbs)
    scale.register(verbs)


def options_from(args: argparse.Namespace) -> BenchOptions:
    verb = "consume" if args.verb == "backlog" else args.verb
    if args.client == "sync" and (verb != "produce" or args.mode != "seq"):
        raise ConfigError("--client sync measures one-at-a-time sends: use it with produce --mode seq")
    loop = getattr(args, "loop", "asyncio")  # the global --loop unless the bench verb has its own
    if args.idle_spin_micros and loop == "uvloop":
        raise ConfigError(
            "--idle-spin-micros needs the asyncio event loop: uvloop has no hook to poll before it blocks; "
            "use --loop asyncio or leave the spin off"
        )
    return BenchOptions(
        verb=verb,
        mode=args.mode,
        size=args.size,
        n=args.n,
        duration=args.duration,
        window=args.window,
        batch=args.batch,
        flush=args.flush,
        replication=args.replication,
        producers=args.producers,
        consumers=args.consumers,
        rate=args.rate,
        pin=args.pin,
        queues=args.queues,
        pull_batch=args.pull_batch,
        commit_every=args.commit_every,
        consume_budget=args.consume_budget,
        backlog=getattr(args, "backlog", None),
        loop=loop,
        client=args.client,
        idle_spin_micros=args.idle_spin_micros,
    )


def event_loop_runner(loop: str) -> Any:
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
        return uvloop.run
    return asyncio.run


def human_line(r: dict[str, Any]) -> str:
    p, c = r["produce"], r["consume"]
    text = (
        f"krocket {r['verb']} {r['mode']}: produce {p['msgs']} msgs in {p['secs']} s = {p['msgs_per_s']} msg/s "
        f"(p50 {p['p50_us']} us, p99 {p['p99_us']} us); consume {c['msgs']} msgs = {c['msgs_per_s']} msg/s"
    )
    if "e2e" in r:
        e = r["e2e"]
        text += f"; e2e p50 {e['p50_us']} us, p99 {e['p99_us']} us, p999 {e['p999_us']} us"
    if "backlog" in r:
        b = r["backlog"]
        text += f"; broker RSS {b['rss_empty_kib']} KiB empty, {b['rss_backlog_kib']} KiB with {b['msgs']} msgs"
    return text


RUNNING_CLUSTERS: list[system.BenchCluster] = []


def stop_clusters_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM: stop the local cluster and leave at once (an exception raised here can be swallowed inside the
    event loop's machinery, and the run would go on to its end)."""
    for cluster in RUNNING_CLUSTERS:
        cluster.stop()
    os._exit(128 + signum)


def bench_target(args: argparse.Namespace, env: dict[str, str] | None = None) -> str | None:
    """The name servers to benchmark: ``--namesrv``, else ``$NAMESRV_ADDR``; None with ``--local`` (a temporary
    cluster). Neither given: a ``ConfigError`` that says both ways, rather than measuring something else."""
    if args.local:
        return None
    namesrv = args.namesrv or (os.environ if env is None else env).get("NAMESRV_ADDR")
    if not namesrv:
        raise ConfigError(
            "say which cluster to benchmark: --namesrv HOST:PORT (or $NAMESRV_ADDR) for a running one, "
            "or --local for a temporary one-broker cluster"
        )
    return namesrv


def bench_main(args: argparse.Namespace) -> int:
    opts = options_from(args)
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:  # client start/stop chatter hides progress
        logging.getLogger("krocket.client").setLevel(logging.WARNING)
    progress = Progress(enabled=not args.quiet)
    pin = opts.pin and system.can_pin()
    if opts.pin and not pin:
        progress.log("--pin ignored: fewer than two usable CPUs")
    opts.pin = pin
    target = bench_target(args)
    local = target is None
    if args.profile_broker and not local:
        raise ConfigError("--profile-broker needs --local")
    if pin:
        system.pin_self()
        progress.log(f"client pinned to CPU {system.CLIENT_CPU}")
    slaves = args.slaves if args.slaves is not None else (1 if opts.replication == "sync" else 0)
    if slaves < 0:
        raise ConfigError("--slaves must not be negative")
    if not local and (args.slaves is not None):
        progress.log("--slaves applies to --local clusters only; ignored")
    run = event_loop_runner(opts.loop)
    signal.signal(signal.SIGTERM, stop_clusters_on_signal)  # stop the local cluster on SIGTERM too
    cluster = None
    failures = 0
    try:
        if local:
            cluster = system.BenchCluster(
                flush=opts.flush,
                replication=opts.replication,
                slaves=slaves,
                pin=pin,
                profile_out=args.profile_broker,
                progress=progress.log,
                broker_args=opts.broker_args,
            )
            RUNNING_CLUSTERS.append(cluster)
            cluster.start()
            namesrv = cluster.namesrv
            broker_pid = cluster.broker_pid
        else:
            namesrv, broker_pid = str(target), None
            if opts.flush != "async":
                progress.log("--flush applies to --local clusters only; recorded as given")
            if opts.idle_spin_micros:
                progress.log("--idle-spin-micros applies to --local clusters only; recorded as given")
        for i in range(args.runs):
            result = run(run_once(namesrv, opts, progress, broker_pid, i))
            result["cluster"] = "local" if local else "remote"
            if local:
                result["slaves"] = slaves
            if result.get("send_errors") or result.get("pull_errors"):
                failures += 1
            if not args.json:
                print(human_line(result), flush=True)
            print(json.dumps(result), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
            RUNNING_CLUSTERS.remove(cluster)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m krocket.cli.bench.command``: the bench alone (the ``krocket`` command has it too)."""
    parser = argparse.ArgumentParser(prog="krocket")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
