"""The unmodified RocketMQ C++ client (``rocketmq==0.4.4``) against krocket with the ACL on.

``set_session_credentials(access_key, secret_key, "")`` on the producer and the push consumer must work
unchanged: with the right secret messages go through both ways; with a wrong secret, or none (the client then
sends an empty AccessKey), nothing does. The C++ client runs in its own process: this file is also the
driver, ``python test_acl_cpp_client.py [--access-key K --secret-key S] <rmq_driver.py arguments>``, which
gives the credentials to every C++ producer and consumer and then runs ``rmq_driver.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

THIS = Path(__file__)
TOPIC = "Orders"
GROUP = "order-consumers"
ADMIN = ("rocketmq-admin", "admin-secret-1")
USER = ("rocketmq2", "user-secret-2")
ACL = """
globalWhiteRemoteAddresses: []
accounts:
  - accessKey: rocketmq-admin
    secretKey: admin-secret-1
    admin: true
  - accessKey: rocketmq2
    secretKey: user-secret-2
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms: ["Orders=PUB|SUB"]
    groupPerms: ["order-consumers=SUB", "cpp-wrong-secret=SUB", "cpp-anonymous=SUB"]
"""


def run_driver(tmp_path: Path, credentials: tuple[str, str] | None, *args: str, timeout: float = 90.0) -> list[dict]:
    home = tmp_path / "cpp-home"  # the C++ client writes its logs under $HOME/logs
    home.mkdir(exist_ok=True)
    creds = ["--access-key", credentials[0], "--secret-key", credentials[1]] if credentials else []
    proc = subprocess.run(
        [sys.executable, str(THIS), *creds, *args],
        capture_output=True,
        timeout=timeout,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("done"), f"driver failed (rc {proc.returncode}): {proc.stderr.decode()[-2000:]}"
    return lines


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator:
    pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")
    from tests.support.cluster import create_topic, start_cluster

    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(ACL)
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, acl_file=acl_file)
    try:
        from krocket.client import Credentials

        asyncio.run(create_topic(cluster, TOPIC, queues=2, credentials=Credentials(*ADMIN)))
        yield cluster
    finally:
        cluster.stop()


async def _bodies_in_topic(namesrv: str) -> list[str]:
    from krocket.client import Credentials, PullConsumer
    from krocket.client.types import PullStatus

    consumer = PullConsumer("acl-conformance-reader", namesrv, credentials=Credentials(*ADMIN))
    await consumer.start()
    try:
        out: list[str] = []
        for queue in await consumer.fetch_queues(TOPIC):
            offset = 0
            while True:
                result = await consumer.pull(queue, "*", offset, 32)
                if result.status != PullStatus.FOUND:
                    break
                out += [m.body.decode() for m in result.messages]
                offset = result.next_begin_offset
        return out
    finally:
        await consumer.shutdown()


async def _produce_with_krocket(namesrv: str, bodies: list[str]) -> None:
    from krocket.client import Credentials, Message, Producer

    async with Producer("acl-conformance-producer", namesrv, credentials=Credentials(*USER)) as producer:
        for body in bodies:
            await producer.send(Message(TOPIC, body.encode()))


def test_cpp_client_with_right_credentials_sends_and_consumes(acl_cluster, tmp_path):
    ns = acl_cluster.namesrv_addr
    sent = run_driver(tmp_path, USER, "produce", "--namesrv", ns, "--topic", TOPIC, "--count", "5", "--prefix", "ok")
    assert [s["status"] for s in sent if "sent" in s] == [0] * 5  # SEND_OK
    assert sorted(b for b in asyncio.run(_bodies_in_topic(ns)) if b.startswith("ok-")) == [f"ok-{i}" for i in range(5)]
    asyncio.run(_produce_with_krocket(ns, [f"k-{i}" for i in range(3)]))
    got = run_driver(
        tmp_path, USER, "push", "--namesrv", ns, "--topic", TOPIC, "--group", GROUP, "--expect", "8", "--timeout", "40"
    )
    bodies = sorted(g["got"] for g in got if "got" in g)
    assert bodies == sorted([f"ok-{i}" for i in range(5)] + [f"k-{i}" for i in range(3)])


@pytest.mark.parametrize(
    ("credentials", "group"), [(("rocketmq2", "wrong-secret"), "cpp-wrong-secret"), (None, "cpp-anonymous")]
)
def test_cpp_client_with_a_wrong_secret_or_none_gets_nothing_through(acl_cluster, tmp_path, credentials, group):
    ns = acl_cluster.namesrv_addr
    out = run_driver(
        tmp_path, credentials, "produce", "--namesrv", ns, "--topic", TOPIC, "--count", "1", "--prefix", "bad"
    )
    assert not any("sent" in line for line in out), out
    assert any("error" in line for line in out), out
    assert not any(b.startswith("bad-") for b in asyncio.run(_bodies_in_topic(ns)))
    denied = _acl_denied_by_code(acl_cluster.brokers[0].http_port)
    assert denied.get("310", 0) + denied.get("10", 0) >= 1, denied  # the broker refused the sends (NO_PERMISSION)
    asyncio.run(_produce_with_krocket(ns, ["for-nobody"]))
    got = run_driver(
        tmp_path,
        credentials,
        "push",
        "--namesrv",
        ns,
        "--topic",
        TOPIC,
        "--group",
        group,
        "--expect",
        "1",
        "--timeout",
        "8",
        "--linger",
        "0",
    )
    assert not any("got" in line for line in got), got


def _acl_denied_by_code(http_port: int) -> dict[str, float]:
    from tests.support.metrics import samples_by_label

    return samples_by_label(http_port, "krocket_broker_acl_denied_total", "code")


def _driver_main(argv: list[str]) -> None:
    """Give every C++ producer and consumer the credentials, then run rmq_driver.py's command."""
    access_key = secret_key = None
    while argv and argv[0] in ("--access-key", "--secret-key"):
        if argv[0] == "--access-key":
            access_key = argv[1]
        else:
            secret_key = argv[1]
        argv = argv[2:]
    import rocketmq.client as rmq

    if access_key is not None:
        for name in ("Producer", "PushConsumer", "PullConsumer"):
            base = getattr(rmq, name)

            def start(self, _base=base):  # type: ignore[no-untyped-def]
                self.set_session_credentials(access_key, secret_key or "", "")
                _base.start(self)

            setattr(rmq, name, type(name, (base,), {"start": start}))
    sys.path.insert(0, str(THIS.parent))
    import rmq_driver

    sys.argv = [str(THIS.with_name("rmq_driver.py")), *argv]
    try:
        rmq_driver.main()
    except Exception as exc:  # a refused send: report it, and that the driver finished
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        sys.stdout.write(json.dumps({"done": True}) + "\n")
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    _driver_main(sys.argv[1:])
