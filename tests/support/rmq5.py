"""The official RocketMQ 5.x Python SDK (``rocketmq-python-client==5.1.2``) in its own virtual environment, and
the driver (tests/conformance/rmq5_driver.py) run in it: the SDK cannot share a process with the broker's gRPC
stubs, nor a site-packages with the 4.x client (both are the package ``rocketmq``). scripts/test.sh makes the
environment (``.venv-rmq5``, or ``$KROCKET_RMQ5_VENV``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.cluster import LocalCluster, start_cluster

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "conformance" / "rmq5_driver.py"
SDK_REQUIREMENT = "rocketmq-python-client==5.1.2"


def sdk_python() -> Path:
    """The 5.x SDK environment's interpreter; AssertionError naming how to make it when it is missing."""
    venv = Path(os.environ.get("KROCKET_RMQ5_VENV") or ROOT / ".venv-rmq5")
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import rocketmq.v5"], capture_output=True, check=False)
    if not python.exists() or probe.returncode != 0:
        raise AssertionError(
            f"the RocketMQ 5.x SDK is not installed in {venv}: run scripts/test.sh, or "
            f"`python3 -m venv {venv} && {venv}/bin/pip install {SDK_REQUIREMENT}`"
        )
    return python


def run_sdk(home: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run the driver with ``args`` (and ``env`` added to its environment); its JSON lines. ``home`` keeps the
    SDK's logs (~/logs/rocketmq_python)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", **(env or {})}
    done = subprocess.run(
        [str(sdk_python()), str(DRIVER), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or not lines[-1].get("done"):
        log = sdk_log(home)
        raise AssertionError(
            f"the 5.x SDK driver failed (exit {done.returncode}): {done.stderr[-2000:]}\n"
            f"stdout: {done.stdout[-2000:]}\nSDK log: {log[-3000:]}"
        )
    return lines[:-1]


def sdk_log(home: Path) -> str:
    """What the SDK logged under ``home`` (its own log file), for a failure's message."""
    files = sorted((home / "logs").rglob("*.log")) if (home / "logs").exists() else []
    return "".join(f.read_text(errors="replace") for f in files)


def start_grpc_cluster(data: Path) -> LocalCluster:
    """Two broker groups serving gRPC, no auto-created topics; a half message is checked back after 1 s (every
    0.5 s), so the transaction tests need not wait RocketMQ's minute; consumer retries wait 1 s, 2 s, 3 s ...
    (delay levels from 3 on), not 10 s, 30 s, 1 min."""
    config = data / "broker.yaml"
    config.write_text(
        "transactionTimeOut: 1000\ntransactionCheckInterval: 500\n"
        "messageDelayLevel: 1s 1s 1s 2s 3s 4s 5s 6s 7s 8s 9s 10s 20s 30s 1m 2m 3m 4m\n"
    )
    return start_cluster(
        data / "cluster", namesrvs=1, groups=2, auto_create=False, extra_broker_args=["--config", str(config)]
    )
