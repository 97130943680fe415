"""Machine-side helpers of ``krocket bench``: CPU pinning, resident memory, the local cluster it may run."""

from __future__ import annotations

import inspect
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from krocket.cli.local_cluster import ChildProcess, LocalCluster
from krocket.common.errors import ConfigError

BROKER_CPU = 0
CLIENT_CPU = 1


def can_pin() -> bool:
    """Pinning needs two usable CPUs: the broker gets CPU 0, the client CPU 1."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        usable = os.sched_getaffinity(0)
    except OSError:
        return False
    return {BROKER_CPU, CLIENT_CPU} <= usable


def pin_self(cpu: int = CLIENT_CPU) -> None:
    """Pin every thread of this process to ``cpu`` (threads started later inherit it)."""
    pin_pid_threads(os.getpid(), {cpu})


def pin_pid_threads(pid: int, cpus: set[int]) -> int:
    """Pin every thread of process ``pid`` to ``cpus``; threads it starts later inherit the mask.
    Returns how many threads were pinned."""
    pinned = 0
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
            pinned += 1
        except OSError:  # the thread ended meanwhile
            pass
    return pinned


def rss_kib(pid: int) -> int | None:
    """Resident memory (VmRSS) of process ``pid`` in KiB, None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads) in seconds, None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU time this process and the broker spend over a phase, per message, in microseconds."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self._client = time.process_time()
        self._broker = cpu_seconds(broker_pid) if broker_pid else None

    def per_msg_us(self, msgs: int) -> dict[str, float | None]:
        client = time.process_time() - self._client
        broker = None
        if self.broker_pid and self._broker is not None:
            now = cpu_seconds(self.broker_pid)
            broker = None if now is None else now - self._broker
        n = max(msgs, 1)
        return {
            "client_us_per_msg": round(client / n * 1e6, 1),
            "broker_us_per_msg": None if broker is None else round(broker / n * 1e6, 1),
        }


def machine_description() -> str:
    """One line: CPU model, CPU count, memory, kernel and Python."""
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} x {model}{mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()} ({sys.implementation.name})"
    )


def supports_slaves() -> bool:
    return "slaves" in inspect.signature(LocalCluster.plan).parameters


def _plan(
    data_dir: Path, flush: str, replication: str, slaves: int, broker_args: list[str] | None = None
) -> LocalCluster:
    """One name server and one broker group (a master and ``slaves`` slaves) with auto-created topics; every
    broker also gets ``broker_args`` (``krocket broker`` flags)."""
    if supports_slaves():
        return LocalCluster.plan(
            data_dir,
            namesrvs=1,
            groups=1,
            flush=flush,
            auto_create=True,
            slaves=slaves,
            replication=replication,
            extra_broker_args=broker_args,
        )
    if slaves or replication != "async":
        raise ConfigError("this krocket's local cluster has no slaves yet; use --replication async")
    return LocalCluster.plan(data_dir, namesrvs=1, groups=1, flush=flush, auto_create=True)


class _ProfiledChild(ChildProcess):
    """A broker process run under cProfile: ``python -m cProfile -o PATH -m krocket.cli.main broker ...``.
    The broker stops cleanly on SIGTERM, so cProfile writes its stats when the cluster stops."""

    def _command(self) -> list[str]:
        cmd = super()._command()
        out = self.extra["profile_out"]
        return [cmd[0], "-m", "cProfile", "-o", str(out), *cmd[1:]]


class BenchCluster:
    """A one-broker local cluster in a temporary directory, started and stopped by the bench."""

    def __init__(
        self,
        flush: str = "async",
        replication: str = "async",
        slaves: int = 0,
        pin: bool = False,
        profile_out: str | None = None,
        data_dir: str | None = None,
        progress: Any = None,
        broker_args: list[str] | None = None,
    ) -> None:
        self.flush = flush
        self.replication = replication
        self.pin = pin
        self.profile_out = profile_out
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="krocket-bench-"))
        self._progress = progress or (lambda _m: None)
        self.slaves = slaves
        self.cluster = _plan(self.data_dir, flush, replication, slaves, broker_args)
        if profile_out:
            b = self.cluster.brokers[0]
            profiled = _ProfiledChild(
                b.role, b.name, b.args, b.data_dir, b.log_path, broker_name=b.broker_name, broker_id=b.broker_id
            )
            profiled.extra["profile_out"] = Path(profile_out).resolve()
            self.cluster.brokers[0] = profiled

    @property
    def namesrv(self) -> str:
        return self.cluster.namesrv_addr

    @property
    def broker_pid(self) -> int | None:
        """The master's pid."""
        return self.cluster.brokers[0].pid

    def start(self) -> None:
        self._progress(
            f"starting a local cluster in {self.data_dir} (flush {self.flush}, replication {self.replication}, "
            f"{self.slaves} slave(s))"
        )
        try:
            self.cluster.start(self._progress)
        except BaseException:
            self.stop()
            raise
        if self.pin:
            for child in self.cluster.children:
                if child.pid is not None:
                    pin_pid_threads(child.pid, {BROKER_CPU})
            self._progress(f"pinned name server and broker to CPU {BROKER_CPU}")

    def stop(self) -> None:
        try:
            self.cluster.stop(self._progress)
        finally:
            if self._own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BenchCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
