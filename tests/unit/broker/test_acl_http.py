"""The broker's HTTP API with the ACL on: bearer token, basic auth and key headers; 401, 403; SUB-filtered reads."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from krocket.broker.acl.http_guard import HttpGuard, read_token_file
from krocket.broker.config import BrokerConfig
from krocket.broker.http import BrokerState, make_app
from krocket.broker.registration import NameServerRegistration
from krocket.common.acl import AclFile
from krocket.common.errors import ConfigError

from tests.unit.broker.broker_rig import BrokerRig

ACL = """
accounts:
  - accessKey: admin
    secretKey: adminpw
    admin: true
  - accessKey: app
    secretKey: apppw
    topicPerms: ["Orders=PUB|SUB"]
    groupPerms: ["readers=SUB"]
"""


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def replication() -> dict[str, Any]:
    return {}


async def test_http_writes_need_an_admin_and_reads_follow_sub(rig: BrokerRig, tmp_path) -> None:
    acl_path = tmp_path / "plain_acl.yml"
    acl_path.write_text(ACL)
    token_path = tmp_path / "token"
    token_path.write_text("s3cret-token\n")
    guard = HttpGuard(AclFile(acl_path), read_token_file(str(token_path)))
    registration = NameServerRegistration(BrokerConfig(), rig.topics, "h:1", "h:2")
    app = make_app(rig.service, rig.metrics, BrokerState(registration, replication, serving=True), guard)
    async with TestClient(TestServer(app)) as client:
        body = {"topicName": "Orders", "readQueueNums": 2}
        assert (await client.post("/api/v1/topics", json=body)).status == 401
        assert (await client.post("/api/v1/topics", json=body, headers=_basic("admin", "wrong"))).status == 401
        assert (await client.post("/api/v1/topics", json=body, headers=_basic("app", "apppw"))).status == 403
        bad_token = {"Authorization": "Bearer nope"}
        assert (await client.post("/api/v1/topics", json=body, headers=bad_token)).status == 401
        token = {"Authorization": "Bearer s3cret-token"}
        assert (await client.post("/api/v1/topics", json=body, headers=token)).status == 200
        admin_keys = {"X-Krocket-Access-Key": "admin", "X-Krocket-Secret-Key": "adminpw"}
        other = {"topicName": "Secret", "readQueueNums": 1}
        assert (await client.post("/api/v1/topics", json=other, headers=admin_keys)).status == 200

        app_auth = _basic("app", "apppw")
        listed = await (await client.get("/api/v1/topics", headers=app_auth)).json()
        assert [t["topicName"] for t in listed["topics"]] == ["Orders"]  # Secret is not the app's to see
        assert (await client.get("/api/v1/topics/Secret", headers=app_auth)).status == 403
        assert (await client.get("/api/v1/topics/Orders", headers=app_auth)).status == 200
        assert (await client.get("/api/v1/topics/Orders")).status == 401
        assert (await client.get("/api/v1/groups/others/offsets", headers=app_auth)).status == 403
        assert (await client.get("/api/v1/groups/readers/offsets", headers=app_auth)).status == 200
        assert (await client.delete("/api/v1/topics/Orders", headers=app_auth)).status == 403
        for open_path in ("/healthz", "/readyz", "/metrics", "/api/v1/broker"):
            assert (await client.get(open_path)).status in (200, 503), open_path
        assert (await client.delete("/api/v1/topics/Orders", headers=token)).status == 200


def test_token_file_errors_name_the_setting(tmp_path) -> None:
    with pytest.raises(ConfigError, match="httpAdminTokenFile"):
        read_token_file(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token_file(str(tmp_path / "empty"))
