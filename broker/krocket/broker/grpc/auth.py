"""ACL over gRPC: the ``authorization`` header the 5.x SDKs sign, checked against the broker's plain_acl.yml
accounts and permissions, as remoting requests are (krocket.broker.acl).

The header: ``MQv2-HMAC-SHA1 Credential=<accessKey>[/...], SignedHeaders=x-mq-date-time, Signature=<hex>``, the
signature being HMAC-SHA1(secretKey, the ``x-mq-date-time`` value), hex in either case. The Python SDK sends the
header even without credentials (an empty access key): with the ACL off it is ignored. The date is not checked for
freshness: the Python SDK writes local time with a literal ``Z``, so a skew window would refuse it outside UTC."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from krocket.broker.grpc.metadata import CallMetadata
from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.status import GrpcError
from krocket.common.acl import AclAccount, PlainAcl
from krocket.common.acl.addresses import host_of
from krocket.common.acl.plain_acl import Perm
from krocket.common.topic import RETRY_GROUP_PREFIX

SCHEME = "MQv2-HMAC-SHA1"


@dataclass(frozen=True, slots=True)
class Authorization:
    access_key: str
    signed_headers: str
    signature: str


def parse_authorization(header: str) -> Authorization | None:
    """The header's parts, or None when it is absent, of another scheme or malformed."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme != SCHEME:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key.strip()] = value.strip()
    credential = parts.get("Credential", "")
    access_key = credential.split("/", 1)[0]
    if not access_key or not parts.get("Signature"):
        return None
    return Authorization(access_key, parts.get("SignedHeaders", ""), parts["Signature"])


def expected_signature(secret_key: str, date_time: str) -> str:
    return hmac.new(secret_key.encode(), date_time.encode(), hashlib.sha1).hexdigest()


def authenticate(acl: PlainAcl, meta: CallMetadata) -> AclAccount | None:
    """The account that signed the call, None for a white-listed address; UNAUTHORIZED otherwise."""
    host = host_of(meta.peer)
    if acl.is_globally_white_listed(host):
        return None
    auth = parse_authorization(meta.authorization)
    if auth is None:
        raise GrpcError(pb.UNAUTHORIZED, "the call is not signed (the ACL is on): give the client credentials")
    account = acl.account(auth.access_key)
    if account is None:
        raise GrpcError(pb.UNAUTHORIZED, f"no ACL account for accessKey {auth.access_key}")
    if account.is_white_listed(host):
        return None
    if not meta.date_time or not hmac.compare_digest(
        expected_signature(account.secret_key, meta.date_time), auth.signature.lower()
    ):
        raise GrpcError(pb.UNAUTHORIZED, f"signature check failed for accessKey {auth.access_key}")
    return account


def require(account: AclAccount | None, *, topic: str = "", group: str = "", perm: Perm = Perm.PUB) -> None:
    """``perm`` on ``topic`` (a ``%RETRY%`` topic is its group's) and on ``group``; FORBIDDEN naming what is
    missing. A white-listed call (``account`` None) passes."""
    if account is None:
        return
    needs: list[tuple[str, bool]] = []
    if topic:
        if topic.startswith(RETRY_GROUP_PREFIX):
            needs.append((topic[len(RETRY_GROUP_PREFIX) :], True))
        else:
            needs.append((topic, False))
    if group:
        needs.append((group, True))
    for name, is_group in needs:
        owned = account.group_perm(name) if is_group else account.topic_perm(name)
        if perm & owned != perm:
            kind = "group" if is_group else "topic"
            raise GrpcError(
                pb.FORBIDDEN, f"no permission to {perm.name} on {kind} {name} for accessKey {account.access_key}"
            )
