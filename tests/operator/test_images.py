"""The images' entry points: parse each Dockerfile's final stage, build the krocket wheel, install it in a
fresh virtual environment and run exactly the command the image runs (ENTRYPOINT + CMD, minus tini).

The broker is started with the broker.yaml the operator generates (ports moved to free ones), so the
operator's config and the broker's config loader are checked against each other."""

from __future__ import annotations

import json
import os
import shlex
import signal
import site
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from krocket.operator import build_brokergroup

from tests.operator.bodies import make_body

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("broker", "namesrv", "operator")


def final_stage(role: str) -> dict[str, object]:
    """Instructions of the last FROM stage: {'FROM': str, 'ENTRYPOINT': [...], 'CMD': [...], ...}."""
    text = (ROOT / f"Dockerfile.{role}").read_text().replace("\\\n", " ")
    stage: dict[str, object] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = {"FROM": rest.strip(), "RUN": []}
        elif word in ("ENTRYPOINT", "CMD", "VOLUME"):
            stage[word] = json.loads(rest)
        elif word == "RUN":
            stage["RUN"].append(rest)  # type: ignore[union-attr]
        else:
            stage[word] = rest.strip()
    return stage


@pytest.mark.parametrize("role", ROLES)
def test_dockerfile_shape(role):
    st = final_stage(role)
    assert str(st["FROM"]).startswith("python:3.11-slim")
    assert st["ENTRYPOINT"] == ["tini", "--", "krocket"], "exec form, tini forwards signals"
    assert st["CMD"][0] == role  # type: ignore[index]
    assert st["USER"] == "10001:10001"
    assert st["VOLUME"] == ["/var/lib/krocket"]
    installs = " ".join(st["RUN"])  # type: ignore[arg-type]
    assert "pip install" in installs and "krocket-*.whl" in installs
    assert ("[operator]" in installs) == (role == "operator")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory) -> Path:
    """A fresh venv with the krocket wheel built from this checkout (dependencies from the system site)."""
    tmp = tmp_path_factory.mktemp("image")
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("krocket-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # Dependencies (kopf, aiohttp, ...) come from the environment running the tests, appended after the new
    # venv's own site-packages, so krocket itself is imported from the installed wheel.
    own_site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(own_site, "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    where = subprocess.run(
        [str(py), "-c", "import krocket.operator.main, krocket.broker, krocket.namesrv as m; print(m.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp,
    ).stdout  # fmt: skip
    assert str(env_dir) in where, f"krocket imported from {where}, not from the wheel"
    return env_dir / "bin"


def image_command(role: str, venv_bin: Path, replace: dict[str, str] | None = None) -> list[str]:
    st = final_stage(role)
    cmd = [*st["ENTRYPOINT"], *st["CMD"]]  # type: ignore[misc]
    assert cmd[:2] == ["tini", "--"]
    cmd = [str(venv_bin / cmd[2]), *cmd[3:]]
    return [(replace or {}).get(a, a) for a in cmd]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _wait_status(url: str, want: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get(url) == want:
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {proc.stdout.read()[-2000:]!r}")
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {want}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("did not stop on SIGTERM") from None


@pytest.fixture(scope="module")
def namesrv(venv_bin, tmp_path_factory) -> Iterator[tuple[int, int]]:
    port, http = _free_port(), _free_port()
    cmd = image_command("namesrv", venv_bin, {"9876": str(port), "9877": str(http)})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path_factory.mktemp("ns"))
    try:
        _wait_status(f"http://127.0.0.1:{http}/healthz", 200, proc)
        yield port, http
    finally:
        if proc.poll() is None:
            assert _stop(proc) == 0


def test_namesrv_image_command_serves_health(namesrv):
    _, http = namesrv
    assert _get(f"http://127.0.0.1:{http}/healthz") == 200
    assert _get(f"http://127.0.0.1:{http}/readyz") == 200


def test_broker_image_command_with_operator_config(venv_bin, namesrv, tmp_path):
    ns_port, _ = namesrv
    group = make_body("BrokerGroup", "broker-a", {"nameServerSetRef": {"name": "ns"}, "clusterName": "c1"})
    cfg = build_brokergroup.broker_config(group)
    http = _free_port()
    cfg.update(
        listenPort=_free_port(),
        haListenPort=_free_port(),
        httpPort=http,
        grpcListenPort=_free_port(),  # not the default 8081, which other tests' brokers may hold
        storePathRootDir=str(tmp_path / "store"),
        namesrvAddr=f"127.0.0.1:{ns_port}",
    )
    conf = tmp_path / "broker.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    cmd = image_command("broker", venv_bin, {"/etc/krocket/broker.yaml": str(conf)})
    env = {**os.environ, "KROCKET_BROKER_ID": "0", "KROCKET_ADVERTISE_HOST": "127.0.0.1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        _wait_status(f"http://127.0.0.1:{http}/healthz", 200, proc)
        _wait_status(f"http://127.0.0.1:{http}/readyz", 200, proc)  # registered with the name server
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/v1/broker", timeout=2) as r:
            info = json.load(r)
        assert (info["clusterName"], info["brokerName"], info["brokerId"]) == ("c1", "broker-a", 0)
    finally:
        if proc.poll() is None:
            assert _stop(proc) == 0, "SIGTERM is a clean stop"


def test_operator_image_command_parses(venv_bin):
    cmd = image_command("operator", venv_bin)
    out = subprocess.run([*cmd[:2], "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in cmd[2:]:
        if flag.startswith("--"):
            assert flag in out.stdout, f"{flag} from Dockerfile.operator is not a `krocket operator` flag"
    assert shlex.join(cmd).endswith("operator --all-namespaces --liveness-port 8080")


def test_the_wheel_runs_the_krocket_command(venv_bin):
    out = subprocess.run([str(venv_bin / "krocket"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for verb in ("local", "namesrv", "broker", "topic", "send", "consume", "operator", "bench"):
        assert verb in out.stdout
    version = subprocess.run(
        [str(venv_bin / "python"), "-c", "import importlib.metadata as m; print(m.version('krocket'))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert version.stdout.strip() == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
