"""Registers the broker with every name server, sending each only what it lacks.

- A topic change is sent as a delta (REGISTER_TOPIC_IN_NAMESRV: the changed and deleted topics, from the data
  version the name server holds to the new one) right after the change; changes made meanwhile go together.
- Every 30 s a master asks each name server whether it holds the broker's data version (QUERY_DATA_VERSION: a few
  hundred bytes, which also keep it alive there) and registers in full only when it does not: a name server that
  restarted, missed a delta or never saw this broker process. A full body is deflated when large.
- A slave registers in full every time: the name servers take queue data from masters only, so its body carries
  no topics and stays small; the answer names its master.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from krocket.broker.config import BrokerConfig
from krocket.broker.topic_manager import TopicManager
from krocket.common.addresses import resolve_addr_list
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.headers import BrokerIdentityHeader, RegisterBrokerHeader, UnregisterBrokerHeader
from krocket.common.register_body import DataVersion, TopicDelta, encode_register_body, encode_topic_delta
from krocket.common.remoting import MAX_FRAME_BYTES, ConnectionPool, RemotingCommand
from krocket.common.route import dumps

log = logging.getLogger(__name__)

MAX_BODY_BYTES = MAX_FRAME_BYTES - 64 * 1024
"""A registration body larger than this (after compression) cannot travel in one remoting frame."""


class RegistrationTooLargeError(KrocketError):
    """The topic table does not fit in one registration even compressed."""


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
        # Per name server: the data version it holds for this broker and the identity fields it was told in the
        # last full registration; a name server missing here is registered in full next.
        self._held: dict[str, tuple[DataVersion, tuple[str, ...]]] = {}
        self._delta_base: DataVersion = topics.version()  # the version the pending changes start from
        self._round = asyncio.Lock()
        self._last_check = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.master_addr: str | None = None  # for a slave: its master's remoting and HA addresses
        self.master_ha_addr: str | None = None
        self.http_url = ""  # the HTTP admin API's base URL, once it serves (for the name server's console)
        self.grpc_addr = ""  # the 5.x gRPC endpoint host:port, once it serves ("": gRPC not served)
        self.sent_bytes = 0  # registration traffic sent (bodies and headers), for `krocket bench scale`
        self.full_registrations = 0
        self.deltas = 0
        self.version_checks = 0

    @property
    def registered(self) -> bool:
        return bool(self._registered)

    @property
    def registered_with(self) -> list[str]:
        return sorted(self._registered)

    def stats(self) -> dict[str, int]:
        """What registering has cost so far: requests by kind and bytes sent (bodies and header fields)."""
        return {
            "fullRegistrations": self.full_registrations,
            "deltas": self.deltas,
            "versionChecks": self.version_checks,
            "sentBytes": self.sent_bytes,
        }

    def _identity(self) -> tuple[str, ...]:
        return (self.ha_addr, self.http_url, self.grpc_addr)

    def _full_body(self) -> tuple[bytes, bool]:
        """The full registration body (a slave's names no topics) and whether it is compressed."""
        table = {} if self._config.is_slave else self._topics.registered_table()
        body, compressed = encode_register_body(table, self._topics.version(), self.http_url, self.grpc_addr)
        if len(body) > MAX_BODY_BYTES:
            raise RegistrationTooLargeError(
                f"the registration of {len(table)} topics is {len(body)} bytes compressed, over the {MAX_BODY_BYTES}"
                " a remoting frame carries: spread the topics over more broker groups"
            )
        return body, compressed

    def _body(self) -> bytes:
        """The full registration body as JSON (uncompressed), for tests and tools."""
        body, compressed = self._full_body()
        return zlib.decompress(body) if compressed else body

    def _take_delta(self) -> tuple[TopicDelta, dict[str, dict[str, Any]]] | None:
        """The topic changes since the last round as a delta (with the changed topics as registered), None when
        every topic may have changed (a full registration for all)."""
        changed = self._topics.take_changes()
        base, self._delta_base = self._delta_base, self._topics.version()
        if changed is None:
            return None
        table = self._topics.registered_table(changed)
        deleted = sorted(name for name in changed if name not in table)
        return TopicDelta(base, self._delta_base, {}, deleted), table

    async def register_once(self, check: bool = False) -> None:
        """One round. Changes are sent as a delta to every name server that holds the version they start from,
        in full to the others; with ``check`` (the periodic round) a master asks the rest whether they still hold
        its version, and registers in full where they do not. A slave always registers in full."""
        if not self._config.namesrv_addr:
            return
        async with self._round:
            addrs = resolve_addr_list(self._config.namesrv_addr)
            taken = self._take_delta()
            if taken is None:
                for addr in addrs:
                    self._held.pop(addr, None)  # everything changed: full registrations
                delta, delta_body = None, None
            else:
                delta, table = taken
                delta_body = encode_topic_delta(delta, table) if delta.from_version != delta.to_version else None
                if delta_body is not None and len(delta_body[0]) > MAX_BODY_BYTES:
                    self._held.clear()  # too many changes for one frame: full registrations instead
                    delta, delta_body = None, None
            results = await asyncio.gather(*(self._sync(addr, delta, delta_body, check) for addr in addrs))
            if check:
                self._last_check = time.monotonic()
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
            for stale in (self._registered | set(self._held)) - set(addrs):
                self._registered.discard(stale)
                self._held.pop(stale, None)
                self._pool.drop(stale)

    async def _sync(
        self, addr: str, delta: TopicDelta | None, delta_body: tuple[bytes, bool] | None, check: bool
    ) -> bool:
        """Bring one name server up to date; whether it is (False: unreachable or refused, retried next round)."""
        try:
            if self._config.is_slave:
                return await self._register_full(addr)
            held = self._held.get(addr)
            if held is None or held[1] != self._identity():
                return await self._register_full(addr)
            if delta is not None and delta_body is not None:
                if held[0] != delta.from_version or not await self._send_delta(addr, delta, delta_body):
                    return await self._register_full(addr)
                return True
            if check and await self._version_changed(addr):
                return await self._register_full(addr)
            return addr in self._registered or await self._register_full(addr)
        except KrocketError as exc:
            self._held.pop(addr, None)
            log.warning("cannot register with name server %s: %s", addr, exc)
            return False

    def _identity_fields(self) -> dict[str, str]:
        return BrokerIdentityHeader(
            broker_name=self._config.broker_name,
            broker_addr=self.broker_addr,
            cluster_name=self._config.broker_cluster_name,
            broker_id=self._config.broker_id,
        ).to_fields()

    async def _request(self, addr: str, cmd: RemotingCommand) -> RemotingCommand:
        self.sent_bytes += len(cmd.body or b"") + sum(len(k) + len(v) for k, v in cmd.ext_fields.items())
        response = await self._pool.request(addr, cmd, timeout=5.0)
        if response.code != ResponseCode.SUCCESS:
            raise KrocketError(f"name server {addr} refused request code {cmd.code}: {response.remark}")
        return response

    async def _register_full(self, addr: str) -> bool:
        version, identity = self._topics.version(), self._identity()
        body, compressed = self._full_body()
        fields = RegisterBrokerHeader(
            broker_name=self._config.broker_name,
            broker_addr=self.broker_addr,
            cluster_name=self._config.broker_cluster_name,
            ha_server_addr=self.ha_addr,
            broker_id=self._config.broker_id,
            compressed=compressed,
            body_crc32=zlib.crc32(body),
            heartbeat_timeout_millis=120_000,
        ).to_fields()
        response = await self._request(addr, RemotingCommand(RequestCode.REGISTER_BROKER, ext_fields=fields, body=body))
        self.full_registrations += 1
        if self._config.is_slave:
            self.master_addr = response.ext_fields.get("masterAddr") or None
            self.master_ha_addr = self._config.ha_master_address or response.ext_fields.get("haServerAddr") or None
        self._held[addr] = (version, identity)
        return True

    async def _send_delta(self, addr: str, delta: TopicDelta, delta_body: tuple[bytes, bool]) -> bool:
        """Whether the name server took the delta and now holds its version (False: register in full)."""
        body, compressed = delta_body
        fields = {**self._identity_fields(), "compressed": str(compressed).lower()}
        cmd = RemotingCommand(RequestCode.REGISTER_TOPIC_IN_NAMESRV, ext_fields=fields, body=body)
        response = await self._request(addr, cmd)
        self.deltas += 1
        if response.ext_fields.get("registered") != "true" or response.ext_fields.get("caughtUp") != "true":
            return False
        self._held[addr] = (delta.to_version, self._identity())
        return True

    async def _version_changed(self, addr: str) -> bool:
        """QUERY_DATA_VERSION: whether the name server holds another version than the broker's (or none)."""
        cmd = RemotingCommand(
            RequestCode.QUERY_DATA_VERSION, ext_fields=self._identity_fields(), body=dumps(self._topics.version())
        )
        response = await self._request(addr, cmd)
        self.version_checks += 1
        return response.ext_fields.get("changed") != "false"

    def trigger(self) -> None:
        """Register again now (a topic changed)."""
        self._wakeup.set()

    async def _loop(self) -> None:
        period = min(max(self._config.register_name_server_period / 1000.0, 1.0), 60.0)
        while True:
            self._wakeup.clear()
            try:
                await self.register_once(check=time.monotonic() - self._last_check >= period)
            except Exception:
                log.exception("registration round failed")
            # A slave that has not learned its master yet asks again soon, not in 30 s.
            wait = 1.0 if self._config.is_slave and not self.master_ha_addr else period
            wait = max(0.0, min(wait, self._last_check + period - time.monotonic()))
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
        self._held.clear()
        await self._pool.close()
