"""The client instance: connections, name server routes, heartbeats and the background schedule.

Like RocketMQ's MQClientInstance, but not a process-wide singleton: every Producer, PushConsumer,
PullConsumer and Admin owns one. It refreshes the routes of the topics its members use every 30 s
(``ROUTE_FETCH_CONCURRENCY`` lookups in flight), sends heartbeats to every broker of those routes every 30 s, runs
its consumers' rebalance every ``rebalance_interval`` seconds (all topics: the safety net), at once when a broker
sends NOTIFY_CONSUMER_IDS_CHANGED (40) (all topics) and when a refresh finds routes changed (those topics only), and
has them persist their offsets every 5 s. With ``route_idle_s`` set (producers), the routes of topics not used for
that long are forgotten: the next use looks them up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from krocket.common.acl import Credentials, resolve_credentials
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.headers import NotifyConsumerIdsChangedHeader
from krocket.common.headers.groups import ResetOffsetHeader, decode_offset_table
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand
from krocket.common.route import MASTER_ID, TopicRouteData

from . import broker_api
from .bounded import map_bounded
from .namesrv import NameServerClient
from .types import MessageQueue

log = logging.getLogger(__name__)

ROUTE_REFRESH_S = 30.0
HEARTBEAT_S = 30.0
PERSIST_S = 5.0
ROUTE_FETCH_CONCURRENCY = 32  # route lookups in flight during a refresh

_instance_counter = itertools.count(1)


def local_ip() -> str:
    """The address other hosts would see us by (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def make_client_id(instance_name: str | None = None) -> str:
    """``ip@instanceName``; by default unique per object (``pid#n#random``), as RocketMQ does per process."""
    name = instance_name or f"{os.getpid()}#{next(_instance_counter)}#{random.getrandbits(32):08x}"
    return f"{local_ip()}@{name}"


class ConsumerMember(Protocol):
    """What the instance needs from a consumer."""

    group: str

    def heartbeat_data(self) -> dict[str, Any]: ...

    async def rebalance(self, topics: Collection[str] | None = None) -> None:
        """Rebalance ``topics`` (those subscribed among them), or every subscribed topic."""

    async def persist_offsets(self) -> None: ...


@dataclass(slots=True)
class RouteRound:
    """What one round of route lookups found."""

    changed: set[str] = field(default_factory=set)
    """Topics whose route is new or not the same as the cached one."""
    failed: dict[str, KrocketError] = field(default_factory=dict)
    """Topics whose lookup failed (``TopicNotExistError`` for a topic without route); their cached route stays."""


# Serves one request a broker sends this client (the reply, or None for a oneway request).
BrokerRequestHandler = Callable[[Connection, RemotingCommand], Awaitable[RemotingCommand | None]]


class ClientInstance:
    def __init__(
        self,
        namesrv: str | None = None,
        *,
        instance_name: str | None = None,
        rebalance_interval: float = 20.0,
        timeout: float = 3.0,
        ssl_context: ssl.SSLContext | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.client_id = make_client_id(instance_name)
        # Name servers and brokers alike over TLS with ``ssl_context`` (krocket.common.remoting.tls.client_tls).
        self.pool = ConnectionPool(self._serve, ssl_context=ssl_context)
        # With ACL credentials every request is signed (RocketMQ's AclClientRPCHook, krocket.common.acl).
        self.credentials = resolve_credentials(credentials)
        if self.credentials is not None:
            self.pool.request_hook = self.credentials.sign
        self.namesrv = NameServerClient(self.pool, namesrv, timeout)
        self.timeout = timeout
        self.rebalance_interval = rebalance_interval
        self.topics: set[str] = set()  # the topics whose routes the refresh keeps current
        # Forget the route of a topic not used for this long (None: never); producers mark what they use.
        self.route_idle_s: float | None = None
        self.used_topics: set[str] = set()  # topics used since the last refresh round
        self._last_used: dict[str, float] = {}
        self.forget_hooks: list[Callable[[str], None]] = []  # told of each topic whose route is forgotten
        self.producer_groups: set[str] = set()
        self.consumers: list[ConsumerMember] = []
        # brokerName -> {brokerId: addr}, merged from every route fetched.
        self.brokers: dict[str, dict[int, str]] = {}
        self._heartbeat_addrs: set[str] = set()
        self._rebalance_now = asyncio.Event()
        self._rebalance_all = False  # the next rebalance covers every topic (else those in _rebalance_topics)
        self._rebalance_topics: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        # Requests brokers send to this client, by code, served by the member that registered them
        # (CHECK_TRANSACTION_STATE: a TransactionProducer).
        self.request_handlers: dict[int, BrokerRequestHandler] = {}

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._tasks = [
            self._spawn(self._every(ROUTE_REFRESH_S, self.refresh_routes), "routes"),
            self._spawn(self._every(HEARTBEAT_S, self.send_heartbeats), "heartbeat"),
            self._spawn(self._every(PERSIST_S, self._persist_all), "persist"),
        ]
        if self.consumers:
            self._tasks.append(self._spawn(self._rebalance_loop(), "rebalance"))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._unregister_all()
        await self.pool.close()
        self._started = False

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro, name=f"krocket-{name}")  # type: ignore[arg-type]

    async def _every(self, period: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)

    # -- routes -------------------------------------------------------------------------------------
    def _learn(self, route: TopicRouteData) -> None:
        for broker in route.broker_datas:
            self.brokers[broker.broker_name] = dict(broker.broker_addrs)

    async def route(self, topic: str, fresh: bool = False) -> TopicRouteData:
        """The topic's route (cached; the refresh task keeps it current). Raises ``TopicNotExistError``."""
        self.topics.add(topic)
        self.used_topics.add(topic)
        route = None if fresh else self.namesrv.cached_route(topic)
        if route is None:
            route = await self.namesrv.fetch_route(topic)
            self._learn(route)
            if self.all_broker_addrs() - self._heartbeat_addrs:
                await self.send_heartbeats()
        return route

    async def fetch_routes(self, topics: Iterable[str]) -> RouteRound:
        """Look the routes of ``topics`` up again, ``ROUTE_FETCH_CONCURRENCY`` at a time (the first alone: it settles
        which name server answers before the others go), learn their brokers and send heartbeats to new ones."""
        todo = sorted(set(topics))
        self.topics.update(todo)
        before = {t: self.namesrv.cached_route(t) for t in todo}
        results: list[TopicRouteData | Exception] = []
        if todo:
            results = await map_bounded(self.namesrv.fetch_route, todo[:1], 1)
            results += await map_bounded(self.namesrv.fetch_route, todo[1:], ROUTE_FETCH_CONCURRENCY)
        found = RouteRound()
        for topic, result in zip(todo, results, strict=True):
            if isinstance(result, TopicRouteData):
                self._learn(result)
                if result is not before[topic]:  # the name server client keeps the cached object when the same
                    found.changed.add(topic)
            elif isinstance(result, KrocketError):
                found.failed[topic] = result
            else:
                raise result
        if self.all_broker_addrs() - self._heartbeat_addrs:
            await self.send_heartbeats()
        return found

    async def refresh_routes(self) -> set[str]:
        """One refresh round: forget idle routes (``route_idle_s``), look the others up again and rebalance the
        topics whose route changed. Returns those topics."""
        self.namesrv.resolve()
        self.forget_idle_routes()
        found = await self.fetch_routes(self.topics)
        for topic, exc in sorted(found.failed.items()):
            log.debug("route of %s not refreshed: %s", topic, exc)
        if found.changed and self.consumers:
            self.rebalance_soon(found.changed)
        return found.changed

    def forget_idle_routes(self, now: float | None = None) -> list[str]:
        """Forget the routes of the topics not used (``used_topics``) for ``route_idle_s``; returns those topics."""
        now = time.monotonic() if now is None else now
        used, self.used_topics = self.used_topics, set()
        if self.route_idle_s is None:
            return []
        last = self._last_used
        for topic in used:
            last[topic] = now
        idle = sorted(t for t in self.topics if now - last.setdefault(t, now) > self.route_idle_s)
        for topic in idle:
            self.topics.discard(topic)
            self.namesrv.forget(topic)
            del last[topic]
            for hook in self.forget_hooks:
                hook(topic)
        for topic in [t for t in last if t not in self.topics]:  # no longer kept (dropped by a member)
            del last[topic]
        if idle:
            log.debug("forgot the routes of %d topics unused for %.0fs", len(idle), self.route_idle_s)
        return idle

    def broker_addr(self, broker_name: str, broker_id: int = MASTER_ID, only_this: bool = False) -> str | None:
        """An address of ``broker_name``: the given id, else (unless ``only_this``) any other member."""
        addrs = self.brokers.get(broker_name) or {}
        addr = addrs.get(broker_id)
        if addr is None and not only_this and addrs:
            addr = addrs[min(addrs)]
        return addr

    def all_broker_addrs(self) -> set[str]:
        return {addr for addrs in self.brokers.values() for addr in addrs.values()}

    # -- heartbeats -----------------------------------------------------------------------------------
    def heartbeat_body(self) -> dict[str, Any]:
        return {
            "clientID": self.client_id,
            "producerDataSet": [{"groupName": g} for g in sorted(self.producer_groups)],
            "consumerDataSet": [c.heartbeat_data() for c in self.consumers],
        }

    async def send_heartbeats(self) -> None:
        if not self.producer_groups and not self.consumers:
            return
        addrs = sorted(self.all_broker_addrs())
        body = json.dumps(self.heartbeat_body()).encode()  # encoded once for every broker
        results = await asyncio.gather(
            *(broker_api.heartbeat(self.pool, a, body, self.timeout) for a in addrs), return_exceptions=True
        )
        for addr, result in zip(addrs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("heartbeat to %s failed: %s", addr, result)
                self._heartbeat_addrs.discard(addr)
            else:
                self._heartbeat_addrs.add(addr)

    async def _unregister_all(self) -> None:
        groups: list[tuple[str | None, str | None]] = [(g, None) for g in self.producer_groups]
        groups += [(None, c.group) for c in self.consumers]
        calls = [
            broker_api.unregister_client(self.pool, addr, self.client_id, p, c, 1.0)
            for addr in self.pool.addresses()
            if addr in self.all_broker_addrs()
            for p, c in groups
        ]
        await asyncio.gather(*calls, return_exceptions=True)

    # -- consumers ----------------------------------------------------------------------------------
    def add_consumer(self, consumer: ConsumerMember) -> None:
        self.consumers.append(consumer)
        if self._started and not any(t.get_name() == "krocket-rebalance" for t in self._tasks):
            self._tasks.append(self._spawn(self._rebalance_loop(), "rebalance"))

    def rebalance_soon(self, topics: Iterable[str] | None = None) -> None:
        """Rebalance now: ``topics`` only (their routes changed), or every topic."""
        if topics is None:
            self._rebalance_all = True
        else:
            self._rebalance_topics.update(topics)
        self._rebalance_now.set()

    async def _rebalance_loop(self) -> None:
        loop = asyncio.get_running_loop()
        every_topic_at = loop.time() + self.rebalance_interval  # the safety net, kept by changes of a few topics
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rebalance_now.wait(), max(every_topic_at - loop.time(), 0.0))
            self._rebalance_now.clear()
            topics: set[str] | None = self._rebalance_topics
            if self._rebalance_all or loop.time() >= every_topic_at:
                topics = None
                every_topic_at = loop.time() + self.rebalance_interval
            self._rebalance_all, self._rebalance_topics = False, set()
            for consumer in list(self.consumers):
                try:
                    await consumer.rebalance(topics)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("rebalance of group %s failed: %s", consumer.group, exc)

    async def _persist_all(self) -> None:
        for consumer in list(self.consumers):
            await consumer.persist_offsets()

    # -- requests from brokers ------------------------------------------------------------------------
    async def _serve(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand | None:
        handler = self.request_handlers.get(cmd.code)
        if handler is not None:
            return await handler(conn, cmd)
        if cmd.code == RequestCode.NOTIFY_CONSUMER_IDS_CHANGED:
            group = NotifyConsumerIdsChangedHeader.from_fields(cmd.ext_fields).consumer_group
            if any(c.group == group for c in self.consumers):
                log.info("broker %s says consumers of group %s changed; rebalancing", conn.peer, group)
                self.rebalance_soon()
            return None
        if cmd.code == RequestCode.RESET_CONSUMER_CLIENT_OFFSET:
            await self._reset_offsets(conn, cmd)
            return None
        return cmd.response(
            ResponseCode.REQUEST_CODE_NOT_SUPPORTED, f"request code {cmd.code} is not supported by this client"
        )

    async def _reset_offsets(self, conn: Connection, cmd: RemotingCommand) -> None:
        """RESET_CONSUMER_CLIENT_OFFSET (220): the broker moved a group's offsets (``krocket consumer reset``)."""
        try:
            header = ResetOffsetHeader.from_fields(cmd.ext_fields)
            table = decode_offset_table(cmd.body)
        except (KrocketError, ValueError) as exc:
            log.warning("broker %s sent a reset of offsets that cannot be read: %s", conn.peer, exc)
            return
        offsets = {MessageQueue(t, b, q): o for (b, t, q), o in table.items() if t == header.topic}
        for consumer in [c for c in self.consumers if c.group == header.group]:
            reset = getattr(consumer, "reset_offsets", None)
            if reset is not None:
                log.info("broker %s resets the offsets of group %s on %s", conn.peer, header.group, header.topic)
                await reset(header.topic, offsets)
