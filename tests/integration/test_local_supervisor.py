"""``krocket local up`` as a supervisor: a dead child is reported and the rest keep running, restart policies,
``local start|stop|restart NAME`` and ``local status``, and one supervisor per data directory."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import ConsumeStatus, Message, Producer, PushConsumer

from tests.support.cluster import wait_until

KROCKET = [sys.executable, "-m", "krocket.cli.main"]


def krocket(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KROCKET, *args], capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Up:
    """A ``krocket local up`` process and the lines of its stderr, read as they come."""

    def __init__(self, data: Path, *flags: str) -> None:
        self.data = data
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [*KROCKET, "local", "up", "--groups", "1", "--slaves", "1", "--namesrv-port", str(self.port),
             "--data-dir", str(data), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        assert self.proc.stderr is not None and self.proc.stdout is not None
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr or ()), daemon=True).start()
        ready = self.proc.stdout.readline()  # blocks until the cluster is ready
        assert ready.strip() == f"NAMESRV_ADDR=127.0.0.1:{self.port}", (ready, self.lines)
        self.namesrv = f"127.0.0.1:{self.port}"
        self.grpc_line = self.proc.stdout.readline().strip()  # GRPC_ENDPOINTS=..., right after

    def state(self) -> dict[str, dict]:
        processes = json.loads((self.data / "cluster.json").read_text())["processes"]
        return {p["name"]: p for p in processes}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    cluster = Up(tmp_path_factory.mktemp("supervised") / "krocket")
    try:
        yield cluster
    finally:
        cluster.stop()


def _snapshot(data: Path) -> dict[str, tuple[bytes, int]]:
    files = [data / "cluster.json", data / "supervisor.pid", *data.glob("*.ports.json"), *data.glob("logs/*")]
    return {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


def test_a_second_up_on_a_data_dir_in_use_refuses_and_touches_nothing(up: Up) -> None:
    before = _snapshot(up.data)
    assert len(before) == 8  # cluster.json, the pid file, three ports files, three logs
    second = subprocess.run(
        [*KROCKET, "local", "up", "--namesrv-port", str(_free_port()), "--data-dir", str(up.data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 2
    assert f"in use by a running local cluster supervisor (pid {up.proc.pid}" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert _snapshot(up.data) == before


def test_every_broker_gets_its_own_grpc_port_and_up_prints_the_masters_endpoints(up: Up) -> None:
    state = up.state()
    brokers = {name: p for name, p in state.items() if p["role"] == "broker"}
    grpc_ports = [p["grpcPort"] for p in brokers.values()]
    assert all(isinstance(port, int) and 0 < port < 32768 for port in grpc_ports), grpc_ports
    taken = [p[key] for p in state.values() for key in ("port", "httpPort", "haPort") if p[key]]
    assert len(set(grpc_ports)) == len(grpc_ports) and not set(grpc_ports) & set(taken), state
    assert state["namesrv-0"]["grpcPort"] == 0
    master = brokers["broker-a-0"]["grpcPort"]
    assert re.fullmatch(r"GRPC_ENDPOINTS=127\.0\.0\.1:\d+(;127\.0\.0\.1:\d+)*", up.grpc_line), up.grpc_line
    assert up.grpc_line == f"GRPC_ENDPOINTS=127.0.0.1:{master}"  # the masters only: one group here
    cluster = json.loads((up.data / "cluster.json").read_text())
    assert cluster["grpcEndpoints"] == f"127.0.0.1:{master}"
    status = krocket("local", "status", "--data-dir", str(up.data))
    assert f"GRPC_ENDPOINTS=127.0.0.1:{master}" in status.stdout.splitlines(), status.stdout
    assert re.search(rf"broker-a-0 .* {master} +running", status.stdout), status.stdout


def test_the_master_killed_the_slave_serves_then_local_start_brings_it_back(up: Up) -> None:
    master = up.state()["broker-a-0"]

    async def send(tag: str, n: int) -> list[str]:
        async with Producer(f"sup-producer-{tag}", up.namesrv) as producer:
            return [(await producer.send(Message("Supervised", f"{tag}-{i}".encode()))).msg_id for i in range(n)]

    before = asyncio.run(send("before", 20))

    def slave_caught_up() -> bool:
        offsets = []
        for name in ("broker-a-0", "broker-a-1"):
            offsets.append(_http_json(up.state()[name]["httpPort"], "/api/v1/broker")["maxPhyOffset"])
        return offsets[0] == offsets[1]

    wait_until(slave_caught_up, 20, 0.1, "the slave to have every message")
    os.kill(master["pid"], signal.SIGKILL)
    wait_until(lambda: any("broker-a-0 killed by SIGKILL" in line for line in up.lines), 20, 0.1, "the report")
    report = next(line for line in up.lines if "broker-a-0 killed by SIGKILL" in line)
    assert report.strip() == (
        f"krocket: broker-a-0 killed by SIGKILL; log: {up.data.resolve() / 'logs' / 'broker-a-0.log'}; not restarted "
        "(--broker-restart never; `krocket local start broker-a-0` starts it again)"
    )
    assert up.proc.poll() is None
    status = krocket("local", "status", "--data-dir", str(up.data))
    assert re.search(r"broker-a-0 .* failed +0 killed by SIGKILL", status.stdout), status.stdout
    assert re.search(r"broker-a-1 .* running +0 -", status.stdout), status.stdout

    seen: set[str] = set()

    async def consume_from_the_slave() -> None:
        consumer = PushConsumer("sup-group", up.namesrv, consume_from="FIRST")
        consumer.subscribe("Supervised")

        def listener(messages: list) -> ConsumeStatus:
            seen.update(m.msg_id for m in messages)
            return ConsumeStatus.SUCCESS

        consumer.register_listener(listener)
        await consumer.start()
        try:
            deadline = time.monotonic() + 40
            while not set(before) <= seen and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await consumer.shutdown()

    asyncio.run(consume_from_the_slave())
    assert set(before) <= seen, f"read {len(seen & set(before))} of {len(before)} from the slave"

    started = krocket("local", "start", "broker-a-0", "--data-dir", str(up.data))
    assert started.returncode == 0, started.stderr
    back = up.state()["broker-a-0"]
    assert (back["state"], back["restarts"], back["lastExit"]) == ("running", 1, "killed by SIGKILL")
    assert back["pid"] != master["pid"] and back["port"] == master["port"]
    assert back["grpcPort"] == master["grpcPort"]  # a restart serves on the same gRPC port
    assert len(asyncio.run(send("after", 3))) == 3  # the master takes sends again
    status = krocket("local", "status", "--data-dir", str(up.data))
    assert re.search(r"broker-a-0 .* running +1 killed by SIGKILL", status.stdout), status.stdout


def test_a_killed_name_server_comes_back_on_its_port(up: Up) -> None:
    namesrv = up.state()["namesrv-0"]
    os.kill(namesrv["pid"], signal.SIGKILL)

    def back() -> bool:
        now = up.state()["namesrv-0"]
        return now["state"] == "running" and now["pid"] != namesrv["pid"]

    wait_until(back, 30, 0.1, "the name server restarted")
    assert any("namesrv-0 killed by SIGKILL" in line and "restarting in 0.5s" in line for line in up.lines)
    assert up.state()["namesrv-0"]["port"] == namesrv["port"] == up.port
    with socket.create_connection(("127.0.0.1", up.port), timeout=5):
        pass
    assert up.state()["namesrv-0"]["restarts"] == 1


def test_local_stop_and_a_dead_supervisor_is_a_clear_error(up: Up) -> None:
    stopped = krocket("local", "stop", "broker-a-1", "--data-dir", str(up.data))
    assert stopped.returncode == 0 and "broker-a-1 stopped" in stopped.stdout, stopped.stderr
    assert up.state()["broker-a-1"]["state"] == "stopped"
    unknown = krocket("local", "restart", "broker-z-0", "--data-dir", str(up.data))
    assert unknown.returncode == 1 and "no child 'broker-z-0'" in unknown.stderr
    children = [p["pid"] for p in up.state().values() if p["state"] == "running"]
    os.kill(up.proc.pid, signal.SIGKILL)  # the supervisor: its children go with it, its lock is stale
    up.proc.wait(10)
    wait_until(lambda: not any(_alive(pid) for pid in children), 30, 0.1, "the children to follow the supervisor")
    gone = krocket("local", "start", "broker-a-1", "--data-dir", str(up.data))
    assert gone.returncode == 2 and "no local cluster supervisor is running" in gone.stderr


def test_a_stale_lock_does_not_block_the_next_up_and_sigterm_is_a_clean_stop(up: Up) -> None:
    assert up.proc.poll() is not None, "runs after the supervisor was killed"
    assert (up.data / "supervisor.pid").read_text().strip() == str(up.proc.pid)  # left behind by kill -9
    again = Up(up.data)
    try:
        assert json.loads((up.data / "cluster.json").read_text())["supervisorPid"] == again.proc.pid
    finally:
        assert again.stop() == 0
    assert not (up.data / "cluster.json").exists() and not (up.data / "supervisor.pid").exists()


def test_a_name_server_that_cannot_come_back_stops_the_supervisor_with_exit_1(tmp_path: Path) -> None:
    up = Up(tmp_path / "krocket")
    try:
        os.kill(up.state()["namesrv-0"]["pid"], signal.SIGKILL)
        with socket.socket() as thief:  # takes the port before the restart (0.5 s later)
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            wait_until(lambda: _bound(thief, up.port), 1.0, 0.01, "the killed name server's port to be free")
            thief.listen()
            assert up.proc.wait(60) == 1
    finally:
        up.stop()
    assert any("restarting in 8.0s" in line for line in up.lines), up.lines
    stopping = next(line for line in up.lines if line.startswith("krocket: stopping: "))
    assert "namesrv-0 exited with code" in stopping and "gave up after 6 failed starts in a row" in stopping
    assert not (up.data / "cluster.json").exists()


def test_local_up_sh_installs_only_when_the_venv_or_pyproject_toml_changed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pip_log = tmp_path / "pip.log"
    (venv / "bin" / "python").write_text(
        f'#!/usr/bin/env bash\nif [ "$2" = pip ]; then echo "$@" >> {pip_log}; exit 0; fi\nexec {sys.executable} "$@"\n'
    )
    (venv / "bin" / "krocket").write_text('#!/usr/bin/env bash\necho "krocket $*"\n')
    for exe in (venv / "bin").iterdir():
        exe.chmod(0o755)
    script = Path(__file__).parents[2] / "scripts" / "local-up.sh"

    def run() -> str:
        done = subprocess.run([str(script), "--groups", "1"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "KROCKET_VENV": str(venv)})  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == run() == "krocket local up --groups 1"
    assert pip_log.read_text().count("install") == 1
    (venv / ".krocket-install-stamp").write_text("the hash of an older pyproject.toml\n")
    run()
    assert pip_log.read_text().count("install") == 2


def test_a_child_that_fails_to_start_is_named_with_the_reason_from_its_log(tmp_path: Path) -> None:
    data = tmp_path / "krocket"
    store = data / "broker-a" / "0"
    store.mkdir(parents=True)
    with open(store / "lock", "w") as held:  # as if another broker had the store open
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        result = krocket("local", "up", "--groups", "1", "--slaves", "0", "--namesrv-port", str(_free_port()),
                         "--data-dir", str(data), timeout=60)  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("krocket: error: broker-a-0 exited with code 2 during start: store "), result.stderr
    assert "is already open by another broker" in last and "broker-a-0.log" in last


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _http_json(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
        return json.loads(resp.read())
