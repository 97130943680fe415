"""The official RocketMQ 5.x Python SDK (``rocketmq-python-client==5.1.2``) against a broker with the ACL on: the
SDK signs every call (``authorization``: HMAC-SHA1 of ``x-mq-date-time``) and the broker checks it against the
same plain_acl.yml accounts and permissions as remoting. Right credentials send and consume; a wrong secret, an
unknown access key or none get nothing in or out; an account with PUB but not SUB sends but cannot receive."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.client import Credentials

from tests.conformance.test_rocketmq_cpp_client import read_all
from tests.support.cluster import LocalCluster, create_topic, start_cluster
from tests.support.rmq5 import run_sdk, sdk_log

TOPIC = "V5Secured"
GROUP = "v5-secured-readers"
ADMIN = ("rocketmq-admin", "admin-secret-1")
USER = ("v5-user", "user-secret-2")
WRITER = ("v5-writer", "writer-secret-3")
ACL = f"""
globalWhiteRemoteAddresses: []
accounts:
  - accessKey: {ADMIN[0]}
    secretKey: {ADMIN[1]}
    admin: true
  - accessKey: {USER[0]}
    secretKey: {USER[1]}
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms: ["{TOPIC}=PUB|SUB"]
    groupPerms: ["{GROUP}=SUB"]
  - accessKey: {WRITER[0]}
    secretKey: {WRITER[1]}
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms: ["{TOPIC}=PUB"]
    groupPerms: ["{GROUP}=SUB"]
"""


@pytest.fixture(scope="module")
def acl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("sdk5acl")
    acl_file = data / "plain_acl.yml"
    acl_file.write_text(ACL)
    cluster = start_cluster(data / "cluster", namesrvs=1, groups=1, auto_create=False, acl_file=acl_file)
    try:
        asyncio.run(create_topic(cluster, TOPIC, queues=2, credentials=Credentials(*ADMIN)))
        yield cluster
    finally:
        cluster.stop()


def sdk(cluster: LocalCluster, home: Path, credentials: tuple[str, str] | None, *args: str) -> list[dict]:
    signed = ["--ak", credentials[0], "--sk", credentials[1]] if credentials else []
    endpoint = f"127.0.0.1:{cluster.brokers[0].grpc_port}"
    return run_sdk(home, "--endpoints", endpoint, *signed, *args, timeout=90)


def stored_bodies(cluster: LocalCluster) -> list[str]:
    messages = asyncio.run(read_all(cluster.namesrv_addr, TOPIC, credentials=Credentials(*ADMIN)))
    return sorted(m.body.decode() for m in messages)


def refused(lines: list[dict]) -> list[str]:
    """What the SDK reported as refused: a start that failed, or sends that did."""
    return [str(line.get("startup_error") or line["error"]) for line in lines if {"startup_error", "error"} & set(line)]


def test_right_credentials_send_and_consume(acl_cluster: LocalCluster, tmp_path: Path) -> None:
    sent = sdk(acl_cluster, tmp_path / "p", USER, "produce", "--topic", TOPIC, "--count", "3", "--prefix", "ok")
    assert [line["sent"] for line in sent if "sent" in line] == ["ok-0", "ok-1", "ok-2"], sent
    got = sdk(acl_cluster, tmp_path / "c", USER, "simple", "--topic", TOPIC, "--group", GROUP, "--expect", "3")
    assert not [line for line in got if "receive_error" in line], got
    delivered = [line for line in got if "got" in line]
    assert sorted(line["got"] for line in delivered) == ["ok-0", "ok-1", "ok-2"]
    assert all(line["acked"] for line in delivered)


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        ((USER[0], "not-the-secret"), f"40100, signature check failed for accessKey {USER[0]}"),
        (("nobody", "whatever"), "40100, no ACL account for accessKey nobody"),
        (None, "40100, the call is not signed"),
    ],
    ids=["wrong-secret", "unknown-access-key", "unsigned"],
)
def test_wrong_or_missing_credentials_get_nothing_in(
    acl_cluster: LocalCluster, tmp_path: Path, credentials: tuple[str, str] | None, reason: str
) -> None:
    prefix = f"bad-{'none' if credentials is None else credentials[0]}"
    lines = sdk(acl_cluster, tmp_path / "p", credentials, "produce", "--topic", TOPIC, "--count", "2",
                "--prefix", prefix)  # fmt: skip
    assert not [line for line in lines if "sent" in line], lines
    assert refused(lines), lines
    assert reason in sdk_log(tmp_path / "p")  # the SDK reports a failed route lookup; its log says why
    assert not [body for body in stored_bodies(acl_cluster) if body.startswith(prefix)]


def test_wrong_credentials_receive_nothing(acl_cluster: LocalCluster, tmp_path: Path) -> None:
    sent = sdk(acl_cluster, tmp_path / "p", USER, "produce", "--topic", TOPIC, "--count", "2", "--prefix", "kept")
    assert len([line for line in sent if "sent" in line]) == 2, sent
    lines = sdk(acl_cluster, tmp_path / "c", (USER[0], "not-the-secret"), "simple", "--topic", TOPIC,
                "--group", "v5-thieves", "--expect", "1", "--timeout", "6")  # fmt: skip
    assert not [line for line in lines if "got" in line], lines
    assert refused(lines) or [line for line in lines if "receive_error" in line], lines
    assert f"40100, signature check failed for accessKey {USER[0]}" in sdk_log(tmp_path / "c")


def test_an_account_without_sub_sends_but_cannot_receive(acl_cluster: LocalCluster, tmp_path: Path) -> None:
    sent = sdk(acl_cluster, tmp_path / "p", WRITER, "produce", "--topic", TOPIC, "--count", "2", "--prefix", "writer")
    assert [line["sent"] for line in sent if "sent" in line] == ["writer-0", "writer-1"], sent
    lines = sdk(acl_cluster, tmp_path / "c", WRITER, "simple", "--topic", TOPIC, "--group", GROUP,
                "--expect", "1", "--timeout", "6")  # fmt: skip
    assert not [line for line in lines if "got" in line], lines
    errors = refused(lines) + [line["receive_error"] for line in lines if "receive_error" in line]
    forbidden = f"40300, no permission to SUB on topic {TOPIC} for accessKey {WRITER[0]}"
    assert errors and all(forbidden in e for e in errors), errors
