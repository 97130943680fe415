"""Access control with real processes: a name server and a broker group (master and slave) on one plain_acl.yml."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import Credentials, Message, Producer, PullConsumer, SendStatus, SyncProducer
from krocket.client.types import PullStatus
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.headers import (
    CreateTopicHeader,
    DeleteTopicInBrokerHeader,
    DeleteTopicInNamesrvHeader,
    GetTopicConfigHeader,
    PutKVConfigHeader,
    RegisterBrokerHeader,
    UnregisterBrokerHeader,
    UpdateConsumerOffsetHeader,
)
from krocket.common.remoting import ConnectionPool

from tests.support.cluster import LocalCluster, create_topic, start_cluster, wait_until
from tests.support.remoting import call, send

ADMIN = Credentials("rocketmq-admin", "admin-secret-1")
USER = Credentials("rocketmq2", "user-secret-2")
WRONG = Credentials("rocketmq2", "not-the-secret")
TOPIC = "Orders"
GROUP = "order-consumers"

ACL_TEMPLATE = """
globalWhiteRemoteAddresses: []
accounts:
  - accessKey: rocketmq-admin
    secretKey: admin-secret-1
    admin: true
  - accessKey: rocketmq2
    secretKey: user-secret-2
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms: [{topics}]
    groupPerms: ["order-consumers=SUB"]
"""


def write_acl(path: Path, topics: str = '"Orders=PUB|SUB"') -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(ACL_TEMPLATE.format(topics=topics))
    tmp.replace(path)


@pytest.fixture(scope="module")
def acl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("acl") / "plain_acl.yml"
    write_acl(path)
    return path


@pytest.fixture(scope="module")
def acl_cluster(acl_file: Path) -> Iterator[LocalCluster]:
    cluster = start_cluster(acl_file.parent / "cluster", namesrvs=1, groups=1, slaves=1, acl_file=acl_file)
    try:
        asyncio.run(create_topic(cluster, TOPIC, queues=2, credentials=ADMIN))
        asyncio.run(_produce(cluster, [f"m-{i}".encode() for i in range(20)]))
        yield cluster
    finally:
        cluster.stop()


async def _produce(cluster: LocalCluster, bodies: list[bytes], creds: Credentials = USER) -> None:
    async with Producer("order-producers", cluster.namesrv_addr, credentials=creds) as producer:
        for body in bodies:
            await producer.send(Message(TOPIC, body))


async def _read_all(cluster: LocalCluster, creds: Credentials = USER, group: str = GROUP) -> list[bytes]:
    consumer = PullConsumer(group, cluster.namesrv_addr, credentials=creds)
    await consumer.start()
    try:
        out: list[bytes] = []
        for queue in await consumer.fetch_queues(TOPIC):
            offset = 0
            while True:
                result = await consumer.pull(queue, "*", offset, 32)
                if result.status != PullStatus.FOUND:
                    break
                out += [m.body for m in result.messages]
                offset = result.next_begin_offset
        return out
    finally:
        await consumer.shutdown()


async def _pool_call(addr: str, code: int, header, creds: Credentials | None = None, body: bytes = b""):  # noqa: ANN001
    pool = ConnectionPool()
    pool.request_hook = creds.sign if creds is not None else None
    try:
        return await call(pool, addr, code, header, body)
    finally:
        await pool.close()


def _http(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers or {})
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _basic(creds: Credentials) -> dict[str, str]:
    token = base64.b64encode(f"{creds.access_key}:{creds.secret_key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_anonymous_and_non_admin_requests_are_refused_and_the_topic_and_its_messages_remain(acl_cluster):
    master = acl_cluster.brokers[0]

    async def attempts() -> None:
        for creds in (None, USER):
            deleted = await _pool_call(
                master.addr, RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicInBrokerHeader(TOPIC), creds
            )
            assert deleted.code == ResponseCode.NO_PERMISSION, deleted
            perm0 = await _pool_call(
                master.addr,
                RequestCode.UPDATE_AND_CREATE_TOPIC,
                CreateTopicHeader(topic=TOPIC, read_queue_nums=2, write_queue_nums=2, perm=0),
                creds,
            )
            assert perm0.code == ResponseCode.NO_PERMISSION, perm0
            offset = UpdateConsumerOffsetHeader(
                consumer_group="someone-elses-group", topic=TOPIC, queue_id=0, commit_offset=10**12
            )
            moved = await _pool_call(master.addr, RequestCode.UPDATE_CONSUMER_OFFSET, offset, creds)
            assert moved.code == ResponseCode.NO_PERMISSION, moved
        # The remarks name what is missing.
        assert "request code 215 needs an admin account; accessKey rocketmq2" in (deleted.remark or "")
        assert "no permission to SUB on group someone-elses-group for accessKey rocketmq2" in (moved.remark or "")
        wrong = await _pool_call(master.addr, RequestCode.GET_TOPIC_CONFIG, GetTopicConfigHeader(TOPIC), WRONG)
        assert wrong.code == ResponseCode.NO_PERMISSION and "signature" in (wrong.remark or "")
        kept = await _pool_call(master.addr, RequestCode.GET_TOPIC_CONFIG, GetTopicConfigHeader(TOPIC), USER)
        assert kept.code == ResponseCode.SUCCESS
        assert json.loads(kept.body)["topicConfig"]["perm"] == 6

    asyncio.run(attempts())
    # HTTP: writes need an admin; no credentials -> 401, a non-admin account -> 403; the topic stays.
    assert _http(master.http_port, "DELETE", f"/api/v1/topics/{TOPIC}")[0] == 401
    assert _http(master.http_port, "DELETE", f"/api/v1/topics/{TOPIC}", _basic(USER))[0] == 403
    assert _http(master.http_port, "DELETE", f"/api/v1/topics/{TOPIC}", _basic(WRONG))[0] == 401
    assert _http(master.http_port, "PUT", f"/api/v1/topics/{TOPIC}", body={"perm": 0})[0] == 401
    assert _http(master.http_port, "POST", "/api/v1/topics", body={"topicName": "Evil"})[0] == 401
    status, data = _http(master.http_port, "GET", f"/api/v1/topics/{TOPIC}", _basic(USER))
    assert status == 200 and data["perm"] == 6
    assert _http(master.http_port, "GET", f"/api/v1/topics/{TOPIC}")[0] == 401
    assert _http(master.http_port, "GET", "/healthz")[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{master.http_port}/metrics", timeout=5) as resp:
        assert b"broker_acl_denied_total" in resp.read()
    bodies = asyncio.run(_read_all(acl_cluster))
    assert sorted(bodies) == sorted(f"m-{i}".encode() for i in range(20))


def test_krocket_client_with_right_credentials_sends_and_pulls_and_a_wrong_secret_or_none_is_refused(acl_cluster):
    asyncio.run(_produce(acl_cluster, [b"right-1", b"right-2"]))
    with SyncProducer("order-producers", acl_cluster.namesrv_addr, credentials=USER) as sync_producer:
        for body in (b"blocking-1", b"blocking-2", b"blocking-3"):  # the first on the loop, then blocking sockets
            assert sync_producer.send(Message(TOPIC, body)).status == SendStatus.SEND_OK
    assert {b"right-1", b"right-2", b"blocking-1", b"blocking-3"} <= set(asyncio.run(_read_all(acl_cluster)))
    for creds in (WRONG, None):

        async def refused(creds: Credentials | None = creds) -> None:
            producer = Producer("order-producers", acl_cluster.namesrv_addr, retries=0, credentials=creds)
            await producer.start()
            try:
                with pytest.raises(KrocketError) as info:
                    await producer.send(Message(TOPIC, b"must-not-land"))
                assert "NO_PERMISSION" in str(info.value) or info.value.code == ResponseCode.NO_PERMISSION
            finally:
                await producer.shutdown()

        asyncio.run(refused())
    # A pull by a group the account may not use is refused too.
    with pytest.raises(KrocketError):
        asyncio.run(_read_all(acl_cluster, USER, group="not-my-group"))
    assert b"must-not-land" not in asyncio.run(_read_all(acl_cluster, ADMIN))


def test_name_server_refuses_unsigned_or_non_admin_writes_and_the_routes_stay_right(acl_cluster):
    ns = acl_cluster.namesrvs[0]
    master = acl_cluster.brokers[0]

    async def attempts() -> None:
        for creds in (None, USER, WRONG):
            fake = RegisterBrokerHeader(
                broker_name="broker-a", broker_addr="127.0.0.1:1", cluster_name="DefaultCluster", broker_id=0
            )
            resp = await _pool_call(ns.addr, RequestCode.REGISTER_BROKER, fake, creds)
            assert resp.code == ResponseCode.NO_PERMISSION, resp
            gone = UnregisterBrokerHeader(
                broker_name="broker-a", broker_addr=master.addr, cluster_name="DefaultCluster", broker_id=0
            )
            resp = await _pool_call(ns.addr, RequestCode.UNREGISTER_BROKER, gone, creds)
            assert resp.code == ResponseCode.NO_PERMISSION, resp
            resp = await _pool_call(
                ns.addr, RequestCode.DELETE_TOPIC_IN_NAMESRV, DeleteTopicInNamesrvHeader(TOPIC), creds
            )
            assert resp.code == ResponseCode.NO_PERMISSION, resp
            kv = PutKVConfigHeader(namespace="ORDER_TOPIC_CONFIG", key=TOPIC, value="broker-a:1")
            resp = await _pool_call(ns.addr, RequestCode.PUT_KV_CONFIG, kv, creds)
            assert resp.code == ResponseCode.NO_PERMISSION, resp
        admin_kv = PutKVConfigHeader(namespace="krocket-acl-test", key="k", value="v")
        assert (await _pool_call(ns.addr, RequestCode.PUT_KV_CONFIG, admin_kv, ADMIN)).code == ResponseCode.SUCCESS
        route = await _pool_call(ns.addr, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": TOPIC})  # reads stay open
        assert route.code == ResponseCode.SUCCESS
        addrs = json.loads(route.body)["brokerDatas"][0]["brokerAddrs"]
        assert addrs["0"] == master.addr and "127.0.0.1:1" not in addrs.values()

    asyncio.run(attempts())


def test_mqadmin_verbs_that_change_brokers_or_routes_need_an_admin(acl_cluster):
    """UPDATE_BROKER_CONFIG (25), GET_BROKER_CONSUME_STATS (317) on the broker and WIPE_WRITE_PERM_OF_BROKER (205) /
    ADD_WRITE_PERM_OF_BROKER (327) on the name server: refused for a non-admin account through the CLI, done
    for the admin (who puts the write permission back)."""

    def cli(creds: Credentials, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "krocket.cli.main", *args, "--namesrv", acl_cluster.namesrv_addr,
             "--access-key", creds.access_key, "--secret-key", creds.secret_key],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    config_set = ("broker", "config", "set", "shortPollingTimeMills", "900", "--broker", "broker-a")
    for verb in (config_set, ("broker", "wipe-write-perm", "broker-a"), ("stats",)):
        refused = cli(USER, *verb)
        assert refused.returncode == 1 and "admin" in refused.stderr, (verb, refused.stderr)
    assert cli(ADMIN, *config_set).returncode == 0
    try:
        wiped = cli(ADMIN, "broker", "wipe-write-perm", "broker-a", "--json")
        assert wiped.returncode == 0 and json.loads(wiped.stdout)["namesrv"][0]["wipeTopicCount"] >= 1
    finally:
        added = cli(ADMIN, "broker", "add-write-perm", "broker-a", "--json")
    assert added.returncode == 0 and json.loads(added.stdout)["namesrv"][0]["addTopicCount"] >= 1


def test_slave_follows_and_copies_metadata_with_the_brokers_admin_account(acl_cluster):
    slave = acl_cluster.brokers[1]

    def slave_has_topic() -> bool:
        return _http(slave.http_port, "GET", f"/api/v1/topics/{TOPIC}", _basic(ADMIN))[0] == 200

    wait_until(slave_has_topic, timeout=30, message=f"{TOPIC} on the slave")
    assert "not reloaded" not in slave.tail_log(200)


def test_rules_reload_when_the_file_changes(acl_cluster, acl_file):
    master = acl_cluster.brokers[0]

    async def send_later() -> int:
        pool = ConnectionPool()
        pool.request_hook = USER.sign
        try:
            return (await send(pool, master.addr, "Later", b"after-reload")).code
        finally:
            await pool.close()

    assert asyncio.run(send_later()) == ResponseCode.NO_PERMISSION
    write_acl(acl_file, '"Orders=PUB|SUB", "Later=PUB"')  # only adds a permission: the other tests hold
    deadline = time.monotonic() + 15
    code = None
    while time.monotonic() < deadline:
        code = asyncio.run(send_later())  # auto-created through TBW102: PUB on Later is enough
        if code == ResponseCode.SUCCESS:
            break
        time.sleep(0.3)
    assert code == ResponseCode.SUCCESS


def test_local_up_with_acl_and_the_cli_with_credentials(tmp_path):
    example = Path(__file__).parents[2] / "examples" / "plain_acl.yml"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = [sys.executable, "-m", "krocket.cli.main"]
    data = tmp_path / "krocket"
    proc = subprocess.Popen(
        [
            *cli,
            "local",
            "up",
            "--acl",
            str(example),
            "--groups",
            "1",
            "--namesrv-port",
            str(port),
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("KROCKET_")}

    def krocket(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**base_env, "NAMESRV_ADDR": f"127.0.0.1:{port}", **(env or {})},
        )

    try:
        line = proc.stdout.readline()  # the cluster is ready (masters and slave registered: signed)
        assert line.strip() == f"NAMESRV_ADDR=127.0.0.1:{port}", proc.stderr.read() if proc.poll() else line
        refused = krocket("topic", "create", "Orders", "-r", "2")
        assert refused.returncode != 0 and "NO_PERMISSION" in refused.stderr, refused
        admin = ["--access-key", "rocketmq-admin", "--secret-key", "change-me-admin-secret"]
        created = krocket("topic", "create", "Orders", "-r", "2", *admin)
        assert created.returncode == 0, created.stderr
        app_env = {"KROCKET_ACCESS_KEY": "orders-app", "KROCKET_SECRET_KEY": "change-me-app-secret"}
        sent = krocket("send", "--topic", "Orders", "--count", "3", "hello", env=app_env)
        assert sent.returncode == 0, sent.stderr
        assert krocket("send", "--topic", "Orders", "nope").returncode != 0  # unsigned
        got = krocket(
            "consume", "--topic", "Orders", "--group", "order-consumers", "--from", "first", "--count", "3",
            "--timeout", "20", env=app_env,
        )  # fmt: skip
        assert got.returncode == 0 and len(got.stdout.splitlines()) == 3, got.stderr
        admin_env = {"KROCKET_ACCESS_KEY": "rocketmq-admin", "KROCKET_SECRET_KEY": "change-me-admin-secret"}
        bench = ["bench", "produce", "--namesrv", f"127.0.0.1:{port}", "--mode", "seq", "--client", "sync"]
        benched = krocket(*bench, "--n", "200", "--duration", "1", "--json", "-q", env=admin_env)
        assert benched.returncode == 0 and json.loads(benched.stdout)["produce"]["msgs"] > 0, benched.stderr[-2000:]
        deleted = krocket("topic", "delete", "Orders", env=app_env)  # not an admin
        assert deleted.returncode != 0 and "NO_PERMISSION" in deleted.stderr, deleted
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert "KROCKET_ACCESS_KEY" in proc.stderr.read()  # up told how to connect
