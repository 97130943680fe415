"""Remoting front end of the name server: one thin handler per request code over ``RouteRegistry``.

Mirrors RocketMQ's ``DefaultRequestProcessor`` / ``ClientRequestProcessor``. Routes are always sent as
standard JSON (quoted ``brokerAddrs`` keys), which every client version accepts (reference section 8.5).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from krocket.common.acl import AclAccount, AclFile, authenticate
from krocket.common.addresses import is_host_port
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import HeaderError, KrocketError, NoPermissionError
from krocket.common.headers import (
    AddWritePermOfBrokerHeader,
    BrokerIdentityHeader,
    DeleteTopicInNamesrvHeader,
    KVConfigHeader,
    NamespaceHeader,
    PutKVConfigHeader,
    RegisterBrokerHeader,
    RequestHeader,
    RouteInfoHeader,
    UnregisterBrokerHeader,
    WipeWritePermOfBrokerHeader,
)
from krocket.common.headers.inspect import ADD_TOPIC_COUNT, WIPE_TOPIC_COUNT
from krocket.common.register_body import decode_register_body, decode_topic_delta
from krocket.common.remoting import Connection, RemotingCommand, header_fields
from krocket.common.route import dumps
from krocket.common.topic import validate_broker_name
from krocket.namesrv.kvconfig import KVConfigStore
from krocket.namesrv.metrics import NamesrvMetrics
from krocket.namesrv.registry import Registration, RegistrationConflictError, RouteRegistry

log = logging.getLogger(__name__)

H = TypeVar("H", bound=RequestHeader)

_CONN_ID_KEY = "namesrv.conn_id"
_conn_ids = itertools.count(1)
_MAX_CONFLICTS_REMEMBERED = 1024  # refused registrants whose WARNING was logged (then DEBUG for repeats)

Handler = Callable[[Connection, RemotingCommand], Awaitable[RemotingCommand]]


def connection_id(conn: Connection) -> int:
    """A stable id for ``conn``, assigned on first use; brokers are remembered by it."""
    conn_id = conn.attributes.get(_CONN_ID_KEY)
    if conn_id is None:
        conn_id = next(_conn_ids)
        conn.attributes[_CONN_ID_KEY] = conn_id
    return int(conn_id)


# With the ACL on, these stay open to anyone (route and config reads); every other code, registrations, KV and
# topic writes included, needs a request signed by an admin account (brokers sign with the first one).
OPEN_READS = frozenset(
    {
        RequestCode.GET_ROUTEINFO_BY_TOPIC,
        RequestCode.GET_BROKER_CLUSTER_INFO,
        RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
        RequestCode.GET_KV_CONFIG,
        RequestCode.GET_KVLIST_BY_NAMESPACE,
        RequestCode.GET_TOPICS_BY_CLUSTER,
    }
)


def check_admin(acl: AclFile, cmd: RemotingCommand, peer: str) -> None:
    """Pass an open read, a white-listed sender or an admin's signed request; else ``NoPermissionError``."""
    if cmd.code in OPEN_READS:
        return
    account = authenticate(acl.rules, cmd, peer)
    if isinstance(account, AclAccount) and not account.admin:
        raise NoPermissionError(
            f"request code {cmd.code} on the name server needs an admin account; "
            f"accessKey {account.access_key} is not one"
        )


class BadRequestError(KrocketError):
    """A request lacks a header field or carries a bad one (RocketMQ answers SYSTEM_ERROR)."""

    code = ResponseCode.SYSTEM_ERROR


def _topic_list(topics: list[str], most: int = 20) -> str:
    """Topics for a log line: the first ``most`` and how many more."""
    if not topics:
        return "-"
    shown = ",".join(topics[:most])
    return shown if len(topics) <= most else f"{shown} and {len(topics) - most} more"


def _header(cls: type[H], cmd: RemotingCommand) -> H:
    """The request's header, or ``BadRequestError`` naming the request code and the field."""
    try:
        return cls.from_fields(cmd.ext_fields)
    except HeaderError as exc:
        if exc.value is None:
            raise BadRequestError(f"request code {cmd.code}: header field '{exc.field}' is required") from None
        raise BadRequestError(
            f"request code {cmd.code}: header field '{exc.field}' must be an integer, got {exc.value!r}"
        ) from None


class NamesrvProcessor:
    """The request handler given to ``RemotingServer``."""

    def __init__(
        self,
        registry: RouteRegistry,
        kv: KVConfigStore | None = None,
        metrics: NamesrvMetrics | None = None,
        acl: AclFile | None = None,
    ) -> None:
        self.registry = registry
        self.acl = acl
        self.refused = 0  # requests the ACL refused
        self._last_refusal_log = -1e9
        self.kv = kv if kv is not None else KVConfigStore()
        self.metrics = metrics if metrics is not None else NamesrvMetrics()
        self._conflicts_logged: set[tuple[int | None, str, int, str]] = set()
        self._handlers: dict[int, Handler] = {
            RequestCode.PUT_KV_CONFIG: self.put_kv_config,
            RequestCode.GET_KV_CONFIG: self.get_kv_config,
            RequestCode.DELETE_KV_CONFIG: self.delete_kv_config,
            RequestCode.REGISTER_BROKER: self.register_broker,
            RequestCode.REGISTER_TOPIC_IN_NAMESRV: self.register_topics,
            RequestCode.QUERY_DATA_VERSION: self.query_data_version,
            RequestCode.UNREGISTER_BROKER: self.unregister_broker,
            RequestCode.GET_ROUTEINFO_BY_TOPIC: self.get_route,
            RequestCode.GET_BROKER_CLUSTER_INFO: self.get_cluster_info,
            RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER: self.get_all_topics,
            RequestCode.DELETE_TOPIC_IN_NAMESRV: self.delete_topic,
            RequestCode.GET_KVLIST_BY_NAMESPACE: self.get_kv_list,
            RequestCode.WIPE_WRITE_PERM_OF_BROKER: self.wipe_write_perm,
            RequestCode.ADD_WRITE_PERM_OF_BROKER: self.add_write_perm,
        }

    async def __call__(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        self.metrics.count_request(cmd.code)
        handler = self._handlers.get(cmd.code)
        if handler is None:
            return cmd.response(
                ResponseCode.REQUEST_CODE_NOT_SUPPORTED, f"request code {cmd.code} is not supported by the name server"
            )
        try:
            if self.acl is not None:
                check_admin(self.acl, cmd, conn.peer)
            return await handler(conn, cmd)
        except NoPermissionError as exc:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= 10.0:  # one line per 10 s, however many are refused
                self._last_refusal_log = now
                log.warning(
                    "refused request code %d from %s (%d refused so far): %s",
                    cmd.code,
                    conn.peer,
                    self.refused,
                    exc.message,
                )
            return cmd.response(exc.code, exc.message)
        except KrocketError as exc:
            return cmd.response(exc.code, exc.message)

    # -- brokers ----------------------------------------------------------------------------------------
    async def register_broker(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        h = _header(RegisterBrokerHeader, cmd)
        body = decode_register_body(cmd.body, h.compressed)
        configs = body.topic_configs
        validate_broker_name("clusterName", h.cluster_name)
        validate_broker_name("brokerName", h.broker_name)
        if not is_host_port(h.broker_addr):
            raise BadRequestError(f"REGISTER_BROKER: brokerAddr {h.broker_addr!r} is not host:port")
        if h.ha_server_addr and not is_host_port(h.ha_server_addr, min_port=0):  # a slave serves no HA: port 0
            raise BadRequestError(f"REGISTER_BROKER: haServerAddr {h.ha_server_addr!r} is not host:port")
        reg = Registration(
            cluster=h.cluster_name,
            broker_name=h.broker_name,
            broker_id=h.broker_id,
            addr=h.broker_addr,
            ha_server_addr=h.ha_server_addr,
            topic_configs=configs,
            data_version=body.data_version,
            conn_id=connection_id(conn),
            peer_host=conn.peer.rpartition(":")[0] or None,
            http_url=body.http_url,
            grpc_addr=body.grpc_addr,
        )
        try:
            result = self.registry.register(reg)
        except RegistrationConflictError as exc:
            self._log_conflict(exc)
            raise
        if result.first:
            log.info(
                "broker registered: cluster=%s name=%s id=%d addr=%s ha=%s grpc=%s topics=%d (from %s)",
                reg.cluster,
                reg.broker_name,
                reg.broker_id,
                reg.addr,
                reg.ha_server_addr or "-",
                reg.grpc_addr or "-",
                len(configs or {}),
                conn.peer,
            )
        elif result.changed:
            log.info(
                "broker changed: cluster=%s name=%s id=%d addr=%s ha=%s grpc=%s topics updated=%s",
                reg.cluster,
                reg.broker_name,
                reg.broker_id,
                reg.addr,
                reg.ha_server_addr or "-",
                reg.grpc_addr or "-",
                _topic_list(result.topics_updated),
            )
        return cmd.response(
            ResponseCode.SUCCESS,
            ext_fields=header_fields({"haServerAddr": result.ha_server_addr, "masterAddr": result.master_addr}),
        )

    async def register_topics(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        """A registered broker's topic delta; ``registered`` false tells it to register in full."""
        h = _header(BrokerIdentityHeader, cmd)
        delta = decode_topic_delta(cmd.body, h.compressed)
        result = self.registry.apply_delta(h.broker_name, h.broker_id, h.broker_addr, delta, connection_id(conn))
        if result.topics_updated:
            log.info(
                "topics of %s changed: %s%s",
                h.broker_name,
                _topic_list(result.topics_updated),
                "" if result.caught_up else " (a change was missed: waiting for a full registration)",
            )
        fields = {"registered": str(result.known).lower(), "caughtUp": str(result.caught_up).lower()}
        return cmd.response(ResponseCode.SUCCESS, ext_fields=fields)

    async def query_data_version(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        """Whether the broker's data version (the body) differs from the one registered here; keeps it alive."""
        h = _header(BrokerIdentityHeader, cmd)
        try:
            version = json.loads(cmd.body) if cmd.body else None
        except (UnicodeDecodeError, ValueError):
            raise BadRequestError("QUERY_DATA_VERSION body is not a DataVersion JSON object") from None
        if not isinstance(version, dict):
            raise BadRequestError("QUERY_DATA_VERSION body is not a DataVersion JSON object")
        changed = self.registry.query_data_version(
            h.broker_name, h.broker_id, h.broker_addr, version, connection_id(conn)
        )
        info = self.registry.broker(h.broker_addr)
        held = info.data_version if info is not None and not changed else None
        return cmd.response(
            ResponseCode.SUCCESS, ext_fields={"changed": str(changed).lower()}, body=dumps(held) if held else b""
        )

    def _log_conflict(self, exc: RegistrationConflictError) -> None:
        """One WARNING per refused registrant (connection and claimed identity), DEBUG for its repeats."""
        reg = exc.registration
        key = (reg.conn_id, reg.broker_name, reg.broker_id, reg.addr)
        if key in self._conflicts_logged:
            log.debug("registration refused again: %s", exc.message)
            return
        if len(self._conflicts_logged) >= _MAX_CONFLICTS_REMEMBERED:
            self._conflicts_logged.clear()
        self._conflicts_logged.add(key)
        log.warning("registration refused: %s", exc.message)

    async def unregister_broker(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        h = _header(UnregisterBrokerHeader, cmd)
        removed = self.registry.unregister(
            h.cluster_name, h.broker_name, h.broker_id, h.broker_addr, conn_id=connection_id(conn)
        )
        if removed is not None:
            log.info(
                "broker unregistered: cluster=%s name=%s id=%d addr=%s",
                removed.cluster,
                removed.broker_name,
                removed.broker_id,
                removed.addr,
            )
        return cmd.response(ResponseCode.SUCCESS)

    async def get_cluster_info(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.response(ResponseCode.SUCCESS, body=dumps(self.registry.cluster_info()))

    # -- topics -------------------------------------------------------------------------------------------
    async def get_route(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        topic = _header(RouteInfoHeader, cmd).topic
        route = self.registry.route(topic)
        if route is None:
            return cmd.response(
                ResponseCode.TOPIC_NOT_EXIST, f"No topic route info in name server for the topic: {topic}"
            )
        return cmd.response(ResponseCode.SUCCESS, body=dumps(route.to_json()))

    async def get_all_topics(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.response(ResponseCode.SUCCESS, body=dumps({"topicList": self.registry.topics()}))

    async def delete_topic(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        h = _header(DeleteTopicInNamesrvHeader, cmd)
        topic, cluster = h.topic, h.cluster_name or None
        if self.registry.delete_topic(topic, cluster):
            log.info("topic %s deleted%s", topic, f" in cluster {cluster}" if cluster else "")
        return cmd.response(ResponseCode.SUCCESS)

    async def wipe_write_perm(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        broker_name = _header(WipeWritePermOfBrokerHeader, cmd).broker_name
        count = self.registry.wipe_write_perm(broker_name)
        log.info("write permission of broker %s wiped on %d topic(s)", broker_name, count)
        return cmd.response(ResponseCode.SUCCESS, ext_fields={WIPE_TOPIC_COUNT: str(count)})

    async def add_write_perm(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        broker_name = _header(AddWritePermOfBrokerHeader, cmd).broker_name
        count = self.registry.add_write_perm(broker_name)
        log.info("write permission of broker %s added on %d topic(s)", broker_name, count)
        return cmd.response(ResponseCode.SUCCESS, ext_fields={ADD_TOPIC_COUNT: str(count)})

    # -- KV config ----------------------------------------------------------------------------------------
    async def put_kv_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        h = _header(PutKVConfigHeader, cmd)
        if h.value is None:
            raise BadRequestError(f"request code {cmd.code}: header field 'value' is required")
        self.kv.put(h.namespace, h.key, h.value)
        return cmd.response(ResponseCode.SUCCESS)

    async def get_kv_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        h = _header(KVConfigHeader, cmd)
        namespace, key = h.namespace, h.key
        value = self.kv.get(namespace, key)
        if value is None:
            return cmd.response(ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {namespace} Key: {key}")
        return cmd.response(ResponseCode.SUCCESS, ext_fields={"value": value})

    async def delete_kv_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        h = _header(KVConfigHeader, cmd)
        self.kv.delete(h.namespace, h.key)
        return cmd.response(ResponseCode.SUCCESS)

    async def get_kv_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        namespace = _header(NamespaceHeader, cmd).namespace
        table = self.kv.namespace(namespace)
        if not table:
            return cmd.response(ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {namespace}")
        return cmd.response(ResponseCode.SUCCESS, body=dumps({"table": table}))
