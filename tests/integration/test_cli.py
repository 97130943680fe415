"""The ``krocket`` command as a user runs it: local clusters, admin verbs, send/consume, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.support.cluster import wait_until

KROCKET = [sys.executable, "-m", "krocket.cli.main"]


def krocket(*args: str, env: dict | None = None, timeout: float = 60, input: str | None = None):
    return subprocess.run(
        [*KROCKET, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env={**os.environ, **(env or {})},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["local", "up", "--groups", "0"], "--groups"),
        (["topic", "create"], "give a topic name or --from-file FILE"),
        (["broker", "--flush", "MAYBE"], "invalid choice"),
        (["nonsense"], "invalid choice"),
        (["topic", "list"], "NAMESRV_ADDR"),
        (["namesrv", "--port", "0", "--max-connections", "0"], "--max-connections must be positive, got 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(args, needle, tmp_path):
    env = {"NAMESRV_ADDR": "", "KROCKET_NAMESRV_ADDR": ""}
    result = krocket(*args, "--data-dir", str(tmp_path)) if args[:2] == ["local", "up"] else krocket(*args, env=env)
    assert result.returncode == 2
    assert needle in result.stderr


def test_broker_with_a_bad_config_file_exits_2(tmp_path):
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("flushDiskType: SOMETIMES\n")
    result = krocket("broker", "--config", str(cfg))
    assert result.returncode == 2 and "flushDiskType must be one of" in result.stderr
    cfg.write_text("listenPort: not-a-port\n")
    result = krocket("broker", "--config", str(cfg))
    assert result.returncode == 2 and "'listenPort' must be of type int" in result.stderr
    cfg.write_text("syncFlushInlineBytes: -1\n")
    result = krocket("broker", "--config", str(cfg))
    assert result.returncode == 2 and "syncFlushInlineBytes must be 0 or more" in result.stderr
    cfg.write_text("channelIdleTimeoutMills: 0\n")
    result = krocket("broker", "--config", str(cfg))
    assert result.returncode == 2 and "channelIdleTimeoutMills must be positive, got 0" in result.stderr
    cfg.write_text("brokerName: broker a\n")
    result = krocket("broker", "--config", str(cfg))
    assert result.returncode == 2 and "brokerName 'broker a' may only contain" in result.stderr
    cfg.write_text("- a list, not a mapping\n")
    result = krocket("broker", "--config", str(cfg))
    assert result.returncode == 2 and "must hold a mapping" in result.stderr


def test_broker_acl_flag_turns_acl_on_and_names_a_bad_file(tmp_path):
    missing = tmp_path / "plain_acl.yml"
    result = krocket("broker", "--acl", str(missing), "--store-dir", str(tmp_path / "store"))
    assert result.returncode == 2
    assert f"aclConfigFile {missing}: cannot be read" in result.stderr
    missing.write_text("accounts:\n  - accessKey: a\n    admin: maybe\n")
    result = krocket("broker", "--acl", str(missing), "--store-dir", str(tmp_path / "store"))
    assert result.returncode == 2 and "accounts[0].secretKey: is required" in result.stderr


def test_local_up_on_a_busy_port_exits_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = krocket("local", "up", "--namesrv-port", str(port), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert f"port {port} is busy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_local_up_with_an_unwritable_data_dir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = krocket("local", "up", "--namesrv-port", str(_free_port()), "--data-dir", str(blocker / "sub"))
    assert result.returncode == 2 and "not writable" in result.stderr


def test_local_up_runs_a_cluster_that_send_consume_and_admin_verbs_use(tmp_path):
    data = tmp_path / "krocket"
    port = _free_port()
    proc = subprocess.Popen(
        [*KROCKET, "local", "up", "--namesrv-port", str(port), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # blocks until the cluster is ready
        assert line.strip() == f"NAMESRV_ADDR=127.0.0.1:{port}", proc.stderr.read() if proc.poll() else line
        grpc_line = proc.stdout.readline().strip()
        state = json.loads((data / "cluster.json").read_text())
        grpc_ports = {p["name"]: p["grpcPort"] for p in state["processes"] if p["role"] == "broker"}
        assert len(set(grpc_ports.values())) == 4 and all(grpc_ports.values()), grpc_ports
        masters = [f"127.0.0.1:{grpc_ports[name]}" for name in ("broker-a-0", "broker-b-0")]
        assert grpc_line == f"GRPC_ENDPOINTS={';'.join(masters)}", grpc_line
        roles = sorted((p["role"], p.get("brokerName"), p.get("brokerId")) for p in state["processes"])
        assert roles == [
            ("broker", "broker-a", 0),
            ("broker", "broker-a", 1),
            ("broker", "broker-b", 0),
            ("broker", "broker-b", 1),
            ("namesrv", None, None),
        ]
        env = {"NAMESRV_ADDR": f"127.0.0.1:{port}"}
        status = krocket("local", "status", "--data-dir", str(data))
        assert status.returncode == 0 and status.stdout.count("running") == 5

        created = krocket("topic", "create", "CliTopic", "-r", "4", env=env)
        assert created.returncode == 0, created.stderr
        listed = krocket("topic", "list", "--json", env=env)
        assert "CliTopic" in json.loads(listed.stdout)
        route = krocket("topic", "route", "CliTopic", "--json", env=env)
        assert {q["brokerName"] for q in json.loads(route.stdout)["queueDatas"]} == {"broker-a", "broker-b"}
        clusters = krocket("cluster", "list", env=env)
        assert "broker-a" in clusters.stdout and "broker-b" in clusters.stdout
        assert "GRPC" in clusters.stdout.splitlines()[0]
        listed_brokers = json.loads(krocket("cluster", "list", "--json", env=env).stdout)["brokers"]
        assert {
            f"{name}-{broker_id}": row["grpcAddr"]
            for name, rows in listed_brokers.items()
            for broker_id, row in rows.items()
        } == {name: f"127.0.0.1:{grpc_port}" for name, grpc_port in grpc_ports.items()}

        sent = krocket("send", "--topic", "CliTopic", "--tag", "T", "--count", "5", "hello", env=env)
        assert sent.returncode == 0, sent.stderr
        ids = {json.loads(x)["msgId"] for x in sent.stdout.splitlines()}
        assert len(ids) == 5
        got = krocket(
            "consume",
            "--topic",
            "CliTopic",
            "--group",
            "cli-g",
            "--from",
            "first",
            "--count",
            "5",
            "--timeout",
            "20",
            env=env,
        )
        assert got.returncode == 0, got.stderr
        assert {json.loads(x)["msgId"] for x in got.stdout.splitlines()} == ids
        progress = krocket("consumer", "progress", "cli-g", "--json", env=env)
        assert progress.returncode == 0, progress.stderr
        deleted = krocket("topic", "delete", "CliTopic", env=env)
        assert deleted.returncode == 0, deleted.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert not (data / "cluster.json").exists()
    pids = [p["pid"] for p in state["processes"]]

    def all_gone() -> bool:
        for pid in pids:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                continue
        return True

    wait_until(all_gone, 10, message="every child process to exit")


def test_cluster_list_shows_masters_slaves_and_how_far_behind(tmp_path):
    from tests.support.cluster import start_cluster

    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, slaves=1)
    try:
        env = {"NAMESRV_ADDR": cluster.namesrv_addr}
        assert krocket("send", "--topic", "Lag", "--count", "3", "x", env=env).returncode == 0
        master = cluster.brokers[0]
        head = master.http_json("/api/v1/broker")["maxPhyOffset"]
        wait_until(lambda: cluster.brokers[1].http_json("/api/v1/broker")["maxPhyOffset"] == head, 10)
        listed = krocket("cluster", "list", "--json", env=env)
        rows = json.loads(listed.stdout)["brokers"]["broker-a"]
        assert rows["0"]["role"] == "master" and rows["0"]["maxOffset"] == head
        assert rows["1"]["role"] == "slave" and rows["1"]["behindBytes"] == 0
        assert "slave" in krocket("cluster", "list", env=env).stdout
    finally:
        cluster.stop()
