"""``krocket local up|status|down``: a cluster of local processes for development and trials."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from krocket.cli.local_cluster import LocalCluster, port_is_free, read_state
from krocket.common import ports
from krocket.common.acl import load_plain_acl
from krocket.common.errors import ConfigError


def register(sub: Any) -> None:
    local = sub.add_parser("local", help="run a cluster of local processes")
    verbs = local.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = verbs.add_parser("up", help="start name servers and broker groups; Ctrl-C stops them")
    up.add_argument("--namesrvs", type=int, default=1, help="number of name servers (default 1)")
    up.add_argument("--groups", type=int, default=2, help="number of broker groups (default 2)")
    up.add_argument("--slaves", type=int, default=1, help="slaves per broker group (default 1)")
    up.add_argument(
        "--replication",
        choices=["sync", "async"],
        default="async",
        help="sync: a send is acked once a slave has it (SYNC_MASTER); default async",
    )
    up.add_argument("--flush", choices=["sync", "async"], default="async", help="flush mode (default async)")
    up.add_argument("--data-dir", default="./.krocket", help="data directory (default ./.krocket)")
    up.add_argument(
        "--namesrv-port",
        type=int,
        default=ports.NAMESRV_PORT,
        help=f"first name server's port (default {ports.NAMESRV_PORT})",
    )
    up.add_argument(
        "--no-auto-create-topic",
        action="store_true",
        help="refuse sends to unknown topics (auto-creation is on by default locally)",
    )
    up.add_argument(
        "--acl",
        default=None,
        metavar="FILE",
        help="plain_acl.yml for every name server and broker (the brokers sign with its first admin account)",
    )
    up.set_defaults(func=local_up)
    status = verbs.add_parser("status", help="show the processes of a running local cluster")
    status.add_argument("--data-dir", default="./.krocket")
    status.set_defaults(func=local_status)
    down = verbs.add_parser("down", help="stop a local cluster started in the background")
    down.add_argument("--data-dir", default="./.krocket")
    down.set_defaults(func=local_down)


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def local_up(args: argparse.Namespace) -> int:
    if args.namesrvs < 1 or args.groups < 1:
        raise ConfigError("--namesrvs and --groups must be at least 1")
    if args.slaves < 0:
        raise ConfigError("--slaves must not be negative")
    if not 0 < args.namesrv_port < 65536:
        raise ConfigError(f"--namesrv-port must be a TCP port, got {args.namesrv_port}")
    if not port_is_free(args.namesrv_port):
        raise ConfigError(f"port {args.namesrv_port} is busy; stop what uses it or pass --namesrv-port")
    data_dir = Path(args.data_dir)
    acl_file = Path(args.acl) if args.acl else None
    cluster = LocalCluster.plan(
        data_dir,
        namesrvs=args.namesrvs,
        groups=args.groups,
        flush=args.flush,
        first_namesrv_port=args.namesrv_port,
        auto_create=not args.no_auto_create_topic,
        slaves=args.slaves,
        replication=args.replication,
        acl_file=acl_file,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"krocket: starting {args.namesrvs} name server(s) and {args.groups} broker group(s) of one master and "
        f"{args.slaves} slave(s) in {data_dir}",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    try:
        cluster.start(_progress)
    except (RuntimeError, ConfigError) as exc:
        cluster.stop()
        raise ConfigError(str(exc).splitlines()[0]) from None
    state = cluster.write_state()
    print(f"krocket: cluster ready in {time.monotonic() - started:.1f}s; state in {state}", file=sys.stderr)
    print(f"NAMESRV_ADDR={cluster.namesrv_addr}", flush=True)
    print(
        f"""
Try it in another shell:
  export NAMESRV_ADDR='{cluster.namesrv_addr}'
  krocket send --topic demo --count 10 'hello krocket'
  krocket consume --topic demo --group demo-consumers --from first --count 10
Press Ctrl-C to stop the cluster.""",
        file=sys.stderr,
        flush=True,
    )
    if acl_file is not None:
        print(_acl_hint(acl_file), file=sys.stderr, flush=True)
    try:
        while not stop.wait(1.0):
            for child in cluster.children:
                if not child.is_running():
                    print(
                        f"krocket: {child.name} exited with code {child.proc.returncode if child.proc else '?'}; "
                        f"log: {child.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
                    stop.set()
                    break
    finally:
        print("krocket: stopping the cluster", file=sys.stderr, flush=True)
        cluster.stop(_progress)
        (data_dir / "cluster.json").unlink(missing_ok=True)
    return 0


def _acl_hint(acl_file: Path) -> str:
    rules = load_plain_acl(acl_file)
    accounts = ", ".join(f"{a.access_key}{' (admin)' if a.admin else ''}" for a in rules.accounts.values())
    admin = rules.first_admin
    return f"""
The ACL of {acl_file} is on: unsigned requests are refused. Sign with an account of that file ({accounts}):
  export KROCKET_ACCESS_KEY='{admin.access_key if admin else "<accessKey>"}' KROCKET_SECRET_KEY='<its secretKey>'
  (or --access-key/--secret-key on each command; RocketMQ clients: set_session_credentials / AclClientRPCHook)"""


def local_status(args: argparse.Namespace) -> int:
    state = read_state(Path(args.data_dir))
    print(f"NAMESRV_ADDR={state['namesrvAddr']}")
    print(f"{'ROLE':8} {'NAME':14} {'BROKER':10} {'ID':>3} {'PID':>8} {'PORT':>6} {'HTTP':>6} STATE")
    for proc in state["processes"]:
        alive = _alive(proc.get("pid"))
        print(
            f"{proc['role']:8} {proc['name']:14} {proc.get('brokerName') or '-':10} "
            f"{proc.get('brokerId') if proc.get('brokerId') is not None else '-':>3} {proc['pid']:>8} "
            f"{proc['port']:>6} {proc['httpPort']:>6} {'running' if alive else 'stopped'}"
        )
    return 0


def local_down(args: argparse.Namespace) -> int:
    state = read_state(Path(args.data_dir))
    pid = state.get("supervisorPid")
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        print(f"krocket: asked the cluster supervisor (pid {pid}) to stop", file=sys.stderr)
        return 0
    for proc in state["processes"]:
        if _alive(proc.get("pid")):
            os.kill(proc["pid"], signal.SIGTERM)
    print("krocket: stopped the cluster's processes", file=sys.stderr)
    return 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
