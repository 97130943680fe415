"""Name server access: address list (re-resolved on refresh), fail-over, route lookups with a cache.

A route fetched again that is the same as the cached one (``same_route``) keeps the cached object, so callers tell
an unchanged route by identity (``is``) and keep what they derived from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from krocket.common.addresses import namesrv_from_env, resolve_addr_list
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import (
    ConnectionClosedError,
    RemoteError,
    RemotingTimeoutError,
    TopicNotExistError,
)
from krocket.common.headers import DeleteTopicInNamesrvHeader, RequestHeader, RouteInfoHeader
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.route import BrokerData, QueueData, TopicRouteData

from .broker_api import command, json_body

log = logging.getLogger(__name__)


def _queue_key(q: QueueData) -> tuple[str, int, int, int, int]:
    return (q.broker_name, q.read_queue_nums, q.write_queue_nums, q.perm, q.topic_sys_flag)


def _broker_key(b: BrokerData) -> tuple[str, str, list[tuple[int, str]], list[tuple[int, str]]]:
    return (b.broker_name, b.cluster, sorted(b.broker_addrs.items()), sorted(b.grpc_addrs.items()))


def same_route(a: TopicRouteData | None, b: TopicRouteData | None) -> bool:
    """Whether two routes say the same, whatever the order of their queue and broker lists (a name server need
    not sort them)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return (
        a.order_topic_conf == b.order_topic_conf
        and sorted(map(_queue_key, a.queue_datas)) == sorted(map(_queue_key, b.queue_datas))
        and sorted(map(_broker_key, a.broker_datas)) == sorted(map(_broker_key, b.broker_datas))
    )


class NameServerClient:
    """Talks to any one of the name servers, sticking to one until it fails, then trying the next."""

    def __init__(self, pool: ConnectionPool, namesrv: str | None = None, timeout: float = 3.0) -> None:
        self._spec = namesrv_from_env(namesrv)
        self._pool = pool
        self._timeout = timeout
        self._addrs: list[str] = []
        self._current = 0
        self.resolve()
        self._routes: dict[str, tuple[float, TopicRouteData]] = {}

    @property
    def addresses(self) -> list[str]:
        return list(self._addrs)

    def resolve(self) -> list[str]:
        """Re-resolve the configured names (a DNS name may now give other addresses)."""
        addrs = resolve_addr_list(self._spec)
        if addrs != self._addrs:
            if self._addrs:
                log.info("name servers are now %s", ";".join(addrs))
            current = self._addrs[self._current] if self._addrs else None
            self._addrs = addrs
            self._current = addrs.index(current) if current in addrs else 0
        return addrs

    async def request(
        self, code: int, header: RequestHeader | None = None, timeout: float | None = None
    ) -> RemotingCommand:
        """Send to the current name server, failing over to the next on connection errors."""
        last: Exception | None = None
        for attempt in range(len(self._addrs)):
            index = (self._current + attempt) % len(self._addrs)
            addr = self._addrs[index]
            try:
                response = await self._pool.request(addr, command(code, header), timeout or self._timeout)
            except (ConnectionClosedError, RemotingTimeoutError) as exc:
                log.warning("name server %s failed: %s", addr, exc)
                self._pool.drop(addr)
                last = exc
                continue
            self._current = index
            return response
        raise ConnectionClosedError(f"no name server answered ({';'.join(self._addrs)}): {last}")

    async def request_all(self, code: int, header: RequestHeader | None = None) -> list[RemotingCommand]:
        """Send to every name server (for writes such as deleting a topic)."""
        results = await asyncio.gather(
            *(self._pool.request(a, command(code, header), self._timeout) for a in self._addrs), return_exceptions=True
        )
        out = []
        for addr, result in zip(self._addrs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("name server %s failed: %s", addr, result)
            else:
                out.append(result)
        if not out:
            raise ConnectionClosedError(f"no name server answered ({';'.join(self._addrs)})")
        return out

    async def fetch_route(self, topic: str) -> TopicRouteData:
        """Ask a name server for a topic's route (the cached object when it is the same). Raises
        ``TopicNotExistError``."""
        response = await self.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, RouteInfoHeader(topic))
        if response.code == ResponseCode.TOPIC_NOT_EXIST:
            raise TopicNotExistError(f"topic {topic!r} does not exist: {response.remark or ''}".rstrip(": "))
        if response.code != ResponseCode.SUCCESS:
            raise RemoteError(response.code, response.remark or "")
        route = TopicRouteData.from_json(json_body(response))
        cached = self._routes.get(topic)
        if cached is not None and same_route(cached[1], route):
            route = cached[1]
        self._routes[topic] = (time.monotonic(), route)
        return route

    def cached_route(self, topic: str) -> TopicRouteData | None:
        cached = self._routes.get(topic)
        return cached[1] if cached else None

    def forget(self, topic: str) -> None:
        self._routes.pop(topic, None)

    async def cluster_info(self) -> dict[str, Any]:
        response = await self.request(RequestCode.GET_BROKER_CLUSTER_INFO)
        if response.code != ResponseCode.SUCCESS:
            raise RemoteError(response.code, response.remark or "")
        return json_body(response)

    async def topic_list(self) -> list[str]:
        response = await self.request(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        if response.code != ResponseCode.SUCCESS:
            raise RemoteError(response.code, response.remark or "")
        return sorted(str(t) for t in json_body(response).get("topicList") or [])

    async def delete_topic(self, topic: str) -> None:
        for response in await self.request_all(RequestCode.DELETE_TOPIC_IN_NAMESRV, DeleteTopicInNamesrvHeader(topic)):
            if response.code != ResponseCode.SUCCESS:
                raise RemoteError(response.code, response.remark or "")
