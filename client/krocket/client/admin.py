"""Admin: topics (create, update, delete, list, route), cluster info and consumer progress."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from krocket.common.acl import Credentials, resolve_credentials
from krocket.common.codes import PERM_READ_WRITE, RequestCode, ResponseCode
from krocket.common.errors import KrocketError, RemoteError, TopicNotExistError
from krocket.common.headers import CreateTopicHeader, DeleteTopicInBrokerHeader, RequestHeader
from krocket.common.remoting.tls import client_tls
from krocket.common.route import MASTER_ID, BrokerData, TopicRouteData
from krocket.common.topic import AUTO_CREATE_TOPIC_KEY, validate_group, validate_topic

from . import broker_api
from .instance import ClientInstance
from .rebalance import subscribe_queues
from .types import MessageQueue

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClusterInfo:
    brokers: dict[str, BrokerData]  # brokerName -> BrokerData
    clusters: dict[str, list[str]]  # cluster -> brokerNames

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterInfo:
        brokers = {str(name): BrokerData.from_json(b) for name, b in (data.get("brokerAddrTable") or {}).items()}
        clusters = {str(c): sorted(str(n) for n in names) for c, names in (data.get("clusterAddrTable") or {}).items()}
        return cls(brokers, clusters)

    def masters(self, cluster: str | None = None, broker_names: list[str] | None = None) -> dict[str, str]:
        """brokerName -> master address, of one cluster, of the named brokers, or of every broker."""
        if broker_names is not None:
            names = broker_names
        elif cluster is not None:
            if cluster not in self.clusters:
                raise KrocketError(f"cluster {cluster!r} is unknown; known: {', '.join(sorted(self.clusters))}")
            names = self.clusters[cluster]
        else:
            names = sorted(self.brokers)
        out: dict[str, str] = {}
        for name in names:
            broker = self.brokers.get(name)
            if broker is None:
                raise KrocketError(f"broker {name!r} is unknown to the name servers")
            addr = broker.master_addr()
            if addr is None:
                raise KrocketError(f"broker {name!r} has no master online")
            out[name] = addr
        return out


@dataclass(slots=True)
class QueueProgress:
    topic: str
    broker: str
    queue_id: int
    broker_offset: int
    consumer_offset: int
    lag: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "broker": self.broker,
            "queue_id": self.queue_id,
            "broker_offset": self.broker_offset,
            "consumer_offset": self.consumer_offset,
            "lag": self.lag,
        }


class Admin:
    def __init__(
        self,
        namesrv: str | None = None,
        *,
        timeout: float = 5.0,
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.timeout = timeout
        self.ssl_context = client_tls(tls, tls_ca)  # TLS when told, or by KROCKET_TLS_ENABLE / KROCKET_TLS_CA
        # ACL (RocketMQ 4.x): every request signed; default from KROCKET_ACCESS_KEY / KROCKET_SECRET_KEY.
        self.credentials = resolve_credentials(credentials)
        self._namesrv = namesrv
        self._instance: ClientInstance | None = None

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise KrocketError("admin is not started; call start() first")
        return self._instance

    async def start(self) -> None:
        if self._instance is None:
            self._instance = ClientInstance(
                self._namesrv, timeout=self.timeout, ssl_context=self.ssl_context, credentials=self.credentials
            )

    async def shutdown(self) -> None:
        if self._instance is not None:
            instance, self._instance = self._instance, None
            await instance.pool.close()

    async def __aenter__(self) -> Admin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- name server views -----------------------------------------------------------------------------
    async def cluster_info(self) -> ClusterInfo:
        return ClusterInfo.from_json(await self.instance.namesrv.cluster_info())

    async def list_topics(self) -> list[str]:
        return await self.instance.namesrv.topic_list()

    async def topic_route(self, topic: str) -> TopicRouteData:
        """The topic's current route. Raises ``TopicNotExistError``."""
        return await self.instance.route(topic, fresh=True)

    # -- topics -----------------------------------------------------------------------------------------
    async def create_topic(
        self,
        topic: str,
        read_queues: int = 8,
        write_queues: int = 8,
        perm: int = PERM_READ_WRITE,
        cluster: str | None = None,
        broker_names: list[str] | None = None,
        order: bool = False,
    ) -> list[str]:
        """Create or update ``topic`` on every master of ``cluster`` (or of ``broker_names``, or of every
        cluster when neither is given). Returns the broker names it was applied to."""
        validate_topic(topic)
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        if not masters:
            raise KrocketError("no broker to create the topic on")
        header = CreateTopicHeader(
            topic=topic,
            default_topic=AUTO_CREATE_TOPIC_KEY,
            read_queue_nums=read_queues,
            write_queue_nums=write_queues,
            perm=perm,
            topic_filter_type="SINGLE_TAG",
            topic_sys_flag=0,
            order=order,
        )
        await self._on_all(masters, RequestCode.UPDATE_AND_CREATE_TOPIC, header)
        self.instance.namesrv.forget(topic)
        log.info(
            "topic %s (%d read / %d write queues, perm %d) applied to %s",
            topic,
            read_queues,
            write_queues,
            perm,
            ", ".join(sorted(masters)),
        )
        return sorted(masters)

    update_topic = create_topic

    async def delete_topic(self, topic: str, cluster: str | None = None, broker_names: list[str] | None = None) -> None:
        """Delete ``topic`` from the masters (of ``cluster``/``broker_names``, default all), then from
        every name server."""
        validate_topic(topic)
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        await self._on_all(masters, RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicInBrokerHeader(topic))
        await self.instance.namesrv.delete_topic(topic)
        self.instance.namesrv.forget(topic)
        log.info("topic %s deleted from %s and the name servers", topic, ", ".join(sorted(masters)))

    async def topic_config(self, broker_addr: str) -> dict[str, Any]:
        """The broker's topic table (GET_ALL_TOPIC_CONFIG): topic -> config dict."""
        response = await broker_api.invoke(
            self.instance.pool, broker_addr, RequestCode.GET_ALL_TOPIC_CONFIG, timeout=self.timeout
        )
        return dict(broker_api.json_body(response).get("topicConfigTable") or {})

    async def broker_runtime_info(self, broker_addr: str) -> dict[str, str]:
        """The broker's runtime table (GET_BROKER_RUNTIME_INFO): commit log end, replication, counters."""
        response = await broker_api.invoke(
            self.instance.pool, broker_addr, RequestCode.GET_BROKER_RUNTIME_INFO, timeout=self.timeout
        )
        return {str(k): str(v) for k, v in (broker_api.json_body(response).get("table") or {}).items()}

    async def _on_all(self, masters: dict[str, str], code: int, header: RequestHeader) -> None:
        results = await asyncio.gather(
            *(
                broker_api.invoke(self.instance.pool, addr, code, header, timeout=self.timeout)
                for addr in masters.values()
            ),
            return_exceptions=True,
        )
        errors = [f"{name}: {r}" for name, r in zip(masters, results, strict=True) if isinstance(r, BaseException)]
        if errors:
            raise KrocketError(f"request {code} failed on {'; '.join(errors)}")

    # -- consumer progress -----------------------------------------------------------------------------
    async def consumer_progress(self, group: str, topic: str | None = None) -> list[QueueProgress]:
        """Per queue: the broker's max offset, the group's committed offset and the lag between them.

        Without ``topic``, the topics are those the brokers hold offsets of ``group`` for
        (GET_ALL_CONSUMER_OFFSET 43)."""
        validate_group(group)
        topics = [topic] if topic else await self._topics_of_group(group)
        rows: list[QueueProgress] = []
        for name in topics:
            try:
                route = await self.instance.route(name, fresh=True)
            except TopicNotExistError:
                if topic:
                    raise
                continue
            rows.extend(await asyncio.gather(*(self._progress(group, mq) for mq in subscribe_queues(name, route))))
        return rows

    async def _progress(self, group: str, mq: MessageQueue) -> QueueProgress:
        instance = self.instance
        addr = instance.broker_addr(mq.broker_name)
        if addr is None:
            raise KrocketError(f"broker {mq.broker_name} is not in the route")
        broker_offset = await broker_api.max_offset(instance.pool, addr, mq, self.timeout)
        consumer_offset = await broker_api.query_consumer_offset(instance.pool, addr, group, mq, self.timeout)
        lag = broker_offset - max(consumer_offset, 0)
        return QueueProgress(mq.topic, mq.broker_name, mq.queue_id, broker_offset, consumer_offset, max(lag, 0))

    async def _topics_of_group(self, group: str) -> list[str]:
        info = await self.cluster_info()
        topics: set[str] = set()
        for broker in info.brokers.values():
            addr = broker.broker_addrs.get(MASTER_ID)
            if addr is None:
                continue
            try:
                response = await broker_api.invoke(
                    self.instance.pool, addr, RequestCode.GET_ALL_CONSUMER_OFFSET, timeout=self.timeout
                )
            except RemoteError as exc:
                if exc.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED:
                    raise KrocketError("the broker cannot list a group's topics; pass topic=") from None
                raise
            for key in broker_api.json_body(response).get("offsetTable") or {}:
                name, _, grp = str(key).rpartition("@")
                if grp == group:
                    topics.add(name)
        return sorted(topics)
