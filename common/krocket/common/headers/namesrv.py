"""Headers of the requests a name server serves. An empty required field counts as missing there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from krocket.common.headers.fields import RequestHeader


@dataclass(slots=True)
class NamesrvHeader(RequestHeader):
    """Base of the name server's headers."""

    EMPTY_IS_MISSING: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class RegisterBrokerHeader(NamesrvHeader):
    """REGISTER_BROKER (103); the topics travel in the body."""

    broker_name: str
    broker_addr: str
    cluster_name: str
    ha_server_addr: str = ""
    broker_id: int
    compressed: bool = False
    body_crc32: int = 0
    heartbeat_timeout_millis: int | None = None


@dataclass(slots=True, kw_only=True)
class BrokerIdentityHeader(NamesrvHeader):
    """QUERY_DATA_VERSION (322; the broker's DataVersion in the body, ``changed`` in the answer) and
    REGISTER_TOPIC_IN_NAMESRV (217; a topic delta in the body, ``krocket.common.register_body``)."""

    broker_name: str
    broker_addr: str
    cluster_name: str
    broker_id: int
    compressed: bool = False


@dataclass(slots=True)
class UnregisterBrokerHeader(NamesrvHeader):
    """UNREGISTER_BROKER (104)."""

    broker_name: str
    broker_addr: str
    cluster_name: str
    broker_id: int


@dataclass(slots=True)
class RouteInfoHeader(NamesrvHeader):
    """GET_ROUTEINFO_BY_TOPIC (105)."""

    topic: str


@dataclass(slots=True)
class DeleteTopicInNamesrvHeader(NamesrvHeader):
    """DELETE_TOPIC_IN_NAMESRV (216): the topic, in every cluster or in ``cluster_name``."""

    topic: str
    cluster_name: str | None = None


@dataclass(slots=True)
class PutKVConfigHeader(NamesrvHeader):
    """PUT_KV_CONFIG (100); ``value`` may be empty (the name server refuses a missing one)."""

    namespace: str
    key: str
    value: str | None = None


@dataclass(slots=True)
class KVConfigHeader(NamesrvHeader):
    """GET_KV_CONFIG (101) and DELETE_KV_CONFIG (102): one key."""

    namespace: str
    key: str


@dataclass(slots=True)
class NamespaceHeader(NamesrvHeader):
    """GET_KVLIST_BY_NAMESPACE (219)."""

    namespace: str
