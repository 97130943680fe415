"""A Topic applied to a real krocket broker process on loopback through its HTTP admin API, with the
operator (kopf) running against kmock and a resolver that points the BrokerGroup at 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE
from krocket.common.topic import TopicConfig
from krocket.operator.broker_admin import BrokerAdmin, BrokerRejected

from tests.operator.api import BGS, TOPICS, G, topic_body
from tests.operator.kopf_harness import StampingEmulator, condition, get, wait_for
from tests.operator.real_broker import brokergroup, operator_on


def _spawn(args: list[str], ports_file: Path, log: Path) -> tuple[subprocess.Popen, dict]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "krocket.cli.main", *args, "--ports-file", str(ports_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ports_file.exists():
            return proc, json.loads(ports_file.read_text())
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{args[0]} did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture()
def loopback_broker(tmp_path: Path) -> Iterator[str]:
    """A name server and a master broker (cluster c1, broker-a) on 127.0.0.1; yields the admin base URL."""
    probe = subprocess.run([sys.executable, "-m", "krocket.cli.main", "broker", "--help"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"`krocket broker` is not runnable: {probe.stderr.decode()[-500:]}")
    ns_proc, ns_ports = _spawn(
        ["namesrv", "--host", "127.0.0.1", "--listen-port", "0", "--http-port", "0"],
        tmp_path / "ns.json",
        tmp_path / "ns.log",
    )
    try:
        br_proc, br_ports = _spawn(
            [
                "broker",
                "--host", "127.0.0.1",
                "--listen-port", "0",
                "--http-port", "0",
                "--ha-port", "0",
                "--grpc-port", "0",  # no gRPC: its default port would collide with other tests' brokers
                "--namesrv", f"127.0.0.1:{ns_ports['port']}",
                "--cluster", "c1",
                "--broker-name", "broker-a",
                "--broker-id", "0",
                "--store-dir", str(tmp_path / "store"),
                "--no-auto-create-topic",
            ],
            tmp_path / "br.json",
            tmp_path / "br.log",
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{br_ports['http_port']}"
        finally:
            _stop(br_proc)
    finally:
        _stop(ns_proc)


async def _topic(base: str, name: str) -> dict | None:
    async with aiohttp.ClientSession() as s, s.get(f"{base}/api/v1/topics/{name}") as r:
        return None if r.status == 404 else await r.json()


async def test_broker_admin_contract(loopback_broker):
    base = loopback_broker
    async with aiohttp.ClientSession() as session:
        admin = BrokerAdmin(session)
        info = await admin.broker_info(base)
        assert info["brokerName"] == "broker-a" and info["brokerId"] == 0
        created = await admin.upsert_topic(base, TopicConfig("T1", 4, 2, 6))
        assert (created["readQueueNums"], created["writeQueueNums"]) == (4, 2)
        assert (await admin.get_topic(base, "T1"))["perm"] == 6
        assert "T1" in {t["topicName"] for t in await admin.list_topics(base)}
        assert await admin.get_topic(base, "missing") is None
        with pytest.raises(BrokerRejected):
            await admin.upsert_topic(base, TopicConfig("bad name!", 1, 1, 6))
        assert await admin.delete_topic(base, "T1") is True
        assert await admin.delete_topic(base, "T1") is False


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_topic_applied_to_real_broker_and_drift_repaired(kmock, loopback_broker):
    base = loopback_broker
    async with operator_on(kmock, base):
        await kmock.post(f"/apis/{G}/namespaces/mq/brokergroups", json=brokergroup("127.0.0.1:9876", cluster="c1"))
        await kmock.post(f"/apis/{G}/namespaces/mq/topics", json=topic_body("orders", topicName="Orders"))

        await wait_for(lambda: (c := condition(get(kmock, TOPICS, "mq", "orders"))) and c["status"] == "True",
                       what="Topic Ready")  # fmt: skip
        on_broker = await _topic(base, "Orders")
        assert (on_broker["readQueueNums"], on_broker["writeQueueNums"], on_broker["perm"]) == (4, 4, 6)
        placement = get(kmock, TOPICS, "mq", "orders")["status"]["placement"]
        assert placement == [{"brokerGroup": "broker-a", "brokerName": "broker-a", "readQueues": 4,
                              "writeQueues": 4, "perm": 6, "messageType": "NORMAL", "state": "Applied"}]  # fmt: skip
        # the BrokerGroup status reads the real broker: registered with the name server
        await wait_for(lambda: get(kmock, BGS, "mq", "broker-a")["status"]["master"].get("registered") is True,
                       what="master registered in status")  # fmt: skip

        # drift 1: deleted out of band -> recreated by the resync timer
        async with aiohttp.ClientSession() as s, s.delete(f"{base}/api/v1/topics/Orders") as r:
            assert r.status == 200
        await wait_for_async(lambda: _topic(base, "Orders"), what="topic recreated")
        # drift 2: queues lowered out of band -> raised back to the spec
        async with aiohttp.ClientSession() as s:
            body = {"topicName": "Orders", "readQueueNums": 2, "writeQueueNums": 1, "perm": 6}
            async with s.post(f"{base}/api/v1/topics", json=body) as r:
                assert r.status == 200
        await wait_for_async(
            lambda: _topic(base, "Orders"), check=lambda t: t and t["writeQueueNums"] == 4, what="queues repaired"
        )

        # deleting the resource deletes the topic (deletionPolicy Delete)
        await kmock.delete(f"/apis/{G}/namespaces/mq/topics/orders")
        await wait_for(lambda: get(kmock, TOPICS, "mq", "orders") is None, what="Topic gone")
        assert await _topic(base, "Orders") is None


async def wait_for_async(fetch, check=bool, timeout: float = 15.0, what: str = "condition"):
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await fetch()
        if check(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_broker_admin_keeps_topic_attributes(loopback_broker):
    """The operator's topic writes carry `message.type`; the broker holds it and answers with it."""
    base = loopback_broker
    async with aiohttp.ClientSession() as session:
        admin = BrokerAdmin(session)
        fifo = TopicConfig("Typed", 4, 4, 6, attributes={MESSAGE_TYPE_ATTRIBUTE: "FIFO"})
        assert (await admin.upsert_topic(base, fifo))["attributes"] == {MESSAGE_TYPE_ATTRIBUTE: "FIFO"}
        assert (await admin.get_topic(base, "Typed"))["attributes"] == {MESSAGE_TYPE_ATTRIBUTE: "FIFO"}


@pytest.mark.kmock(cls=StampingEmulator)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_topic_message_type_applied_to_real_broker_and_changed(kmock, loopback_broker):
    base = loopback_broker
    fifo_topic = topic_body("fifo", topicName="Fifo", messageType="FIFO")

    def holds(message_type: str):
        return lambda t: (t or {}).get("attributes") == {MESSAGE_TYPE_ATTRIBUTE: message_type}

    async with operator_on(kmock, base):
        await kmock.post(f"/apis/{G}/namespaces/mq/brokergroups", json=brokergroup("127.0.0.1:9876", cluster="c1"))
        await kmock.post(f"/apis/{G}/namespaces/mq/topics", json=fifo_topic)
        await wait_for_async(lambda: _topic(base, "Fifo"), check=holds("FIFO"), what="the broker's topic is FIFO")
        await kmock.patch(f"/apis/{G}/namespaces/mq/topics/fifo", json={"spec": {"messageType": "MIXED"}},
                          headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
        await wait_for_async(lambda: _topic(base, "Fifo"), check=holds("MIXED"), what="changed to MIXED on the broker")
        await wait_for(lambda: condition(get(kmock, TOPICS, "mq", "fifo"), "Degraded")["status"] == "False",
                       what="not degraded: the broker holds the spec's type")  # fmt: skip
