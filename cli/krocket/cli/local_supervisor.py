"""The loop of ``krocket local up`` once the cluster is ready: a small StatefulSet controller.

Each turn it notices a child that died (one line: name, how it ended, its log), restarts it by its restart
policy with a capped exponential backoff on the same ports and data, and serves the control requests of
``krocket local start|stop|restart NAME``. Every change is written to ``cluster.json`` for ``local status``.
Everything runs on the calling (main) thread: the children die with the thread that started them.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from krocket.cli.local_cluster import ChildProcess, LocalCluster
from krocket.cli.local_control import ControlInbox, ControlReply, ControlRequest
from krocket.cli.local_restart import (
    GIVE_UP_AFTER,
    STABLE_AFTER_S,
    RestartPolicy,
    backoff_s,
    describe_exit,
)

TURN_S = 0.2
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass
class Supervised:
    """One child and what the supervisor knows about it."""

    child: ChildProcess
    policy: RestartPolicy
    policy_flag: str
    state: ChildState = ChildState.RUNNING
    restarts: int = 0
    last_exit: str | None = None
    consecutive_failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float = 0.0
    stop_deadline: float = 0.0
    start_after_stop: bool = False
    waiting: list[str] = field(default_factory=list)
    """Control requests answered once this child is running (or has failed to)."""

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "restarts": self.restarts,
            "lastExit": self.last_exit,
            "restartPolicy": self.policy.value,
        }


class Supervisor:
    def __init__(
        self,
        cluster: LocalCluster,
        inbox: ControlInbox,
        policies: dict[str, tuple[RestartPolicy, str]],
        report: Callable[[str], None],
    ) -> None:
        """``policies``: per role (``namesrv``, ``broker``) the restart policy and the flag that set it."""
        self.cluster = cluster
        self.inbox = inbox
        self.report = report
        self.children = {c.name: Supervised(c, *policies[c.role]) for c in cluster.children}
        self.failure: str | None = None
        """Why the supervisor gave up (a child that should run but cannot start); its exit is then 1."""

    def write_state(self) -> None:
        self.cluster.write_state({name: s.status() for name, s in self.children.items()})

    def run(self, stop: threading.Event) -> int:
        """Supervise until ``stop`` is set (exit 0) or a child cannot be kept running (exit 1)."""
        self.write_state()
        while not stop.wait(TURN_S):
            if self.turn(time.monotonic()):
                self.write_state()
            if self.failure is not None:
                self.report(f"krocket: stopping: {self.failure}")
                return 1
        return 0

    def turn(self, now: float) -> bool:
        """One look at every child and at the control requests; whether anything changed."""
        changed = False
        for supervised in self.children.values():
            changed |= self._look_at(supervised, now)
        for request in self.inbox.take():
            changed |= self._serve(request, now)
        return changed

    def _look_at(self, s: Supervised, now: float) -> bool:
        child = s.child
        if s.state in (ChildState.STARTING, ChildState.RUNNING) and not child.is_running():
            self._died(s, now)
            return True
        if s.state is ChildState.STARTING:
            if self._is_ready(child):
                s.state = ChildState.RUNNING
                self._answer(s, ControlReply(True, f"{child.name} is running (pid {child.pid}) on {child.addr}"))
                return True
            if now - s.started_at > START_TIMEOUT_S:
                child.kill()
                self._died(s, now, f"did not become ready within {START_TIMEOUT_S:.0f}s")
                return True
        elif s.state is ChildState.STOPPING:
            if child.is_running() and now < s.stop_deadline:
                return False
            child.kill()
            s.last_exit = describe_exit(child.proc.returncode) if child.proc is not None else s.last_exit
            if s.start_after_stop:
                self._start(s, now)
            else:
                s.state = ChildState.STOPPED
                self._answer(s, ControlReply(True, f"{child.name} stopped ({s.last_exit})"))
            return True
        elif s.state is ChildState.RESTARTING and now >= s.restart_at:
            self._start(s, now)
            return True
        return False

    def _is_ready(self, child: ChildProcess) -> bool:
        if not child.read_ports():
            return False
        if child.role != "broker":
            return True
        serving = sum(1 for n in self.cluster.namesrvs if self.children[n.name].state is ChildState.RUNNING)
        return self.cluster.is_registered(child, name_servers=serving)

    def _start(self, s: Supervised, now: float) -> None:
        s.child.start()
        s.restarts += 1
        s.started_at = now
        s.state = ChildState.STARTING
        s.start_after_stop = False

    def _died(self, s: Supervised, now: float, why: str | None = None) -> None:
        child = s.child
        code = child.proc.returncode if child.proc is not None and child.proc.returncode is not None else -1
        s.last_exit = why or describe_exit(code)
        was_ready = s.state is ChildState.RUNNING
        ran_long = was_ready and now - s.started_at >= STABLE_AFTER_S
        s.consecutive_failures = 1 if ran_long else s.consecutive_failures + 1
        reason = child.failure("" if was_ready else "during start")
        self._answer(s, ControlReply(False, reason))
        if not s.policy.restarts(code):
            s.state = ChildState.STOPPED if code == 0 else ChildState.FAILED
            self.report(
                f"krocket: {child.name} {s.last_exit}; log: {child.log_path}; not restarted ({s.policy_flag} "
                f"{s.policy.value}; `krocket local start {child.name}` starts it again)"
            )
            return
        if s.consecutive_failures >= GIVE_UP_AFTER:
            s.state = ChildState.FAILED
            self.failure = f"{reason}; gave up after {s.consecutive_failures} failed starts in a row"
            self.report(f"krocket: {child.name} {s.last_exit}; log: {child.log_path}; not restarted again")
            return
        delay = backoff_s(s.consecutive_failures)
        s.state = ChildState.RESTARTING
        s.restart_at = now + delay
        self.report(
            f"krocket: {child.name} {s.last_exit}; log: {child.log_path}; restarting in {delay:.1f}s "
            f"({s.policy_flag} {s.policy.value})"
        )

    def _answer(self, s: Supervised, reply: ControlReply) -> None:
        for request_id in s.waiting:
            self.inbox.reply(request_id, reply)
        s.waiting.clear()

    def _serve(self, request: ControlRequest, now: float) -> bool:
        s = self.children.get(request.name)
        if s is None:
            names = ", ".join(self.children)
            self.inbox.reply(request.id, ControlReply(False, f"no child {request.name!r}; the children: {names}"))
            return False
        child = s.child
        if request.verb == "stop":
            if s.state in (ChildState.STOPPED, ChildState.FAILED, ChildState.RESTARTING):
                s.state = ChildState.STOPPED if s.state is ChildState.RESTARTING else s.state
                self.inbox.reply(request.id, ControlReply(True, f"{child.name} is not running ({s.state.value})"))
                return True
            s.waiting.append(request.id)
            self._stop(s, now, start_after=False)
            return True
        if request.verb not in ("start", "restart"):
            self.inbox.reply(request.id, ControlReply(False, f"unknown verb {request.verb!r}"))
            return False
        s.waiting.append(request.id)
        s.consecutive_failures = 0
        if s.state in (ChildState.STOPPED, ChildState.FAILED, ChildState.RESTARTING):
            self._start(s, now)
        elif request.verb == "restart" and s.state in (ChildState.RUNNING, ChildState.STARTING):
            self._stop(s, now, start_after=True)
        elif s.state is ChildState.STOPPING:
            s.start_after_stop = True
        elif s.state is ChildState.RUNNING:
            self._answer(s, ControlReply(True, f"{child.name} is already running (pid {child.pid})"))
        return True

    def _stop(self, s: Supervised, now: float, start_after: bool) -> None:
        if s.child.proc is not None and s.child.proc.poll() is None:
            s.child.proc.terminate()
        s.state = ChildState.STOPPING
        s.stop_deadline = now + STOP_TIMEOUT_S
        s.start_after_stop = start_after
