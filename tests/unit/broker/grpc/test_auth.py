"""ACL over gRPC: the SDKs' MQv2-HMAC-SHA1 authorization checked against plain_acl.yml accounts."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from krocket.broker.grpc.auth import authenticate, parse_authorization, require
from krocket.broker.grpc.metadata import parse_metadata
from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.status import GrpcError
from krocket.common.acl import parse_plain_acl
from krocket.common.acl.plain_acl import Perm

ACL = parse_plain_acl(
    {
        "globalWhiteRemoteAddresses": ["10.9.*"],
        "accounts": [
            {
                "accessKey": "writer",
                "secretKey": "writer-secret",
                "topicPerms": ["Orders=PUB"],
                "groupPerms": ["billing=SUB"],
            },
            {"accessKey": "admin", "secretKey": "admin-secret", "admin": True},
        ],
    }
)
DATE = "20261203T131500Z"


def meta(ak: str = "writer", sk: str = "writer-secret", peer: str = "ipv4:127.0.0.1:5000", upper: bool = False):  # type: ignore[no-untyped-def]
    sig = hmac.new(sk.encode(), DATE.encode(), hashlib.sha1).hexdigest()
    header = f"MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig.upper() if upper else sig}"
    return parse_metadata([("x-mq-client-id", "c1"), ("x-mq-date-time", DATE), ("authorization", header)], peer)


def code(call) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(GrpcError) as caught:
        call()
    return caught.value.code


def test_a_signed_call_names_its_account_in_either_hex_case() -> None:
    assert authenticate(ACL, meta()).access_key == "writer"  # type: ignore[union-attr]
    assert authenticate(ACL, meta(upper=True)).access_key == "writer"  # type: ignore[union-attr]
    assert parse_authorization("MQv2-HMAC-SHA1 Credential=ak/x/y, SignedHeaders=x-mq-date-time, Signature=ab") == (
        parse_authorization("MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=ab")
    )


def test_unsigned_unknown_and_forged_calls_are_unauthorized() -> None:
    unsigned = parse_metadata([("x-mq-client-id", "c1")], "ipv4:127.0.0.1:1")
    assert code(lambda: authenticate(ACL, unsigned)) == pb.UNAUTHORIZED
    # The Python SDK signs with an empty access key when it has no credentials.
    assert code(lambda: authenticate(ACL, meta(ak=""))) == pb.UNAUTHORIZED
    assert code(lambda: authenticate(ACL, meta(ak="nobody"))) == pb.UNAUTHORIZED
    assert code(lambda: authenticate(ACL, meta(sk="guess"))) == pb.UNAUTHORIZED
    assert authenticate(ACL, meta(sk="guess", peer="ipv4:10.9.1.2:1")) is None  # white-listed


def test_permissions_on_topics_and_groups() -> None:
    writer = authenticate(ACL, meta())
    require(writer, topic="Orders", perm=Perm.PUB)
    assert code(lambda: require(writer, topic="Other", perm=Perm.PUB)) == pb.FORBIDDEN
    assert code(lambda: require(writer, topic="Orders", perm=Perm.SUB)) == pb.FORBIDDEN
    require(writer, topic="%RETRY%billing", group="billing", perm=Perm.SUB)
    admin = authenticate(ACL, meta("admin", "admin-secret"))
    require(admin, topic="Anything", group="any", perm=Perm.PUB | Perm.SUB)
