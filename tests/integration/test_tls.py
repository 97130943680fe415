"""TLS with real processes: a name server and a broker in each of RocketMQ's three modes, used by krocket.client.

- disabled: plain clients work, a TLS client fails cleanly;
- permissive: plain and TLS clients send and pull on the same ports (and the RocketMQ C++ client, which cannot
  do TLS, works);
- enforcing: plain clients are refused, TLS clients work;
- replication over TLS (the slave's HA connection and its metadata sync), and HTTPS on the HTTP ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import Message, Producer, PullConsumer, PullStatus, SendStatus
from krocket.common.codes import RequestCode
from krocket.common.errors import KrocketError
from krocket.common.remoting import ConnectionPool
from krocket.common.remoting.tls import client_context

from tests.support.cluster import LocalCluster, create_topic, wait_until, wait_until_async
from tests.support.remoting import call, pull_all
from tests.support.tls import Certificates, make_certificates

DRIVER = Path(__file__).parents[1] / "conformance" / "rmq_driver.py"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def tls_args(certs: Certificates, mode: str) -> list[str]:
    return ["--tls-mode", mode, "--tls-cert", str(certs.server_pem), "--tls-key", str(certs.server_pem)]


def plan_cluster(
    data_dir: Path, certs: Certificates, mode: str, slaves: int = 0, http_tls: bool = False
) -> LocalCluster:
    """One name server and one broker group in ``mode``; the brokers' own connections use TLS unless it is
    disabled."""
    cluster = LocalCluster.plan(data_dir, namesrvs=1, groups=1, slaves=slaves)
    extra = ["--http-tls"] if http_tls else []
    for ns in cluster.namesrvs:
        ns.args += tls_args(certs, mode) + extra
    for broker in cluster.brokers:
        broker.args += tls_args(certs, mode) + extra
        if mode != "disabled":
            broker.args += ["--tls-enable", "--tls-ca", str(certs.ca_path)]
    return cluster


@pytest.fixture(scope="module", params=["disabled", "permissive", "enforcing"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, certs: Certificates):
    c = plan_cluster(tmp_path_factory.mktemp(f"tls-{request.param}"), certs, request.param)
    try:
        c.start()
        yield request.param, c
    finally:
        c.stop()


def tls_options(certs: Certificates) -> dict[str, object]:
    return {"tls": True, "tls_ca": str(certs.ca_path)}


async def send_and_pull(namesrv: str, topic: str, count: int, **options: object) -> None:
    """Send ``count`` messages and pull every one of them back, with the given client options."""
    async with Producer(f"pg_{uuid.uuid4().hex[:6]}", namesrv, **options) as producer:  # type: ignore[arg-type]
        results = [await producer.send(Message(topic, f"m{i}".encode())) for i in range(count)]
    assert all(r.status is SendStatus.SEND_OK for r in results)
    sent = {r.msg_id for r in results}
    got: set[str] = set()
    async with PullConsumer(f"cg_{uuid.uuid4().hex[:6]}", namesrv, **options) as consumer:  # type: ignore[arg-type]
        for queue in await consumer.fetch_queues(topic):
            offset = 0
            while True:
                result = await consumer.pull(queue, "*", offset, 32)
                if result.status is not PullStatus.FOUND:
                    break
                got |= {m.msg_id for m in result.messages}
                offset = result.next_begin_offset
    assert sent <= got


async def fails_cleanly(namesrv: str, topic: str, **options: object) -> str:
    """A client that cannot speak to the servers gets an error within seconds, not a hang."""
    started = time.monotonic()
    producer = Producer(f"pg_{uuid.uuid4().hex[:6]}", namesrv, send_timeout=2.0, retries=0, **options)  # type: ignore[arg-type]
    await producer.start()
    try:
        with pytest.raises(KrocketError) as failed:
            await asyncio.wait_for(producer.send(Message(topic, b"never")), 20)
    finally:
        await producer.shutdown()
    assert time.monotonic() - started < 15
    return str(failed.value)


async def test_clients_in_each_mode(cluster: tuple[str, LocalCluster], certs: Certificates) -> None:
    mode, c = cluster
    topic = f"Tls_{mode}_{uuid.uuid4().hex[:6]}"
    tls = tls_options(certs)
    admin_options = tls if mode == "enforcing" else {}
    await create_topic(c, topic, queues=2, **admin_options)
    if mode == "disabled":
        await send_and_pull(c.namesrv_addr, topic, 10)
        await fails_cleanly(c.namesrv_addr, topic, **tls)
    elif mode == "permissive":
        await send_and_pull(c.namesrv_addr, topic, 10)
        await send_and_pull(c.namesrv_addr, topic, 10, **tls)
    else:
        await send_and_pull(c.namesrv_addr, topic, 10, **tls)
        await fails_cleanly(c.namesrv_addr, topic)
        # A plain frame straight to the broker's port is never answered: the handshake fails, the port closes.
        pool = ConnectionPool(connect_timeout=2)
        try:
            with pytest.raises(KrocketError):
                await call(pool, c.brokers[0].addr, RequestCode.GET_BROKER_RUNTIME_INFO, timeout=5)
        finally:
            await pool.close()


async def test_a_tls_client_that_does_not_trust_the_server_is_refused(
    cluster: tuple[str, LocalCluster], tmp_path: Path
) -> None:
    mode, c = cluster
    if mode == "disabled":
        pytest.skip("no TLS to distrust")
    other = make_certificates(tmp_path / "other-ca")
    message = await fails_cleanly(c.namesrv_addr, "AnyTopic", tls=True, tls_ca=str(other.ca_path))
    assert "TLS" in message or "certificate" in message, message


def test_the_cpp_client_works_on_a_permissive_port(cluster: tuple[str, LocalCluster], tmp_path: Path) -> None:
    pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")
    mode, c = cluster
    if mode != "permissive":
        pytest.skip("the C++ client cannot do TLS: only a permissive port serves it")
    topic = f"TlsCpp_{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topic(c, topic, queues=2))
    home = tmp_path / "cpp-home"
    home.mkdir()
    namesrv = c.namesrv_addr.split(";")[0]
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "produce", "--namesrv", namesrv, "--topic", topic, "--count", "5"],
        capture_output=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("done"), proc.stderr.decode()[-2000:]
    assert len([line for line in lines if "sent" in line]) == 5


@pytest.fixture
def replicated(tmp_path: Path, certs: Certificates) -> Iterator[LocalCluster]:
    c = plan_cluster(tmp_path, certs, "enforcing", slaves=1)
    try:
        c.start()
        yield c
    finally:
        c.stop()


async def test_replication_over_tls(replicated: LocalCluster, certs: Certificates) -> None:
    master, slave = replicated.brokers
    topic = f"TlsHa_{uuid.uuid4().hex[:6]}"
    tls = tls_options(certs)
    await create_topic(replicated, topic, queues=1, **tls)
    async with Producer("tls-ha-pg", replicated.namesrv_addr, **tls) as producer:  # type: ignore[arg-type]
        results = [await producer.send(Message(topic, f"r{i}".encode())) for i in range(20)]
    assert all(r.status is SendStatus.SEND_OK for r in results)
    pool = ConnectionPool(ssl_context=client_context(str(certs.ca_path)))
    try:

        async def slave_has_all() -> bool:
            try:
                return len(await pull_all(pool, slave.addr, topic, 0)) == 20
            except KrocketError:
                return False  # the slave learns the topic from its master's metadata sync

        await wait_until_async(slave_has_all, timeout=30, message="20 messages on the slave")
        assert [m.body for m in await pull_all(pool, slave.addr, topic, 0)] == [f"r{i}".encode() for i in range(20)]
    finally:
        await pool.close()
    assert slave.http_json("/api/v1/broker")["replication"]["master"]


def test_https_health(tmp_path: Path, certs: Certificates) -> None:
    c = plan_cluster(tmp_path, certs, "permissive", http_tls=True)
    ctx = client_context(str(certs.ca_path))
    try:
        for ns in c.namesrvs:
            ns.start()
            ns.wait_ports()
        for broker in c.brokers:
            broker.args += ["--namesrv", c.namesrv_addr]
            broker.start()
            broker.wait_ports()
        for child in c.children:

            def healthy(port: int = child.http_port) -> bool:
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2, context=ctx) as r:
                        return r.status == 200
                except OSError:
                    return False

            wait_until(healthy, timeout=20, message=f"HTTPS /healthz of {child.name}")
            with pytest.raises(OSError):  # plain HTTP on that port gets no answer
                urllib.request.urlopen(f"http://127.0.0.1:{child.http_port}/healthz", timeout=2).read()
        no_trust = ssl.create_default_context()  # the system's CAs do not know the test CA
        with pytest.raises(OSError):
            urllib.request.urlopen(f"https://127.0.0.1:{c.brokers[0].http_port}/healthz", timeout=2, context=no_trust)
    finally:
        c.stop()


def test_cli_verbs_take_tls_options(cluster: tuple[str, LocalCluster], certs: Certificates) -> None:
    mode, c = cluster
    if mode != "enforcing":
        pytest.skip("the enforcing servers tell a TLS CLI from a plain one")
    topic = f"TlsCli_{uuid.uuid4().hex[:6]}"
    ns = ["--namesrv", c.namesrv_addr]

    def krocket(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KROCKET_TLS")}
        return subprocess.run(
            [sys.executable, "-m", "krocket.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean, **(env or {})},
        )

    created = krocket("topic", "create", topic, "-r", "2", *ns, "--tls", "--tls-ca", str(certs.ca_path))
    assert created.returncode == 0, created.stderr
    sent = krocket("send", "-t", topic, *ns, "--tls-ca", str(certs.ca_path), "hello over TLS")
    assert sent.returncode == 0, sent.stderr
    by_env = {"KROCKET_TLS_ENABLE": "1", "KROCKET_TLS_CA": str(certs.ca_path)}
    consumed = krocket("consume", "-t", topic, *ns, "--from", "first", "-n", "1", "--timeout", "20", env=by_env)
    assert consumed.returncode == 0 and "hello over TLS" in consumed.stdout, consumed.stderr
    plain = krocket("topic", "list", *ns)
    assert plain.returncode != 0
