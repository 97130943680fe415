"""Admin: topics (create, update, delete, list, route), cluster info, consumer progress, subscription groups,
consume stats, consumer connections, offset reset by time and messages by id or key."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from krocket.common.acl import Credentials, resolve_credentials
from krocket.common.codes import PERM_READ_WRITE, RequestCode, ResponseCode
from krocket.common.errors import (
    ConnectionClosedError,
    KrocketError,
    RemoteError,
    RemotingTimeoutError,
    TopicNotExistError,
)
from krocket.common.headers import (
    CreateTopicHeader,
    DeleteTopicInBrokerHeader,
    QueryMessageHeader,
    RequestHeader,
    ViewMessageHeader,
)
from krocket.common.headers.groups import (
    DeleteSubscriptionGroupHeader,
    GetConsumerConnectionListHeader,
    GetConsumeStatsHeader,
    ResetOffsetHeader,
    decode_offset_table,
    parse_queue_key,
)
from krocket.common.message import MessageExt
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.record import decode_record, decode_records
from krocket.common.remoting.tls import client_tls
from krocket.common.route import MASTER_ID, BrokerData, TopicRouteData, dumps
from krocket.common.subscription_group import SubscriptionGroupConfig
from krocket.common.topic import (
    AUTO_CREATE_TOPIC_KEY,
    MAX_TOPICS_PER_BATCH,
    TopicConfig,
    validate_group,
    validate_topic,
)
from krocket.common.topic_attributes import format_attribute_changes

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
        """RocketMQ's key style (camelCase), as every ``--json`` of the CLI."""
        return {
            "topic": self.topic,
            "brokerName": self.broker,
            "queueId": self.queue_id,
            "brokerOffset": self.broker_offset,
            "consumerOffset": self.consumer_offset,
            "lag": self.lag,
        }


@dataclass(slots=True)
class GroupProgress:
    """A group's progress as far as the brokers answered: ``unreachable`` names each broker that did not (its
    master down or not answering), so a missing row is not mistaken for "no lag"; ``known`` is False when no
    broker that answered holds an offset or a subscription group config of the group."""

    rows: list[QueueProgress]
    unreachable: dict[str, str]  # brokerName -> why
    known: bool


@dataclass(slots=True)
class QueueAtRisk:
    """A read queue a shrink would remove while it still holds messages a group has not consumed."""

    broker: str
    queue_id: int
    unconsumed: int


class QueueShrinkRefused(KrocketError):
    def __init__(self, topic: str, at_risk: list[QueueAtRisk]) -> None:
        total = sum(q.unconsumed for q in at_risk)
        queues = ", ".join(f"{q.broker}/{q.queue_id}" for q in at_risk[:8]) + (" ..." if len(at_risk) > 8 else "")
        super().__init__(
            f"refusing to shrink the read queues of {topic}: {total} unconsumed message(s) in queues {queues} "
            "would become unreadable; lower --write-queues first and wait until consumers drain them, or pass "
            "--allow-shrink"
        )
        self.at_risk = at_risk


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
        attributes: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Create or update ``topic`` on every master of ``cluster`` (or of ``broker_names``, or of every
        cluster when neither is given). ``attributes`` (e.g. ``{"message.type": "FIFO"}``) are set on top of
        the topic's; None leaves them as they are. Returns the broker names it was applied to."""
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
            attributes=None if attributes is None else format_attribute_changes(attributes),
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

    async def create_topics(
        self,
        configs: list[TopicConfig],
        cluster: str | None = None,
        broker_names: list[str] | None = None,
        allow_shrink: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Create or update many topics on every master of ``cluster`` (or of ``broker_names``, or of every
        cluster) with UPDATE_AND_CREATE_TOPIC_LIST, ``MAX_TOPICS_PER_BATCH`` per request; a config's
        attributes replace the topic's, a config without any keeps the topic's. Unless ``allow_shrink``, raises
        ``QueueShrinkRefused`` when fewer read queues would drop queues holding unconsumed messages (as
        ``update_topic``). ``progress(done, total)`` after each request. Returns the broker names."""
        for config in configs:
            config.validate()
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        if not masters:
            raise KrocketError("no broker to create the topics on")
        if not allow_shrink:
            await self._refuse_shrinks(configs, masters)
        for start in range(0, len(configs), MAX_TOPICS_PER_BATCH):
            chunk = configs[start : start + MAX_TOPICS_PER_BATCH]
            body = dumps({"topicConfigList": [_list_entry(c) for c in chunk]})
            await self._on_all(masters, RequestCode.UPDATE_AND_CREATE_TOPIC_LIST, None, body)
            for config in chunk:
                self.instance.namesrv.forget(config.topic_name)
            if progress is not None:
                progress(start + len(chunk), len(configs))
        log.info("%d topics applied to %s", len(configs), ", ".join(sorted(masters)))
        return sorted(masters)

    async def _refuse_shrinks(self, configs: list[TopicConfig], masters: dict[str, str]) -> None:
        """``QueueShrinkRefused`` for the first topic whose fewer read queues would drop unconsumed messages;
        only topics whose read queues go down are looked at."""
        tables = await asyncio.gather(*(self.topic_config(addr) for addr in masters.values()))
        for config in configs:
            current = max(
                (int(t[config.topic_name].get("readQueueNums", 0)) for t in tables if config.topic_name in t),
                default=0,
            )
            if current > config.read_queue_nums:
                at_risk = await self.queues_at_risk(config.topic_name, config.read_queue_nums, masters)
                if at_risk:
                    raise QueueShrinkRefused(config.topic_name, at_risk)

    async def delete_topics(
        self,
        topics: list[str],
        cluster: str | None = None,
        broker_names: list[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        concurrency: int = 16,
    ) -> list[str]:
        """Delete many topics from the masters and the name servers, ``concurrency`` at a time; the topics that
        existed (the others are skipped, not an error)."""
        for topic in topics:
            validate_topic(topic)
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        known = set(await self.list_topics())
        for table in await asyncio.gather(*(self.topic_config(addr) for addr in masters.values())):
            known.update(table)
        present = [t for t in dict.fromkeys(topics) if t in known]
        gate = asyncio.Semaphore(max(1, concurrency))
        done = 0

        async def one(topic: str) -> None:
            nonlocal done
            async with gate:
                await self.delete_topic(topic, cluster, broker_names)
                done += 1
                if progress is not None and (done % 100 == 0 or done == len(present)):
                    progress(done, len(present))

        await asyncio.gather(*(one(t) for t in present))
        return present

    async def update_topic(
        self,
        topic: str,
        read_queues: int = 8,
        write_queues: int = 8,
        perm: int = PERM_READ_WRITE,
        cluster: str | None = None,
        broker_names: list[str] | None = None,
        order: bool = False,
        allow_shrink: bool = False,
        attributes: Mapping[str, str] | None = None,
    ) -> list[str]:
        """As ``create_topic``; unless ``allow_shrink``, raises ``QueueShrinkRefused`` when fewer read queues
        would drop queues that still hold messages some group (or, with no group, anyone) has not consumed.
        Fewer write queues alone are the safe drain and always allowed."""
        if not allow_shrink:
            masters = (await self.cluster_info()).masters(cluster, broker_names)
            at_risk = await self.queues_at_risk(topic, read_queues, masters)
            if at_risk:
                raise QueueShrinkRefused(topic, at_risk)
        return await self.create_topic(
            topic, read_queues, write_queues, perm, cluster, broker_names, order, attributes=attributes
        )

    async def queues_at_risk(self, topic: str, read_queues: int, masters: dict[str, str]) -> list[QueueAtRisk]:
        """The read queues at or above ``read_queues`` on ``masters`` that hold unconsumed messages."""
        found: list[QueueAtRisk] = []
        for name, addr in sorted(masters.items()):
            config = (await self.topic_config(addr)).get(topic)
            current = int(config.get("readQueueNums", 0)) if isinstance(config, dict) else 0
            if current <= read_queues:
                continue
            committed = await self._committed_offsets(addr, topic)
            for queue_id in range(read_queues, current):
                mq = MessageQueue(topic, name, queue_id)
                end = await broker_api.max_offset(self.instance.pool, addr, mq, self.timeout)
                start = await broker_api.min_offset(self.instance.pool, addr, mq, self.timeout)
                groups = [offsets.get(queue_id, start) for offsets in committed.values()]
                consumed = min(groups) if groups else start  # the slowest group; no group: nothing is consumed
                if end > max(consumed, start):
                    found.append(QueueAtRisk(name, queue_id, end - max(consumed, start)))
        return found

    async def _committed_offsets(self, addr: str, topic: str) -> dict[str, dict[int, int]]:
        """group -> queueId -> committed offset, of ``topic`` on one broker (GET_ALL_CONSUMER_OFFSET 43)."""
        response = await broker_api.invoke(
            self.instance.pool, addr, RequestCode.GET_ALL_CONSUMER_OFFSET, timeout=self.timeout
        )
        out: dict[str, dict[int, int]] = {}
        for key, queues in (broker_api.json_body(response).get("offsetTable") or {}).items():
            name, _, group = str(key).rpartition("@")
            if name == topic:
                out[group] = {int(q): int(o) for q, o in (queues or {}).items()}
        return out

    async def topic_exists(self, topic: str, masters: dict[str, str]) -> bool:
        """On the name servers' topic list, or in the topic table of one of ``masters``."""
        if topic in await self.list_topics():
            return True
        tables = await asyncio.gather(*(self.topic_config(addr) for addr in masters.values()))
        return any(topic in table for table in tables)

    async def delete_topic(self, topic: str, cluster: str | None = None, broker_names: list[str] | None = None) -> None:
        """Delete ``topic`` from the masters (of ``cluster``/``broker_names``, default all), then from
        every name server. Raises ``TopicNotExistError`` when neither the name servers nor a master know it."""
        validate_topic(topic)
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        if not await self.topic_exists(topic, masters):
            raise TopicNotExistError(f"topic {topic} does not exist")
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

    async def _on_all(
        self, masters: dict[str, str], code: int, header: RequestHeader | None, body: bytes = b""
    ) -> None:
        results = await asyncio.gather(
            *(
                broker_api.invoke(self.instance.pool, addr, code, header, body, timeout=self.timeout)
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

    async def group_progress(self, group: str, topic: str | None = None) -> GroupProgress:
        """As ``consumer_progress``, telling an unknown group and brokers that did not answer from "no lag":
        a broker without a master online, or whose master does not answer, is named in ``unreachable`` and
        its queues are left out."""
        validate_group(group)
        info = await self.cluster_info()
        unreachable: dict[str, str] = {}
        topics: set[str] = set()
        known = False
        for name, broker in sorted(info.brokers.items()):
            addr = broker.master_addr()
            if addr is None:
                unreachable[name] = "no master online"
                continue
            try:
                offsets = await self._group_offsets(addr, group)
                known = known or bool(offsets) or await self._has_group_config(addr, group)
            except (ConnectionClosedError, RemotingTimeoutError, OSError) as exc:
                unreachable[name] = f"master {addr} did not answer: {exc}"
                continue
            topics.update(offsets)
        rows: list[QueueProgress] = []
        for name in [topic] if topic else sorted(topics):
            route = await self.instance.route(name, fresh=True)
            for mq in subscribe_queues(name, route):
                if mq.broker_name in unreachable:
                    continue
                try:
                    rows.append(await self._progress(group, mq))
                except (ConnectionClosedError, RemotingTimeoutError, OSError, KrocketError) as exc:
                    unreachable[mq.broker_name] = str(exc)
        rows = [r for r in rows if r.broker not in unreachable]
        return GroupProgress(rows, unreachable, known)

    async def _group_offsets(self, addr: str, group: str) -> set[str]:
        """The topics ``group`` has committed offsets of on one broker."""
        response = await broker_api.invoke(
            self.instance.pool, addr, RequestCode.GET_ALL_CONSUMER_OFFSET, timeout=self.timeout
        )
        topics: set[str] = set()
        for key in broker_api.json_body(response).get("offsetTable") or {}:
            name, _, grp = str(key).rpartition("@")
            if grp == group:
                topics.add(name)
        return topics

    async def _has_group_config(self, addr: str, group: str) -> bool:
        response = await broker_api.invoke(
            self.instance.pool, addr, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG, timeout=self.timeout
        )
        return group in (broker_api.json_body(response).get("subscriptionGroupTable") or {})

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

    # -- subscription groups ---------------------------------------------------------------------------
    async def create_group(
        self, config: SubscriptionGroupConfig, cluster: str | None = None, broker_names: list[str] | None = None
    ) -> list[str]:
        """Create or update a subscription group (200) on every master of ``cluster`` (or ``broker_names``, or
        all). Returns the broker names it was applied to."""
        config.validate()
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        if not masters:
            raise KrocketError("no broker to create the subscription group on")
        body = dumps(config.to_json())
        await self._on_all(masters, RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, body)
        log.info("subscription group %s applied to %s", config.group_name, ", ".join(sorted(masters)))
        return sorted(masters)

    update_group = create_group

    async def delete_group(
        self, group: str, cluster: str | None = None, broker_names: list[str] | None = None
    ) -> list[str]:
        masters = (await self.cluster_info()).masters(cluster, broker_names)
        await self._on_all(masters, RequestCode.DELETE_SUBSCRIPTIONGROUP, DeleteSubscriptionGroupHeader(group))
        return sorted(masters)

    async def list_groups(self, cluster: str | None = None) -> dict[str, dict[str, SubscriptionGroupConfig]]:
        """brokerName -> groupName -> config, from each master (201)."""
        masters = (await self.cluster_info()).masters(cluster)
        out: dict[str, dict[str, SubscriptionGroupConfig]] = {}
        for name, addr in sorted(masters.items()):
            response = await broker_api.invoke(
                self.instance.pool, addr, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG, timeout=self.timeout
            )
            table = broker_api.json_body(response).get("subscriptionGroupTable") or {}
            out[name] = {g: SubscriptionGroupConfig.from_json(raw) for g, raw in sorted(table.items())}
        return out

    # -- consume stats, connections, offset reset ------------------------------------------------------
    async def consume_stats(self, group: str, topic: str | None = None) -> list[dict[str, Any]]:
        """Per queue (GET_CONSUME_STATS 208 on every master): topic, broker, queueId, brokerOffset,
        consumerOffset, lastTimestamp and the lag; sorted by topic, broker, queue."""
        validate_group(group)
        masters = (await self.cluster_info()).masters()
        rows: list[dict[str, Any]] = []
        for addr in masters.values():
            response = await broker_api.invoke(
                self.instance.pool,
                addr,
                RequestCode.GET_CONSUME_STATS,
                GetConsumeStatsHeader(group, topic),
                timeout=self.timeout,
            )
            for key, entry in (broker_api.json_body(response).get("offsetTable") or {}).items():
                broker, name, queue_id = parse_queue_key(key)
                broker_offset, consumer_offset = int(entry["brokerOffset"]), int(entry["consumerOffset"])
                rows.append(
                    {
                        "topic": name,
                        "broker": broker,
                        "queueId": queue_id,
                        "brokerOffset": broker_offset,
                        "consumerOffset": consumer_offset,
                        "lastTimestamp": int(entry.get("lastTimestamp", 0)),
                        "lag": max(broker_offset - consumer_offset, 0),
                    }
                )
        return sorted(rows, key=lambda r: (r["topic"], r["broker"], r["queueId"]))

    async def consumer_connections(self, group: str) -> dict[str, Any]:
        """RocketMQ's ConsumerConnection (203) merged over the masters: connectionSet, subscriptionTable,
        consumeType, messageModel, consumeFromWhere. ``KrocketError`` when no client of ``group`` is online."""
        validate_group(group)
        masters = (await self.cluster_info()).masters()
        merged: dict[str, Any] = {}
        connections: dict[str, dict[str, Any]] = {}
        for addr in masters.values():
            response = await broker_api.invoke(
                self.instance.pool,
                addr,
                RequestCode.GET_CONSUMER_CONNECTION_LIST,
                GetConsumerConnectionListHeader(group),
                timeout=self.timeout,
                accept=(ResponseCode.SUCCESS, ResponseCode.CONSUMER_NOT_ONLINE),
            )
            if response.code != ResponseCode.SUCCESS:
                continue
            body = broker_api.json_body(response)
            for conn in body.get("connectionSet") or []:
                connections.setdefault(str(conn.get("clientId")), conn)  # one row per client, as each broker sees it
            merged.setdefault("subscriptionTable", {}).update(body.get("subscriptionTable") or {})
            for key in ("consumeType", "messageModel", "consumeFromWhere"):
                merged.setdefault(key, body.get(key))
        if not connections:
            raise KrocketError(f"the consumer group {group} is not online")
        merged["connectionSet"] = [connections[k] for k in sorted(connections)]
        return merged

    async def reset_offset_by_time(
        self, group: str, topic: str, timestamp: int, force: bool = True
    ) -> dict[MessageQueue, int]:
        """Move ``group``'s offsets on ``topic`` to the first message stored at or after ``timestamp`` (ms;
        0: each queue's first message, -1: its end) on every master of the topic (222); the brokers commit them
        and tell the group's online consumers (220). Returns the new offset of each queue."""
        validate_group(group)
        route = await self.instance.route(topic, fresh=True)
        header = ResetOffsetHeader(topic, group, timestamp, force)
        result: dict[MessageQueue, int] = {}
        for broker in route.broker_datas:
            addr = broker.master_addr()
            if addr is None:
                raise KrocketError(f"broker {broker.broker_name} has no master to reset offsets on")
            response = await broker_api.invoke(
                self.instance.pool, addr, RequestCode.INVOKE_BROKER_TO_RESET_OFFSET, header, timeout=self.timeout
            )
            for (broker_name, name, queue_id), offset in decode_offset_table(response.body).items():
                result[MessageQueue(name, broker_name, queue_id)] = offset
        return dict(sorted(result.items()))

    # -- messages ---------------------------------------------------------------------------------------
    async def view_message(self, msg_id: str, topic: str | None = None) -> MessageExt:
        """The message of an offset message id (the broker address and commit log offset it encodes; 33). With
        ``topic``, ``msg_id`` may also be the unique id a producer set (found through the key index)."""
        if topic is not None:
            for message in await self.query_messages(topic, msg_id):
                if msg_id in (message.msg_id, message.offset_msg_id):
                    return message
        try:
            addr, offset = decode_offset_msg_id(msg_id)
        except ValueError as exc:
            raise KrocketError(f"{msg_id!r} is not an offset message id: {exc}") from None
        header = ViewMessageHeader(offset=offset)
        response = await broker_api.invoke(
            self.instance.pool, addr, RequestCode.VIEW_MESSAGE_BY_ID, header, timeout=self.timeout
        )
        return decode_record(response.body)

    async def query_messages(self, topic: str, key: str, max_num: int = 32) -> list[MessageExt]:
        """Messages of ``topic`` with ``key`` among their keys (or as their unique id), from every master (12)."""
        validate_topic(topic)
        route = await self.instance.route(topic, fresh=True)
        found: list[MessageExt] = []
        for broker in route.broker_datas:
            addr = broker.master_addr() or next(iter(broker.broker_addrs.values()), None)
            if addr is None:
                continue
            response = await broker_api.invoke(
                self.instance.pool,
                addr,
                RequestCode.QUERY_MESSAGE,
                QueryMessageHeader(topic, key, max_num),
                timeout=self.timeout,
                accept=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND),
            )
            if response.code == ResponseCode.SUCCESS:
                found.extend(decode_records(response.body))
        return sorted(found, key=lambda m: m.store_timestamp)


def _list_entry(config: TopicConfig) -> dict[str, Any]:
    """A config for UPDATE_AND_CREATE_TOPIC_LIST; without attributes the broker keeps the topic's own."""
    entry = config.to_json()
    if not config.attributes:
        del entry["attributes"]
    return entry
