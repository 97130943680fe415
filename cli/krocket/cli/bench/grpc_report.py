"""``krocket bench grpc``'s pure parts: which clients a run measures, the SDK's interpreter, the driver's JSON lines
read back, and one result line per run in the shape of the other bench rows (``"system": "krocket"``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krocket.cli.bench import stats
from krocket.common.errors import ConfigError

SDK_REQUIREMENT = "rocketmq-python-client==5.1.2"
SDK_VENV_ENV = "KROCKET_RMQ5_VENV"
DEFAULT_SDK_VENV = ".venv-rmq5"
DRIVER = Path(__file__).with_name("grpc_sdk_driver.py")

CLIENTS = ("sdk-seq", "sdk-threads", "sdk-async", "stubs-window")
"""sdk-seq: ``producer.send`` one at a time, one thread; sdk-threads: the same in ``--threads`` threads;
sdk-async: ``send_async`` futures, ``--window`` in flight; stubs-window: krocket's own grpc.aio stubs,
``--stub-window`` SendMessage calls in flight (the broker's gRPC ceiling without the SDK)."""


@dataclass(frozen=True)
class Variant:
    """One measured client setting: its row name and how the driver (or the stub client) runs it."""

    client: str  # one of CLIENTS
    threads: int = 1
    window: int = 1

    @property
    def name(self) -> str:
        if self.client == "sdk-threads":
            return f"grpc-sdk-threads{self.threads}"
        return f"grpc-{self.client}"

    @property
    def sdk(self) -> bool:
        return self.client.startswith("sdk-")

    @property
    def send(self) -> str:
        """The SDK's send call: "sync" (``send``) or "async" (``send_async``); the stub client's is "async"."""
        return "sync" if self.client in ("sdk-seq", "sdk-threads") else "async"

    @property
    def inflight(self) -> int:
        """Sends in flight at most."""
        return self.threads if self.send == "sync" else self.window


def parse_clients(text: str) -> list[str]:
    """``--clients a,b``: known names, in the order given, without repeats; ``all`` = every client."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if names == ["all"]:
        return list(CLIENTS)
    unknown = [c for c in names if c not in CLIENTS]
    if unknown or not names:
        raise ConfigError(f"--clients: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(CLIENTS)}")
    return list(dict.fromkeys(names))


def variants(clients: list[str], threads: int, window: int, stub_window: int) -> list[Variant]:
    out = []
    for c in clients:
        if c == "sdk-threads":
            out.append(Variant(c, threads=threads))
        elif c == "sdk-async":
            out.append(Variant(c, window=window))
        elif c == "stubs-window":
            out.append(Variant(c, window=stub_window))
        else:
            out.append(Variant(c))
    return out


def how_to_make_venv(venv: Path) -> str:
    return f"python3 -m venv {venv} && {venv}/bin/pip install {SDK_REQUIREMENT}"


def sdk_python_path(given: str | None, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """``--sdk-python``, else ``$KROCKET_RMQ5_VENV/bin/python``, else ``./.venv-rmq5/bin/python``."""
    if given:
        return Path(given)
    venv = (os.environ if env is None else env).get(SDK_VENV_ENV)
    base = Path(venv) if venv else (cwd or Path.cwd()) / DEFAULT_SDK_VENV
    return base / "bin" / "python"


def missing_sdk_message(python: Path, why: str) -> str:
    venv = python.parent.parent if python.parent.name == "bin" else Path(DEFAULT_SDK_VENV)
    return (
        f"the RocketMQ 5.x SDK ({SDK_REQUIREMENT}) is not usable with {python}: {why}; make its own environment "
        f"with `{how_to_make_venv(venv)}` and pass --sdk-python {venv}/bin/python (or set ${SDK_VENV_ENV}={venv})"
    )


@dataclass
class DriverReport:
    """What the driver printed: its phases' figures, an error, and whether it finished."""

    ready: dict[str, Any] = field(default_factory=dict)
    produce: dict[str, Any] | None = None
    consume: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and self.produce is not None


def parse_driver_output(text: str) -> DriverReport:
    """The driver's JSON lines (anything else on stdout is ignored)."""
    report = DriverReport()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "ready" in obj:
            report.ready = dict(obj["ready"])
        if "produce" in obj:
            report.produce = dict(obj["produce"])
        if "consume" in obj:
            report.consume = dict(obj["consume"])
        if "error" in obj:
            report.error = str(obj["error"])
        if obj.get("done"):
            report.done = True
    return report


def per_msg_us(cpu_s: float | None, msgs: int) -> float | None:
    return None if cpu_s is None else round(cpu_s / max(msgs, 1) * 1e6, 1)


def cpu_part(phase: Mapping[str, Any] | None, msgs: int) -> dict[str, Any]:
    """CPU per message of the client process and the broker; for the SDK also the client's split by thread
    group (``threads_us_per_msg``: io_loop, callers, callbacks, decode, other; see the driver's ``thread_group``)."""
    phase = phase or {}
    out: dict[str, Any] = {
        "client_us_per_msg": per_msg_us(phase.get("client_cpu_s"), msgs),
        "broker_us_per_msg": per_msg_us(phase.get("broker_cpu_s"), msgs),
    }
    threads = phase.get("threads_cpu_s")
    if threads:
        out["threads_us_per_msg"] = {k: per_msg_us(v, msgs) for k, v in threads.items()}
    return out


def phase_result(variant: Variant, produce: Mapping[str, Any], consume: Mapping[str, Any] | None) -> dict[str, Any]:
    """The produce and consume objects, CPU per message and error counts of one run, from the raw figures of
    either client: ``produce`` has msgs, secs, latencies_us (per send), errors, first_error and the CPU
    seconds; ``consume`` msgs (deliveries), acked, missing, secs, errors, first_error and the CPU seconds."""
    sent = int(produce.get("msgs") or 0)
    latencies_s = [us / 1e6 for us in produce.get("latencies_us") or []]
    out: dict[str, Any] = {"produce": stats.produce_summary(latencies_s, sent, float(produce.get("secs") or 0))}
    cpu = {"produce": cpu_part(produce, sent)}
    if consume is not None:
        acked = int(consume.get("acked") or 0)
        out["consume"] = stats.consume_summary(acked, float(consume.get("secs") or 0))
        out["deliveries"] = int(consume.get("msgs") or 0)
        out["missing"] = int(consume.get("missing") or 0)
        cpu["consume"] = cpu_part(consume, acked)
        if consume.get("errors"):
            out["receive_errors"] = int(consume["errors"])
            out["first_receive_error"] = consume.get("first_error")
    else:
        out["consume"] = stats.consume_summary(0, 0.0)
    if produce.get("errors"):
        out["send_errors"] = int(produce["errors"])
        out["first_error"] = produce.get("first_error")
    out["cpu"] = cpu
    return out


def result_line(variant: Variant, figures: dict[str, Any], *, msg_bytes: int, **extra: Any) -> dict[str, Any]:
    """One run's JSON object: ``figures`` from ``phase_result``; ``mode`` is the row's name (grpc-sdk-seq ...)."""
    figures = dict(figures)
    produce, consume = figures.pop("produce"), figures.pop("consume")
    return stats.result_line(
        variant.name,
        produce,
        consume,
        msg_bytes=msg_bytes,
        window=variant.inflight,
        verb="grpc",
        client=variant.client,
        send=variant.send,
        threads=variant.threads,
        **extra,
        **figures,
    )


def failed(line: Mapping[str, Any]) -> bool:
    """Whether a run's line says something went wrong: failed calls, or messages sent but never received."""
    return bool(line.get("send_errors") or line.get("receive_errors") or line.get("missing") or line.get("error"))


def human_line(r: Mapping[str, Any]) -> str:
    p, c = r["produce"], r["consume"]
    cpu = (r.get("cpu") or {}).get("produce") or {}
    text = (
        f"krocket grpc {r['mode']}: send {p['msgs']} msgs in {p['secs']} s = {p['msgs_per_s']} msg/s "
        f"(p50 {p['p50_us']} us, p99 {p['p99_us']} us; client {cpu.get('client_us_per_msg')} us, broker "
        f"{cpu.get('broker_us_per_msg')} us CPU/msg); receive+ack {c['msgs']} msgs = {c['msgs_per_s']} msg/s"
    )
    if r.get("missing"):
        text += f"; {r['missing']} never received"
    if r.get("error"):
        text += f"; error: {r['error']}"
    return text
