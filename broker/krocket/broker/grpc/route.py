"""QueryRoute: the message queues a 5.x client may use, built from a name server's topic route.

Every queue of every broker group that serves gRPC, with its permission, the master's own gRPC endpoint (clients
send, receive and ack at the broker that holds the queue: no forwarding between brokers) and the message types the
topic accepts. Slaves are left out: the Node SDK does not look at the broker id, and would send to a slave."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from krocket.broker.grpc.endpoints import endpoints
from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.common.addresses import resolve_addr_list
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import ConnectionClosedError, KrocketError, RemoteError, TopicNotExistError
from krocket.common.headers import RouteInfoHeader
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.route import MASTER_ID, TopicRouteData, loads_lenient
from krocket.common.topic import PERM_READ, PERM_WRITE

log = logging.getLogger(__name__)

ROUTE_CACHE_S = 3.0
"""How long a looked-up route is reused: clients ask every 30 s each, and many clients share one broker."""


def permission(readable: bool, writable: bool) -> int:
    if readable and writable:
        return pb.READ_WRITE
    if readable:
        return pb.READ
    return pb.WRITE if writable else pb.NONE


def message_queues(
    topic: pb.Resource, route: TopicRouteData, accepted: Iterable[int], broker_perm: Callable[[str], int] | None = None
) -> list[pb.MessageQueue]:
    """One entry per queue id of every broker group whose master serves gRPC, in broker-name order.

    ``accepted`` are the ``MessageType`` values the topic takes; ``broker_perm`` optionally narrows a broker's
    queue permission further (a broker whose writes were withdrawn)."""
    types = list(accepted)
    masters = {b.broker_name: b for b in route.broker_datas}
    queues: list[pb.MessageQueue] = []
    for data in sorted(route.queue_datas, key=lambda q: q.broker_name):
        broker = masters.get(data.broker_name)
        addr = broker.grpc_addrs.get(MASTER_ID) if broker is not None else None
        if broker is None or not addr or broker.master_addr() is None:
            continue
        perm = data.perm & (broker_perm(data.broker_name) if broker_perm else PERM_READ | PERM_WRITE)
        where = pb.Broker(name=data.broker_name, id=MASTER_ID, endpoints=endpoints(addr))
        for queue_id in range(max(data.read_queue_nums, data.write_queue_nums)):
            readable = queue_id < data.read_queue_nums and bool(perm & PERM_READ)
            writable = queue_id < data.write_queue_nums and bool(perm & PERM_WRITE)
            queues.append(
                pb.MessageQueue(
                    topic=topic,
                    id=queue_id,
                    permission=permission(readable, writable),  # type: ignore[arg-type]
                    broker=where,
                    accept_message_types=types,  # type: ignore[arg-type]
                )
            )
    return queues


class RouteLookup:
    """Topic routes from the name servers (GET_ROUTEINFO_BY_TOPIC), any one that answers, cached briefly."""

    def __init__(self, namesrv_addr: str, pool: ConnectionPool) -> None:
        self._namesrv_addr = namesrv_addr
        self._pool = pool
        self._cache: dict[str, tuple[float, TopicRouteData]] = {}

    async def route(self, topic: str) -> TopicRouteData:
        """The topic's route; ``TopicNotExistError`` when no broker group carries it."""
        cached = self._cache.get(topic)
        if cached is not None and time.monotonic() - cached[0] < ROUTE_CACHE_S:
            return cached[1]
        route = await self._fetch(topic)
        if len(self._cache) > 10_000:  # bounded: a client can name any topic
            self._cache.clear()
        self._cache[topic] = (time.monotonic(), route)
        return route

    def forget(self, topic: str) -> None:
        self._cache.pop(topic, None)

    async def _fetch(self, topic: str) -> TopicRouteData:
        addrs = resolve_addr_list(self._namesrv_addr) if self._namesrv_addr else []
        last: Exception | None = None
        for addr in addrs:
            cmd = RemotingCommand(RequestCode.GET_ROUTEINFO_BY_TOPIC, ext_fields=RouteInfoHeader(topic).to_fields())
            try:
                response = await self._pool.request(addr, cmd, 3.0)
            except (TimeoutError, KrocketError) as exc:
                log.warning("route of %s: name server %s failed: %s", topic, addr, exc)
                self._pool.drop(addr)
                last = exc
                continue
            if response.code == ResponseCode.TOPIC_NOT_EXIST:
                raise TopicNotExistError(f"topic {topic} does not exist: no broker group carries it")
            if response.code != ResponseCode.SUCCESS:
                raise RemoteError(response.code, response.remark or "")
            return TopicRouteData.from_json(loads_lenient(response.body or b"{}"))
        raise ConnectionClosedError(f"no name server answered for the route of {topic} ({self._namesrv_addr}): {last}")
