"""Registers the broker with every name server: every 30 s, right after a topic change, and on stop."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from krocket.broker.config import BrokerConfig
from krocket.broker.topic_manager import TopicManager
from krocket.common.addresses import resolve_addr_list
from krocket.common.broker_grpc import GRPC_ADDR_FIELD
from krocket.common.broker_http import HTTP_URL_FIELD
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.headers import RegisterBrokerHeader, UnregisterBrokerHeader
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.route import dumps

log = logging.getLogger(__name__)


class NameServerRegistration:
    def __init__(
        self,
        config: BrokerConfig,
        topics: TopicManager,
        broker_addr: str,
        ha_addr: str,
        sign: Callable[[RemotingCommand], None] | None = None,
    ) -> None:
        self._config = config
        self._topics = topics
        self.broker_addr = broker_addr
        self.ha_addr = ha_addr
        self._pool = ConnectionPool(ssl_context=config.tls_client_context())
        self._pool.request_hook = sign  # with the ACL on: the broker's admin account signs (krocket.broker.acl)
        self._registered: set[str] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.master_addr: str | None = None  # for a slave: its master's remoting and HA addresses
        self.master_ha_addr: str | None = None
        self.http_url = ""  # the HTTP admin API's base URL, once it serves (for the name server's console)
        self.grpc_addr = ""  # the 5.x gRPC endpoint host:port, once it serves ("": gRPC not served)

    @property
    def registered(self) -> bool:
        return bool(self._registered)

    @property
    def registered_with(self) -> list[str]:
        return sorted(self._registered)

    def _body(self) -> bytes:
        topics = self._topics
        table = {}
        for name, cfg in topics.topics.items():
            entry = cfg.to_json()
            entry["perm"] = topics.registered_perm(cfg)
            table[name] = entry
        return dumps(
            {
                "topicConfigSerializeWrapper": {
                    "topicConfigTable": table,
                    "dataVersion": {"counter": self._topics.data_version, "stateVersion": 0, "timestamp": 0},
                },
                "filterServerList": [],
                **({HTTP_URL_FIELD: self.http_url} if self.http_url else {}),
                **({GRPC_ADDR_FIELD: self.grpc_addr} if self.grpc_addr else {}),
            }
        )

    async def register_once(self) -> None:
        if not self._config.namesrv_addr:
            return
        addrs = resolve_addr_list(self._config.namesrv_addr)
        body = self._body()
        fields = RegisterBrokerHeader(
            broker_name=self._config.broker_name,
            broker_addr=self.broker_addr,
            cluster_name=self._config.broker_cluster_name,
            ha_server_addr=self.ha_addr,
            broker_id=self._config.broker_id,
            compressed=False,
            body_crc32=zlib.crc32(body),
            heartbeat_timeout_millis=120_000,
        ).to_fields()
        results = await asyncio.gather(*(self._register_at(a, fields, body) for a in addrs))
        for addr, ok in zip(addrs, results, strict=True):
            if ok and addr not in self._registered:
                log.info(
                    "registered %s (%s id %d) with name server %s",
                    self.broker_addr,
                    self._config.broker_name,
                    self._config.broker_id,
                    addr,
                )
                self._registered.add(addr)
            elif not ok and addr in self._registered:
                self._registered.discard(addr)
        for stale in self._registered - set(addrs):
            self._registered.discard(stale)
            self._pool.drop(stale)

    async def _register_at(self, addr: str, fields: dict[str, str], body: bytes) -> bool:
        cmd = RemotingCommand(RequestCode.REGISTER_BROKER, ext_fields=dict(fields), body=body)
        try:
            response = await self._pool.request(addr, cmd, timeout=5.0)
        except KrocketError as exc:
            log.warning("cannot register with name server %s: %s", addr, exc)
            return False
        if response.code != ResponseCode.SUCCESS:
            log.warning("name server %s refused registration: %s", addr, response.remark)
            return False
        if self._config.is_slave:
            self.master_addr = response.ext_fields.get("masterAddr") or None
            self.master_ha_addr = self._config.ha_master_address or response.ext_fields.get("haServerAddr") or None
        return True

    def trigger(self) -> None:
        """Register again now (a topic changed)."""
        self._wakeup.set()

    async def _loop(self) -> None:
        period = min(max(self._config.register_name_server_period / 1000.0, 1.0), 60.0)
        while True:
            self._wakeup.clear()
            try:
                await self.register_once()
            except Exception:
                log.exception("registration round failed")
            # A slave that has not learned its master yet asks again soon, not in 30 s.
            wait = 1.0 if self._config.is_slave and not self.master_ha_addr else period
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        fields = UnregisterBrokerHeader(
            broker_name=self._config.broker_name,
            broker_addr=self.broker_addr,
            cluster_name=self._config.broker_cluster_name,
            broker_id=self._config.broker_id,
        ).to_fields()
        for addr in list(self._registered):
            try:
                await self._pool.request(
                    addr, RemotingCommand(RequestCode.UNREGISTER_BROKER, ext_fields=dict(fields)), timeout=2.0
                )
            except KrocketError as exc:
                log.warning("cannot unregister from name server %s: %s", addr, exc)
        self._registered.clear()
        await self._pool.close()
