"""Runs name servers and broker groups as child processes on this machine (``krocket local up``, tests)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krocket.cli.local_restart import describe_exit
from krocket.common import ports
from krocket.common.acl import load_plain_acl
from krocket.common.errors import ConfigError

GROUP_NAMES = "abcdefghijklmnopqrstuvwxyz"
LOCAL_HOST = "127.0.0.1"
"""Every child binds and advertises this host."""


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGTERM the child when the thread that started it ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, before the fork
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return preexec


def start_failure_reason(log_text: str) -> str:
    """The lines of a child's log that say why it ended: its ``krocket: error:`` line, the last line of a
    traceback, or else its last lines."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("krocket: error:")]
    if errors:
        return errors[-1].removeprefix("krocket: error:").strip()
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]
    return " | ".join(lines[-3:]) or "(nothing in its log)"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, first: int, taken: Collection[int] = (), host: str = LOCAL_HOST) -> list[int]:
    """``count`` ports from ``first`` upward that are free now (``port_is_free``) and not in ``taken``.

    Fixed ports below the kernel's ephemeral range (32768 and up on Linux), so the ports ``0`` hands the other
    listeners never take one of them before its child binds it. ``ConfigError`` when the range runs out."""
    found: list[int] = []
    port = first
    while len(found) < count:
        if port >= 65536:
            raise ConfigError(f"no {count} free ports from {first} upward on {host}")
        if port not in taken and port_is_free(port, host):
            found.append(port)
        port += 1
    return found


@dataclass
class ChildProcess:
    """One name server or broker process; restartable on the same ports and data."""

    role: str  # "namesrv" | "broker"
    name: str
    args: list[str]
    data_dir: Path
    log_path: Path
    broker_name: str | None = None
    broker_id: int | None = None
    port: int = 0
    http_port: int = 0
    ha_port: int = 0
    grpc_port: int = 0
    """A broker's gRPC port (RocketMQ 5.x clients), fixed before its first start and kept over restarts; 0: not
    served."""
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    die_with_parent: bool = False
    """SIGTERM from the kernel when the thread that started it ends (the supervisor; Linux only)."""
    log_offset: int = 0
    """Where the log stood when this run started: what comes after it is this run's."""

    @property
    def ports_file(self) -> Path:
        return self.data_dir / f"{self.name}.ports.json"

    @property
    def addr(self) -> str:
        return f"{LOCAL_HOST}:{self.port}"

    @property
    def grpc_addr(self) -> str | None:
        """The gRPC endpoint ``host:port``, or None when it serves none."""
        return f"{LOCAL_HOST}:{self.grpc_port}" if self.grpc_port else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "krocket.cli.main", self.role, *self.args, "--ports-file", str(self.ports_file)]
        if self.port:  # restart on the ports it had
            cmd += ["--listen-port", str(self.port), "--http-port", str(self.http_port)]
        if self.ha_port:
            cmd += ["--ha-port", str(self.ha_port)]
        if self.role == "broker":  # always: its default (8081) would collide with the other brokers'
            cmd += ["--grpc-port", str(self.grpc_port)]
        return cmd

    def start(self) -> None:
        self.ports_file.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.log_offset = log.seek(0, os.SEEK_END)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self._command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent() if self.die_with_parent else None,  # noqa: PLW1509 - one thread spawns
        )
        log.close()

    def read_ports(self) -> bool:
        """Whether this run has written its ports file yet (and then its ports are known)."""
        try:
            bound = json.loads(self.ports_file.read_text())
            self.port, self.http_port = int(bound["port"]), int(bound["http_port"])
            self.ha_port = int(bound.get("ha_port") or 0)
            self.grpc_port = int(bound.get("grpc_port", self.grpc_port) or 0)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def failure(self, when: str = "during start") -> str:
        """One line: how this run ended and why, from its log."""
        code = self.proc.returncode if self.proc is not None else None
        how = describe_exit(code) if code is not None else "ended"
        where = f" {when}" if when else ""
        return f"{self.name} {how}{where}: {start_failure_reason(self.run_log())} (log: {self.log_path})"

    def run_log(self) -> str:
        """What this run wrote to the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_ports(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(self.failure())
            if self.read_ports():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start within {timeout:.0f}s; log:\n{self.tail_log()}")

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def http_json(self, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(f"http://{LOCAL_HOST}:{self.http_port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "brokerName": self.broker_name,
            "brokerId": self.broker_id,
            "pid": self.pid,
            "port": self.port,
            "httpPort": self.http_port,
            "haPort": self.ha_port,
            "grpcPort": self.grpc_port,
            "log": str(self.log_path),
        }


@dataclass
class LocalCluster:
    data_dir: Path
    namesrvs: list[ChildProcess] = field(default_factory=list)
    brokers: list[ChildProcess] = field(default_factory=list)
    grpc: bool = True
    """Whether the brokers serve gRPC: each gets a free port from ``first_grpc_port`` up at its first start."""
    first_grpc_port: int = ports.BROKER_GRPC_PORT
    _state_written: str | None = field(default=None, repr=False, compare=False)

    @property
    def namesrv_addr(self) -> str:
        return ";".join(n.addr for n in self.namesrvs)

    @property
    def grpc_endpoints(self) -> str:
        """The masters' gRPC endpoints, ``host:port;host:port`` (what a 5.x client is given); "" when none."""
        return ";".join(b.grpc_addr for b in self.brokers if b.broker_id in (None, 0) and b.grpc_addr)

    @property
    def children(self) -> list[ChildProcess]:
        return [*self.namesrvs, *self.brokers]

    @classmethod
    def plan(
        cls,
        data_dir: Path,
        namesrvs: int = 1,
        groups: int = 2,
        flush: str = "async",
        first_namesrv_port: int = 0,
        auto_create: bool = True,
        cluster_name: str = "DefaultCluster",
        segment_bytes: int | None = None,
        extra_broker_args: list[str] | None = None,
        slaves: int = 0,
        replication: str = "async",
        acl_file: Path | None = None,
        grpc: bool = True,
    ) -> LocalCluster:
        """With ``acl_file`` (a plain_acl.yml) every name server and broker runs with that ACL, and the brokers
        sign their own traffic with its first admin account. With ``grpc`` every broker serves RocketMQ 5.x
        clients on a port of its own (``assign_grpc_ports``); without, none does."""
        if slaves < 0:
            raise ConfigError("the number of slaves per group must not be negative")
        if namesrvs < 1 or groups < 1:
            raise ConfigError("a local cluster needs at least one name server and one broker group")
        if groups > len(GROUP_NAMES):
            raise ConfigError(f"at most {len(GROUP_NAMES)} broker groups")
        data_dir = data_dir.resolve()
        cluster = cls(data_dir, grpc=grpc)
        logs = data_dir / "logs"
        acl_args: list[str] = []
        broker_acl_args: list[str] = []
        if acl_file is not None:
            acl_path = acl_file.resolve()
            if load_plain_acl(acl_path).first_admin is None:  # ConfigError naming the field when invalid
                raise ConfigError(f"ACL file {acl_path} has no admin account (admin: true) for the brokers to use")
            acl_args = ["--acl", str(acl_path)]
            broker_acl_args = ["--config", str(cls.write_broker_acl_config(data_dir, acl_path))]
        for i in range(namesrvs):
            port = first_namesrv_port if i == 0 and first_namesrv_port else 0
            args = ["--host", LOCAL_HOST, "--listen-port", str(port), "--http-port", "0", *acl_args]
            cluster.namesrvs.append(ChildProcess("namesrv", f"namesrv-{i}", args, data_dir, logs / f"namesrv-{i}.log"))
        flush_type = {"async": "ASYNC_FLUSH", "sync": "SYNC_FLUSH"}[flush]
        master_role = {"async": "ASYNC_MASTER", "sync": "SYNC_MASTER"}[replication]
        for g in range(groups):
            name = f"broker-{GROUP_NAMES[g]}"
            for broker_id in range(slaves + 1):
                args = [
                    "--host",
                    LOCAL_HOST,
                    "--broker-name",
                    name,
                    "--broker-id",
                    str(broker_id),
                    "--cluster",
                    cluster_name,
                    "--store-dir",
                    str(data_dir / name / str(broker_id)),
                    "--flush",
                    flush_type,
                    "--role",
                    master_role if broker_id == 0 else "SLAVE",
                    "--listen-port",
                    "0",
                    "--http-port",
                    "0",
                    "--ha-port",
                    "0",
                    "--auto-create-topic" if auto_create else "--no-auto-create-topic",
                ]
                if segment_bytes:
                    args += ["--segment-bytes", str(segment_bytes)]
                args += broker_acl_args
                args += extra_broker_args or []
                cluster.brokers.append(
                    ChildProcess(
                        "broker",
                        f"{name}-{broker_id}",
                        args,
                        data_dir,
                        logs / f"{name}-{broker_id}.log",
                        broker_name=name,
                        broker_id=broker_id,
                    )
                )
        return cluster

    @staticmethod
    def write_broker_acl_config(data_dir: Path, acl_path: Path) -> Path:
        """The brokers' settings file that turns the ACL on (aclEnable, aclConfigFile)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "broker-acl.yml"
        path.write_text(json.dumps({"aclEnable": True, "aclConfigFile": str(acl_path)}) + "\n")
        return path

    def start(self, progress: Callable[[str], None] = lambda _: None, timeout: float = 60.0) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"data directory {self.data_dir} is not writable: {exc.strerror}") from None
        for ns in self.namesrvs:
            progress(f"starting {ns.name}")
            ns.start()
        for ns in self.namesrvs:
            ns.wait_ports(timeout)
            progress(f"{ns.name} listening on {ns.addr}")
        self.assign_grpc_ports()
        for broker in self.brokers:
            if "--namesrv" not in broker.args:
                broker.args += ["--namesrv", self.namesrv_addr]
            progress(f"starting {broker.name}")
            broker.start()
        for broker in self.brokers:
            broker.wait_ports(timeout)
        self.wait_registered(progress, timeout)

    def assign_grpc_ports(self) -> None:
        """Give each broker without one a free gRPC port (when ``grpc``), picked here rather than by its process
        (``0`` there means "not served") and fixed, so a restart serves on the same port."""
        if not self.grpc:
            return
        pending = [b for b in self.brokers if not b.grpc_port]
        taken = {b.grpc_port for b in self.brokers if b.grpc_port}
        for broker, port in zip(pending, free_ports(len(pending), self.first_grpc_port, taken), strict=True):
            broker.grpc_port = port

    def wait_registered(self, progress: Callable[[str], None] = lambda _: None, timeout: float = 60.0) -> None:
        """Wait until every running broker is registered with every name server."""
        deadline = time.monotonic() + timeout
        pending = {b.name for b in self.brokers if b.is_running()}
        while pending and time.monotonic() < deadline:
            for broker in self.brokers:
                if broker.name not in pending:
                    continue
                if not broker.is_running():
                    raise RuntimeError(broker.failure("before it registered"))
                if self.is_registered(broker):
                    pending.discard(broker.name)
                    role = "master" if broker.broker_id in (None, 0) else "slave, following its master"
                    progress(
                        f"{broker.name} ({role}) serving on {broker.addr}, registered with "
                        f"{len(self.namesrvs)} name server(s)"
                    )
            if pending:
                time.sleep(0.1)
        if pending:
            raise RuntimeError(f"brokers {', '.join(sorted(pending))} did not register within {timeout:.0f}s")

    def is_registered(self, broker: ChildProcess, name_servers: int | None = None) -> bool:
        """Whether ``broker`` says it is registered with ``name_servers`` name servers (default: all of them)
        and, for a slave, follows its master."""
        try:
            info = broker.http_json("/api/v1/broker", timeout=1.0)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        following = broker.broker_id in (None, 0) or bool(info.get("replication", {}).get("master"))
        needed = len(self.namesrvs) if name_servers is None else name_servers
        return len(info.get("nameServers", [])) >= needed and following

    def write_state(self, status: dict[str, dict[str, Any]] | None = None) -> Path:
        """``cluster.json``: every child's :meth:`ChildProcess.describe`, with ``status[name]`` merged in."""
        path = self.data_dir / "cluster.json"
        text = json.dumps(
            {
                "namesrvAddr": self.namesrv_addr,
                "grpcEndpoints": self.grpc_endpoints,
                "dataDir": str(self.data_dir),
                "supervisorPid": os.getpid(),
                "processes": [{**c.describe(), **(status or {}).get(c.name, {})} for c in self.children],
            },
            indent=2,
        )
        if text == self._state_written:
            return path  # nothing changed: the file (and its mtime) stays as it is
        tmp = path.with_name("cluster.json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        self._state_written = text
        return path

    def stop(self, progress: Callable[[str], None] = lambda _: None) -> None:
        for child in reversed(self.children):  # brokers first: they unregister from the name servers
            running = child.is_running()
            if running:
                progress(f"stopping {child.name}")
            code = child.stop()
            if running and code not in (None, 0, -signal.SIGTERM):
                progress(f"{child.name} {describe_exit(code)} while it stopped")

    def child(self, name: str) -> ChildProcess | None:
        return next((c for c in self.children if c.name == name), None)

    def broker(self, name: str) -> ChildProcess:
        for b in self.brokers:
            if b.name == name or b.broker_name == name:
                return b
        raise KeyError(name)


def read_state(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "cluster.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no local cluster state at {path}; start one with `krocket local up`") from None
