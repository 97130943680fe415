"""Many topics in few requests, with real processes: ``krocket topic create|update|delete --from-file`` (the CLI
over UPDATE_AND_CREATE_TOPIC_LIST, 1,000 topics per request, on every master), and the broker's HTTP batch
(creates and deletes in one request, all checked before anything changes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krocket.client import Admin

from tests.support.cluster import ChildProcess, LocalCluster, start_cluster, wait_until

KROCKET = [sys.executable, "-m", "krocket.cli.main"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = start_cluster(tmp_path_factory.mktemp("bulk") / "c", namesrvs=1, groups=2, auto_create=False)
    yield running
    running.stop()


def krocket(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KROCKET, *args, "--namesrv", cluster.namesrv_addr], capture_output=True, text=True, timeout=120
    )


def tables(cluster: LocalCluster, prefix: str) -> dict[str, dict[str, Any]]:
    """Each master's topics starting with ``prefix``, by broker name."""

    async def read() -> dict[str, dict[str, Any]]:
        async with Admin(cluster.namesrv_addr) as admin:
            masters = (await admin.cluster_info()).masters()
            out = {}
            for name, addr in masters.items():
                out[name] = {t: c for t, c in (await admin.topic_config(addr)).items() if t.startswith(prefix)}
            return out

    return asyncio.run(read())


def routed(cluster: LocalCluster, prefix: str) -> set[str]:
    async def read() -> set[str]:
        async with Admin(cluster.namesrv_addr) as admin:
            return {t for t in await admin.list_topics() if t.startswith(prefix)}

    return asyncio.run(read())


def test_the_cli_creates_updates_and_deletes_thousands_of_topics_from_a_file(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    names = [f"Bulk{i:04d}" for i in range(2500)]
    spec = tmp_path / "topics.yaml"
    spec.write_text(
        "topics:\n" + "".join(f"  - {n}\n" for n in names[:-1]) + f"  - {{name: {names[-1]}, readQueues: 2}}\n"
    )
    created = krocket(cluster, "topic", "create", "--from-file", str(spec), "-r", "4", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"topics": 2500, "brokerNames": ["broker-a", "broker-b"], "file": str(spec)}
    assert "topic create: 1000/2500 topics" in created.stderr and "2500/2500" in created.stderr  # progress
    for table in tables(cluster, "Bulk").values():
        assert len(table) == 2500
        assert table["Bulk0000"]["readQueueNums"] == 4 and table[names[-1]]["readQueueNums"] == 2
    wait_until(lambda: routed(cluster, "Bulk") == set(names), 20, message="every topic routed")

    typed = tmp_path / "typed.yaml"
    typed.write_text("- {name: Bulk0001, readQueues: 4, messageType: FIFO}\n- {name: Bulk0002, readQueues: 8}\n")
    updated = krocket(cluster, "topic", "update", "--from-file", str(typed))
    assert updated.returncode == 0, updated.stderr
    for table in tables(cluster, "Bulk000").values():
        assert table["Bulk0001"]["attributes"] == {"message.type": "FIFO"}
        assert table["Bulk0002"]["readQueueNums"] == 8
    again = krocket(cluster, "topic", "update", "--from-file", str(typed.with_name("retype.yaml")))
    assert again.returncode == 2 and "cannot read the topics file" in again.stderr
    keep = typed.with_name("keep.yaml")
    keep.write_text("- {name: Bulk0001, readQueues: 4, writeQueues: 2}\n")
    assert krocket(cluster, "topic", "update", "--from-file", str(keep)).returncode == 0
    for table in tables(cluster, "Bulk0001").values():
        assert table["Bulk0001"]["attributes"] == {"message.type": "FIFO"}  # no type in the file: the topic's stays
        assert table["Bulk0001"]["writeQueueNums"] == 2

    doomed = tmp_path / "doomed.yaml"
    doomed.write_text("".join(f"- {n}\n" for n in names[:1200]) + "- NeverExisted\n")
    deleted = krocket(cluster, "topic", "delete", "--from-file", str(doomed), "--json")
    assert deleted.returncode == 0, deleted.stderr
    report = json.loads(deleted.stdout)
    assert len(report["deleted"]) == 1200 and report["missing"] == ["NeverExisted"]
    for table in tables(cluster, "Bulk").values():
        assert sorted(table) == names[1200:]
    wait_until(lambda: routed(cluster, "Bulk") == set(names[1200:]), 20, message="deleted topics unrouted")


def test_a_bad_file_changes_nothing_and_says_which_entry(cluster: LocalCluster, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("- Fine1\n- {name: Fine2, readQueues: 2, writeQueues: 3}\n")
    result = krocket(cluster, "topic", "create", "--from-file", str(spec))
    assert (
        result.returncode == 2
        and "entry 2 (Fine2): writeQueueNums must be between 1 and readQueueNums" in result.stderr
    )
    assert all(not t for t in tables(cluster, "Fine").values())
    both = krocket(cluster, "topic", "create", "Named", "--from-file", str(spec))
    assert both.returncode == 2 and "a topic name or --from-file" in both.stderr


def post(broker: ChildProcess, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{broker.http_port}{path}", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_http_batch_creates_and_deletes_in_one_request_all_or_nothing(cluster: LocalCluster) -> None:
    broker = next(b for b in cluster.brokers if b.broker_name == "broker-a" and b.broker_id == 0)
    topics = [{"topicName": f"Http{i}", "readQueueNums": 2, "writeQueueNums": 2} for i in range(300)]
    status, answer = post(broker, "/api/v1/topics/batch", {"topics": topics})
    assert status == 200 and answer == {"applied": 300, "changed": 300, "deleted": []}
    typed = [{"topicName": "Http0", "readQueueNums": 2, "attributes": {"message.type": "DELAY"}}]
    status, answer = post(broker, "/api/v1/topics/batch", {"topics": typed, "delete": ["Http1", "Http2", "Nope"]})
    assert status == 200 and answer == {"applied": 1, "changed": 1, "deleted": ["Http1", "Http2"]}
    table = tables(cluster, "Http")["broker-a"]
    assert len(table) == 298 and table["Http0"]["attributes"] == {"message.type": "DELAY"}

    bad = [
        {"topicName": "Http500", "readQueueNums": 2},
        {"topicName": "Http501", "readQueueNums": 1, "writeQueueNums": 4},
    ]
    status, answer = post(broker, "/api/v1/topics/batch", {"topics": bad})
    assert status == 400 and "Http501" in answer["error"]
    assert "Http500" not in tables(cluster, "Http500")["broker-a"]  # the good one was not applied either
    for body, why in [
        ({"topics": "x"}, "topics must be a list"),
        ({"delete": [1]}, "delete must be a list of topic names"),
        ({"topics": [{"topicName": f"T{i}"} for i in range(1001)]}, "at most 1000 topics per request"),
        ({"topics": [{"readQueueNums": 2}]}, "topicName is required"),
        (
            {"topics": [{"topicName": "A", "attributes": {"message.type": 1}}]},
            "attributes must be an object of strings",
        ),
    ]:
        status, answer = post(broker, "/api/v1/topics/batch", body)
        assert status == 400 and why in answer["error"], (body, answer)
