"""The control channel of ``krocket local up``: request and reply files in ``<data dir>/control``.

``krocket local start|stop|restart NAME`` writes ``<id>.request.json``; the supervisor takes it on its next
turn (a fifth of a second) and writes ``<id>.reply.json`` once the child is where it was asked to be. The
client checks the supervisor's lock before it asks and while it waits, so a dead supervisor is one clear
error, never a hang.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krocket.cli.local_lock import holder_pid
from krocket.common.errors import ConfigError

CONTROL_DIR = "control"
VERBS = ("start", "stop", "restart")
REQUEST_SUFFIX = ".request.json"
REPLY_SUFFIX = ".reply.json"


@dataclass(frozen=True)
class ControlRequest:
    id: str
    verb: str
    name: str


@dataclass(frozen=True)
class ControlReply:
    ok: bool
    message: str


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


class ControlInbox:
    """The supervisor's side: requests in, replies out."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / CONTROL_DIR

    def open(self) -> None:
        """Create the directory, dropping requests a previous supervisor left unanswered."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.iterdir():
            leftover.unlink(missing_ok=True)

    def take(self) -> list[ControlRequest]:
        requests = []
        for path in sorted(self.dir.glob(f"*{REQUEST_SUFFIX}")):
            request_id = path.name.removesuffix(REQUEST_SUFFIX)
            try:
                body = json.loads(path.read_text())
                requests.append(ControlRequest(request_id, str(body["verb"]), str(body["name"])))
            except (OSError, ValueError, KeyError):
                self.reply(request_id, ControlReply(False, f"unreadable control request {path.name}"))
            path.unlink(missing_ok=True)
        return requests

    def reply(self, request_id: str, reply: ControlReply) -> None:
        _write_atomically(self.dir / f"{request_id}{REPLY_SUFFIX}", {"ok": reply.ok, "message": reply.message})

    def close(self) -> None:
        for path in self.dir.glob("*"):
            path.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass


def _no_supervisor(data_dir: Path) -> ConfigError:
    return ConfigError(f"no local cluster supervisor is running on {data_dir}; start one with `krocket local up`")


def send_request(data_dir: Path, verb: str, name: str, timeout: float = 90.0) -> ControlReply:
    """Ask the supervisor running on ``data_dir`` to ``verb`` the child ``name`` and wait for its answer."""
    pid = holder_pid(data_dir)
    if pid is None:
        raise _no_supervisor(data_dir)
    control = data_dir / CONTROL_DIR
    if not control.is_dir():
        raise ConfigError(f"the supervisor (pid {pid}) on {data_dir} has no control directory {control}")
    request_id = uuid.uuid4().hex
    request = control / f"{request_id}{REQUEST_SUFFIX}"
    reply_path = control / f"{request_id}{REPLY_SUFFIX}"
    _write_atomically(request, {"verb": verb, "name": name})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                body = json.loads(reply_path.read_text())
            except (OSError, ValueError):
                if holder_pid(data_dir) is None:
                    raise ConfigError(f"the supervisor (pid {pid}) exited before it answered") from None
                time.sleep(0.1)
                continue
            return ControlReply(bool(body.get("ok")), str(body.get("message", "")))
        raise ConfigError(f"the supervisor (pid {pid}) did not answer `{verb} {name}` within {timeout:.0f}s")
    finally:
        request.unlink(missing_ok=True)
        reply_path.unlink(missing_ok=True)
