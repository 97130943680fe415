"""The ``x-mq-*`` headers every 5.x SDK call carries (rocketmq-clients' transport spec)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.status import GrpcError

CLIENT_ID = "x-mq-client-id"
LANGUAGE = "x-mq-language"
CLIENT_VERSION = "x-mq-client-version"
PROTOCOL = "x-mq-protocol"
NAMESPACE = "x-mq-namespace"
DATE_TIME = "x-mq-date-time"
REQUEST_ID = "x-mq-request-id"
AUTHORIZATION = "authorization"
SESSION_TOKEN = "x-mq-session-token"


@dataclass(frozen=True, slots=True)
class CallMetadata:
    client_id: str
    language: str
    client_version: str
    namespace: str
    date_time: str
    authorization: str
    peer: str  # "host:port" of the client's connection

    def require_client_id(self) -> str:
        """The client id; RocketMQ's proxy refuses a call without one (CLIENT_ID_REQUIRED)."""
        if not self.client_id:
            raise GrpcError(pb.CLIENT_ID_REQUIRED, f"the {CLIENT_ID} header is required")
        return self.client_id


def parse_metadata(pairs: Iterable[tuple[str, Any]] | None, peer: str) -> CallMetadata:
    """The headers of a call (``context.invocation_metadata()``; binary values are ignored)."""
    headers: dict[str, str] = {}
    for key, value in pairs or ():
        if isinstance(value, str):
            headers[key.lower()] = value
    return CallMetadata(
        client_id=headers.get(CLIENT_ID, ""),
        language=headers.get(LANGUAGE, ""),
        client_version=headers.get(CLIENT_VERSION, ""),
        namespace=headers.get(NAMESPACE, ""),
        date_time=headers.get(DATE_TIME, ""),
        authorization=headers.get(AUTHORIZATION, ""),
        peer=peer_address(peer),
    )


def peer_address(peer: str) -> str:
    """grpc's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) as ``host:port``."""
    for scheme in ("ipv4:", "ipv6:"):
        if peer.startswith(scheme):
            return peer[len(scheme) :]
    return peer
