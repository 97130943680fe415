"""``krocket local up|status|down``: a cluster of local processes for development and trials."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from krocket.cli.local_cluster import LocalCluster, port_is_free, read_state
from krocket.cli.local_control import VERBS, ControlInbox, send_request
from krocket.cli.local_lock import SupervisorBusy, SupervisorLock, holder_pid
from krocket.cli.local_restart import POLICY_NAMES, RestartPolicy
from krocket.cli.local_supervisor import Supervisor
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
        "--no-grpc",
        action="store_true",
        help="serve no gRPC port for RocketMQ 5.x clients (by default each broker serves one, from "
        f"{ports.BROKER_GRPC_PORT} upward)",
    )
    up.add_argument(
        "--acl",
        default=None,
        metavar="FILE",
        help="plain_acl.yml for every name server and broker (the brokers sign with its first admin account)",
    )
    up.add_argument(
        "--broker-restart",
        choices=POLICY_NAMES,
        default=RestartPolicy.NEVER.value,
        help="restart a broker that died: always, on-failure (not after exit code 0) or never (default never, so "
        "failover to the slaves can be watched; `krocket local start NAME` brings it back)",
    )
    up.add_argument(
        "--namesrv-restart",
        choices=POLICY_NAMES,
        default=RestartPolicy.ALWAYS.value,
        help="restart a name server that died (default always); restarts wait 0.5 s, doubling up to 30 s, and "
        "reuse the child's ports and data",
    )
    up.set_defaults(func=local_up)
    status = verbs.add_parser("status", help="show each process of a running local cluster: state, restarts")
    status.add_argument("--data-dir", default="./.krocket")
    status.add_argument("--json", action="store_true", help="the state as JSON")
    status.set_defaults(func=local_status)
    down = verbs.add_parser("down", help="stop a local cluster (its supervisor stops every child)")
    down.add_argument("--data-dir", default="./.krocket")
    down.set_defaults(func=local_down)
    for verb, what in zip(VERBS, ("start a stopped or failed", "stop one", "stop and start one"), strict=True):
        control = verbs.add_parser(verb, help=f"{what} child of the running supervisor (e.g. broker-a-0)")
        control.add_argument("name", metavar="NAME", help="namesrv-0, broker-a-0, broker-a-1, ... (`local status`)")
        control.add_argument("--data-dir", default="./.krocket")
        control.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for it (default 90)")
        control.set_defaults(func=local_control, control_verb=verb)


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def local_up(args: argparse.Namespace) -> int:
    if args.namesrvs < 1 or args.groups < 1:
        raise ConfigError("--namesrvs and --groups must be at least 1")
    if args.slaves < 0:
        raise ConfigError("--slaves must not be negative")
    if not 0 < args.namesrv_port < 65536:
        raise ConfigError(f"--namesrv-port must be a TCP port, got {args.namesrv_port}")
    data_dir = Path(args.data_dir).resolve()
    lock = _lock(data_dir)  # before anything else touches the data directory
    try:
        return _run_cluster(args, data_dir, lock)
    finally:
        lock.release()


def _lock(data_dir: Path) -> SupervisorLock:
    lock = SupervisorLock(data_dir)
    try:
        lock.acquire()
    except SupervisorBusy as busy:
        raise ConfigError(
            f"{busy}; not starting a second one there: `krocket local status --data-dir {data_dir}` shows it, "
            "`krocket local down` stops it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"data directory {data_dir} is not writable: {exc.strerror}") from None
    return lock


def _run_cluster(args: argparse.Namespace, data_dir: Path, lock: SupervisorLock) -> int:
    if not port_is_free(args.namesrv_port):
        raise ConfigError(f"port {args.namesrv_port} is busy; stop what uses it or pass --namesrv-port")
    if lock.stale_pid is not None:
        stop_leftovers(data_dir, lock.stale_pid)
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
        grpc=not args.no_grpc,
    )
    for child in cluster.children:
        child.die_with_parent = True  # a supervisor killed with -9 leaves no orphans holding stores and ports
    inbox = ControlInbox(data_dir)
    supervisor = Supervisor(
        cluster,
        inbox,
        {
            "namesrv": (RestartPolicy(args.namesrv_restart), "--namesrv-restart"),
            "broker": (RestartPolicy(args.broker_restart), "--broker-restart"),
        },
        lambda line: print(line, file=sys.stderr, flush=True),
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
    inbox.open()
    supervisor.write_state()
    state = data_dir / "cluster.json"
    print(f"krocket: cluster ready in {time.monotonic() - started:.1f}s; state in {state}", file=sys.stderr)
    print(f"NAMESRV_ADDR={cluster.namesrv_addr}", flush=True)
    if cluster.grpc_endpoints:
        print(f"GRPC_ENDPOINTS={cluster.grpc_endpoints}", flush=True)
    print(
        f"""
Try it in another shell:
  export NAMESRV_ADDR='{cluster.namesrv_addr}'
  krocket send --topic demo --count 10 'hello krocket'
  krocket consume --topic demo --group demo-consumers --from first --count 10
Press Ctrl-C to stop the cluster; `krocket local status|stop|start|restart NAME` in another shell.""",
        file=sys.stderr,
        flush=True,
    )
    if acl_file is not None:
        print(_acl_hint(acl_file), file=sys.stderr, flush=True)
    try:
        code = supervisor.run(stop)
    finally:
        print("krocket: stopping the cluster", file=sys.stderr, flush=True)
        cluster.stop(_progress)
        (data_dir / "cluster.json").unlink(missing_ok=True)
        inbox.close()
    return code


def stop_leftovers(data_dir: Path, stale_pid: int, timeout: float = 20.0) -> None:
    """Stop the children a supervisor that died (``kill -9``) left running on ``data_dir``, by the pids of its
    ``cluster.json``, so that their stores and ports are free again."""
    try:
        state = read_state(data_dir)
    except (ConfigError, ValueError):
        return
    leftovers = [p["pid"] for p in state.get("processes", []) if _is_our_child(p.get("pid"), data_dir)]
    if not leftovers:
        return
    print(
        f"krocket: the previous supervisor (pid {stale_pid}) is gone; stopping its {len(leftovers)} leftover "
        f"process(es) {', '.join(map(str, leftovers))}",
        file=sys.stderr,
        flush=True,
    )
    for pid in leftovers:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in leftovers:
        _signal(pid, signal.SIGKILL)


def _is_our_child(pid: int | None, data_dir: Path) -> bool:
    """Whether ``pid`` is a krocket process started for ``data_dir`` (not a pid reused by something else)."""
    if not pid or not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"krocket.cli.main" in cmdline and any(str(data_dir).encode() in arg for arg in cmdline)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _acl_hint(acl_file: Path) -> str:
    rules = load_plain_acl(acl_file)
    accounts = ", ".join(f"{a.access_key}{' (admin)' if a.admin else ''}" for a in rules.accounts.values())
    admin = rules.first_admin
    return f"""
The ACL of {acl_file} is on: unsigned requests are refused. Sign with an account of that file ({accounts}):
  export KROCKET_ACCESS_KEY='{admin.access_key if admin else "<accessKey>"}' KROCKET_SECRET_KEY='<its secretKey>'
  (or --access-key/--secret-key on each command; RocketMQ clients: set_session_credentials / AclClientRPCHook)"""


def local_status(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    state = read_state(data_dir)
    supervisor = holder_pid(data_dir)
    if supervisor is None:
        print(
            f"krocket: the supervisor (pid {state.get('supervisorPid')}) is not running; the states below are "
            "what it last wrote",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({**state, "supervisorRunning": supervisor is not None}, indent=2))
        return 0
    print(f"NAMESRV_ADDR={state['namesrvAddr']}")
    if state.get("grpcEndpoints"):
        print(f"GRPC_ENDPOINTS={state['grpcEndpoints']}")
    print(f"SUPERVISOR_PID={supervisor if supervisor is not None else '-'}")
    print(
        f"{'ROLE':8} {'NAME':12} {'BROKER':9} {'ID':>3} {'PID':>8} {'PORT':>6} {'HTTP':>6} {'GRPC':>6} "
        f"{'STATE':10} {'RESTARTS':>8} LAST EXIT"
    )
    for proc in state["processes"]:
        child_state = proc.get("state") or "running"
        if child_state in ("running", "starting") and not _alive(proc.get("pid")):
            child_state = "stopped"
        print(
            f"{proc['role']:8} {proc['name']:12} {proc.get('brokerName') or '-':9} "
            f"{proc.get('brokerId') if proc.get('brokerId') is not None else '-':>3} {proc['pid'] or '-':>8} "
            f"{proc['port']:>6} {proc['httpPort']:>6} {proc.get('grpcPort') or '-':>6} {child_state:10} "
            f"{proc.get('restarts', 0):>8} "
            f"{proc.get('lastExit') or '-'}"
        )
    return 0


def local_down(args: argparse.Namespace, timeout: float = 60.0) -> int:
    data_dir = Path(args.data_dir).resolve()
    state = read_state(data_dir)
    pid = holder_pid(data_dir)
    if pid:
        os.kill(pid, signal.SIGTERM)
        print(f"krocket: asked the cluster supervisor (pid {pid}) to stop", file=sys.stderr, flush=True)
        deadline = time.monotonic() + timeout
        while holder_pid(data_dir) is not None:
            if time.monotonic() > deadline:
                raise ConfigError(f"the supervisor (pid {pid}) did not stop within {timeout:.0f}s")
            time.sleep(0.1)
        print("krocket: the cluster stopped", file=sys.stderr)
        return 0
    for proc in state["processes"]:
        if _is_our_child(proc.get("pid"), data_dir):
            os.kill(proc["pid"], signal.SIGTERM)
    print("krocket: stopped the cluster's processes", file=sys.stderr)
    return 0


def local_control(args: argparse.Namespace) -> int:
    reply = send_request(Path(args.data_dir).resolve(), args.control_verb, args.name, args.timeout)
    if not reply.ok:
        print(f"krocket: error: {reply.message}", file=sys.stderr)
        return 1
    print(f"krocket: {reply.message}")
    return 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
