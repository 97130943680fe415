"""The name server with an ACL file: writes need an admin's signature, reads stay open."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from krocket.common.acl import AclFile, Credentials
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.remoting import Connection, RemotingCommand, header_fields
from krocket.namesrv.kvconfig import KVConfigStore
from krocket.namesrv.processor import OPEN_READS, NamesrvProcessor
from krocket.namesrv.registry import RouteRegistry

ACL = """
accounts:
  - accessKey: admin
    secretKey: adminpw
    admin: true
  - accessKey: app
    secretKey: apppw
"""


class Peer:
    """Stands in for ``Connection``: the processor reads ``attributes`` and ``peer``."""

    def __init__(self) -> None:
        self.peer = "127.0.0.1:50000"
        self.attributes: dict[str, Any] = {}


def request(code: int, fields: dict[str, Any], creds: Credentials | None) -> RemotingCommand:
    cmd = RemotingCommand(code, ext_fields=header_fields(fields))
    if creds is not None:
        creds.sign(cmd)
    return cmd


@pytest.fixture
def processor(tmp_path) -> NamesrvProcessor:
    path = tmp_path / "plain_acl.yml"
    path.write_text(ACL)
    return NamesrvProcessor(RouteRegistry(), KVConfigStore(), acl=AclFile(path))


BROKER = {"brokerName": "broker-a", "brokerAddr": "10.0.0.9:10911", "clusterName": "C", "brokerId": 0}
WRITES = [
    (RequestCode.REGISTER_BROKER, BROKER),
    (RequestCode.UNREGISTER_BROKER, BROKER),
    (RequestCode.DELETE_TOPIC_IN_NAMESRV, {"topic": "Orders"}),
    (RequestCode.PUT_KV_CONFIG, {"namespace": "ns", "key": "k", "value": "v"}),
    (RequestCode.DELETE_KV_CONFIG, {"namespace": "ns", "key": "k"}),
]


@pytest.mark.parametrize(("code", "fields"), WRITES)
async def test_writes_need_an_admin_signature(processor, code, fields, caplog) -> None:
    conn = cast(Connection, Peer())
    with caplog.at_level(logging.WARNING):
        for creds in (None, Credentials("app", "apppw"), Credentials("admin", "wrong")):
            answer = await processor(conn, request(code, fields, creds))
            assert answer.code == ResponseCode.NO_PERMISSION, (creds, answer.remark)
    assert len([r for r in caplog.records if "refused" in r.message]) == 1  # rate-limited
    assert processor.refused == 3
    answer = await processor(conn, request(code, fields, Credentials("admin", "adminpw")))
    assert answer.code == ResponseCode.SUCCESS, answer.remark


async def test_route_and_config_reads_stay_open(processor) -> None:
    conn = cast(Connection, Peer())
    assert RequestCode.GET_ROUTEINFO_BY_TOPIC in OPEN_READS
    cluster = await processor(conn, request(RequestCode.GET_BROKER_CLUSTER_INFO, {}, None))
    assert cluster.code == ResponseCode.SUCCESS
    route = await processor(conn, request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "Orders"}, None))
    assert route.code == ResponseCode.TOPIC_NOT_EXIST  # answered, not refused
