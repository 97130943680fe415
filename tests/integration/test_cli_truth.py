"""The CLI tells the truth (issue 15, part 2), on one cluster of two broker groups with a slave each:
`consume --count` is exact, failures exit 1 with one line, `consumer progress` tells an unknown group and a dead
master from "no lag", `topic update` refuses a lossy shrink, `topic delete` of a missing topic fails and `bench`
measures the cluster it is told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import LocalCluster, start_cluster

KROCKET = [sys.executable, "-m", "krocket.cli.main", "--log-level", "WARNING"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path_factory.mktemp("cli-truth"), namesrvs=1, groups=2, slaves=1)
    try:
        yield c
    finally:
        c.stop()


def krocket(
    cluster: LocalCluster | None, *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    namesrv = ["--namesrv", cluster.namesrv_addr] if cluster is not None else []
    return subprocess.run(
        [*KROCKET, *args, *namesrv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("krocket: error: "), result.stderr
    return lines[0]


def test_consume_count_prints_and_commits_exactly_n(cluster: LocalCluster) -> None:
    assert krocket(cluster, "topic", "create", "Exact", "-r", "4").returncode == 0
    sent = krocket(cluster, "send", "-t", "Exact", "-n", "40", "m")
    assert sent.returncode == 0, sent.stderr
    assert {json.loads(line)["brokerName"] for line in sent.stdout.splitlines()} == {"broker-a", "broker-b"}
    got = krocket(cluster, "consume", "-t", "Exact", "-g", "exact-g", "--from", "first", "--count", "10")
    assert got.returncode == 0, got.stderr
    rows = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(rows) == 10
    assert all(r["brokerName"] in ("broker-a", "broker-b") and 0 <= r["queueId"] < 4 for r in rows), rows
    assert "consumed 10 of 10 message(s)" in got.stderr
    progress = krocket(cluster, "consumer", "progress", "exact-g", "--topic", "Exact", "--json")
    assert progress.returncode == 0, progress.stderr
    report = json.loads(progress.stdout)
    assert report["totalLag"] == 30 and report["unreachableBrokers"] == {}
    assert set(report["queues"][0]) == {"topic", "brokerName", "queueId", "brokerOffset", "consumerOffset", "lag"}
    committed = {(q["brokerName"], q["queueId"]): q["consumerOffset"] for q in report["queues"]}
    printed: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["brokerName"], r["queueId"])
        printed[key] = max(printed.get(key, 0), r["queueOffset"] + 1)
    assert {k: v for k, v in committed.items() if v > 0} == printed  # committed exactly past the printed ones


def test_consume_fails_in_one_line_when_nothing_can_be_consumed(cluster: LocalCluster) -> None:
    missing = krocket(cluster, "consume", "-t", "NoSuchTopic", "--count", "1")
    assert missing.returncode == 1
    assert "topic NoSuchTopic does not exist" in one_error_line(missing)
    nowhere = krocket(None, "consume", "-t", "Exact", "--count", "1", env={"NAMESRV_ADDR": "127.0.0.1:1"})
    assert nowhere.returncode == 1
    assert "no name server answered (127.0.0.1:1)" in nowhere.stderr.splitlines()[-1]


def test_topic_update_refuses_a_lossy_shrink_and_allows_the_drain(cluster: LocalCluster) -> None:
    assert krocket(cluster, "topic", "create", "Shrink", "-r", "8").returncode == 0
    assert krocket(cluster, "send", "-t", "Shrink", "-n", "32", "m").returncode == 0
    refused = krocket(cluster, "topic", "update", "Shrink", "-r", "4", "-w", "4")
    assert refused.returncode == 1
    assert "unconsumed message(s)" in one_error_line(refused) and "--allow-shrink" in refused.stderr
    assert krocket(cluster, "topic", "create", "Shrink", "-r", "4").returncode == 1  # create upserts: same check
    drain = krocket(cluster, "topic", "update", "Shrink", "-r", "8", "-w", "4")  # fewer write queues: allowed
    assert drain.returncode == 0, drain.stderr
    got = krocket(cluster, "consume", "-t", "Shrink", "-g", "shrink-g", "--from", "first", "-n", "32")
    assert got.returncode == 0 and len(got.stdout.splitlines()) == 32, got.stderr
    shrunk = krocket(cluster, "topic", "update", "Shrink", "-r", "4", "-w", "4", "--json")
    assert shrunk.returncode == 0, shrunk.stderr
    assert json.loads(shrunk.stdout)["brokerNames"] == ["broker-a", "broker-b"]


def test_topic_delete_of_a_missing_topic_is_an_error(cluster: LocalCluster) -> None:
    result = krocket(cluster, "topic", "delete", "nosuchtopic")
    assert result.returncode == 1
    assert "topic nosuchtopic does not exist" in one_error_line(result)


def test_bench_uses_namesrv_addr(cluster: LocalCluster, tmp_path: Path) -> None:
    result = krocket(
        None,
        "bench", "produce", "--n", "200", "--duration", "5", "--json", "--quiet",
        env={"NAMESRV_ADDR": cluster.namesrv_addr, "KROCKET_STORE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["cluster"] == "remote"


def test_consumer_progress_tells_unknown_group_and_dead_master_from_no_lag(cluster: LocalCluster) -> None:
    unknown = krocket(cluster, "consumer", "progress", "never-seen-group")
    assert unknown.returncode == 3
    assert "consumer group never-seen-group is unknown" in one_error_line(unknown)
    cluster.broker("broker-b-0").kill()  # last test of the module: the master of broker-b is gone, its slave stays
    down = krocket(cluster, "consumer", "progress", "exact-g", "--topic", "Exact")
    assert down.returncode == 4, down.stdout + down.stderr
    assert "broker-b" in one_error_line(down) and "total lag: at least" in down.stdout
