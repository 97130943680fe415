"""PullConsumer: the caller picks queues and offsets; helpers read and write the group's broker offsets."""

from __future__ import annotations

import logging
import ssl

from krocket.common.acl import Credentials, resolve_credentials
from krocket.common.errors import KrocketError
from krocket.common.record import UndecodableRecord
from krocket.common.remoting.tls import client_tls
from krocket.common.route import MASTER_ID
from krocket.common.topic import validate_group

from . import broker_api
from .instance import ClientInstance
from .rebalance import subscribe_queues
from .subscription import build_subscription
from .types import MessageQueue, PullResult

log = logging.getLogger(__name__)


class PullConsumer:
    def __init__(
        self,
        group: str,
        namesrv: str | None = None,
        *,
        timeout: float = 3.0,
        instance_name: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        validate_group(group)
        self.group = group
        self.timeout = timeout
        self._namesrv = namesrv
        self._instance_name = instance_name
        self.ssl_context = client_tls(tls, tls_ca)  # TLS when told, or by KROCKET_TLS_ENABLE / KROCKET_TLS_CA
        # ACL (RocketMQ 4.x): every request signed; default from KROCKET_ACCESS_KEY / KROCKET_SECRET_KEY.
        self.credentials = resolve_credentials(credentials)
        self._instance: ClientInstance | None = None
        self.undecodable_records = 0  # records skipped because they could not be decoded

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise KrocketError(f"pull consumer {self.group} is not started; call start() first")
        return self._instance

    async def start(self) -> None:
        if self._instance is None:
            self._instance = ClientInstance(
                self._namesrv,
                instance_name=self._instance_name,
                timeout=self.timeout,
                ssl_context=self.ssl_context,
                credentials=self.credentials,
            )
            await self._instance.start()
            log.info("pull consumer %s started as %s", self.group, self._instance.client_id)

    async def shutdown(self) -> None:
        if self._instance is not None:
            instance, self._instance = self._instance, None
            await instance.shutdown()
            log.info("pull consumer %s stopped", self.group)

    async def __aenter__(self) -> PullConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def fetch_queues(self, topic: str) -> list[MessageQueue]:
        """Every readable queue of ``topic`` (a fresh route). Raises ``TopicNotExistError``."""
        return subscribe_queues(topic, await self.instance.route(topic, fresh=True))

    async def _addr(self, queue: MessageQueue, broker_id: int = MASTER_ID) -> str:
        instance = self.instance
        addr = instance.broker_addr(queue.broker_name, broker_id)
        if addr is None:
            await instance.route(queue.topic, fresh=True)
            addr = instance.broker_addr(queue.broker_name, broker_id)
        if addr is None:
            raise KrocketError(f"broker {queue.broker_name} is not in the route of {queue.topic}")
        return addr

    async def pull(
        self,
        queue: MessageQueue,
        expression: str = "*",
        offset: int = 0,
        max_nums: int = 32,
        timeout: float | None = None,
        block_ms: int = 0,
    ) -> PullResult:
        """Pull up to ``max_nums`` messages from ``offset``; with ``block_ms`` the broker waits that long for
        new ones (long polling). The result's ``next_begin_offset`` is where to pull next."""
        sub = build_subscription(queue.topic, expression)
        rpc_timeout = timeout if timeout is not None else self.timeout + block_ms / 1000
        return await broker_api.pull_message(
            self.instance.pool,
            await self._addr(queue),
            self.group,
            queue,
            offset,
            sub,
            max_nums,
            suspend_ms=block_ms,
            timeout=rpc_timeout,
            on_undecodable=self._skip_undecodable,
        )

    def _skip_undecodable(self, queue: MessageQueue, bad: UndecodableRecord) -> None:
        """A record that cannot be decoded: one WARNING, counted; ``next_begin_offset`` is past it."""
        self.undecodable_records += 1
        broker_api.log_undecodable(queue, bad)

    async def min_offset(self, queue: MessageQueue) -> int:
        return await broker_api.min_offset(self.instance.pool, await self._addr(queue), queue, self.timeout)

    async def max_offset(self, queue: MessageQueue) -> int:
        return await broker_api.max_offset(self.instance.pool, await self._addr(queue), queue, self.timeout)

    async def search_offset(self, queue: MessageQueue, timestamp: float) -> int:
        """The first offset whose message was stored at or after ``timestamp`` (Unix seconds)."""
        return await broker_api.search_offset(
            self.instance.pool, await self._addr(queue), queue, int(timestamp * 1000), self.timeout
        )

    async def fetch_offset(self, queue: MessageQueue) -> int:
        """The group's offset stored on the broker, -1 when it has none."""
        return await broker_api.query_consumer_offset(
            self.instance.pool, await self._addr(queue), self.group, queue, self.timeout
        )

    async def update_offset(self, queue: MessageQueue, offset: int) -> None:
        """Store the group's offset of ``queue`` on its broker."""
        await broker_api.update_consumer_offset(
            self.instance.pool, await self._addr(queue), self.group, queue, offset, self.timeout
        )
