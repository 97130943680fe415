"""Calls to a broker's HTTP admin API (port 10913), and the seam that says where a broker is.

`BrokerResolver` maps (BrokerGroup, ordinal) to the admin base URL. In a cluster that is the pod's stable
DNS name; tests swap in a resolver that points at a broker process on 127.0.0.1.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from krocket.common import ports
from krocket.common.topic import TopicConfig
from krocket.operator import build_brokergroup, build_tls
from krocket.operator.build_common import meta


class BrokerUnavailable(Exception):
    """The broker could not be reached or answered with a server error; retry later."""


class BrokerRejected(Exception):
    """The broker refused the request (HTTP 4xx other than 404): the request itself is wrong."""


class BrokerResolver(Protocol):
    def admin_url(self, group: Mapping[str, Any], ordinal: int) -> str | None:
        """Base URL of the admin API of pod `ordinal` of `group`, or None when it has no address yet."""
        ...


class DnsResolver:
    """Pods are reached through the group's headless Service: `<pod>.<group>-headless.<ns>.svc:10913`."""

    def __init__(self, port: int = ports.BROKER_HTTP_PORT) -> None:
        self._port = port

    def admin_url(self, group: Mapping[str, Any], ordinal: int) -> str | None:
        md = meta(group)
        scheme = "https" if build_tls.https(group) else "http"  # spec.tls: the HTTP port serves HTTPS
        return f"{scheme}://{build_brokergroup.pod_host(md['name'], md['namespace'], ordinal)}:{self._port}"


class StaticResolver:
    """Fixed URLs per (namespace, group name, ordinal); for tests and for brokers outside the cluster."""

    def __init__(self, urls: Mapping[tuple[str, str, int], str] | None = None) -> None:
        self.urls: dict[tuple[str, str, int], str] = dict(urls or {})

    def admin_url(self, group: Mapping[str, Any], ordinal: int) -> str | None:
        md = meta(group)
        return self.urls.get((md["namespace"], md["name"], ordinal))


@dataclass(frozen=True)
class EndpointAccess:
    """How to call one broker's admin API with its ACL or TLS on: the admin account (HTTP basic auth, which the
    broker's HTTP guard accepts) and the SSL context that trusts the broker's CA (None: the system's CAs)."""

    access_key: str | None = None
    secret_key: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def headers(self) -> dict[str, str]:
        if self.access_key is None:
            return {}
        raw = f"{self.access_key}:{self.secret_key or ''}".encode()
        return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}


class AdminAccess:
    """Per base URL, the credentials and CA trust the operator uses (filled by the security step of each
    BrokerGroup's reconcile, `reconcile_security`): a URL it has not seen is called plainly."""

    def __init__(self) -> None:
        self._by_base: dict[str, EndpointAccess] = {}

    def set(self, base: str, access: EndpointAccess | None) -> None:
        if access is None or (access.access_key is None and access.ssl_context is None):
            self._by_base.pop(base.rstrip("/"), None)
        else:
            self._by_base[base.rstrip("/")] = access

    def for_url(self, url: str) -> EndpointAccess | None:
        best = max((b for b in self._by_base if url == b or url.startswith(b + "/")), key=len, default=None)
        return None if best is None else self._by_base[best]


class BrokerAdmin:
    """Thin async wrapper over the admin API; one aiohttp session shared by all calls."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = 5.0, access: AdminAccess | None = None) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.access = access or AdminAccess()

    def _request_options(self, url: str) -> dict[str, Any]:
        found = self.access.for_url(url)
        options: dict[str, Any] = {}
        if found is not None and found.access_key is not None:
            options["headers"] = found.headers()
        if found is not None and found.ssl_context is not None:
            options["ssl"] = found.ssl_context
        return options

    async def _call(self, method: str, url: str, json: Any = None) -> tuple[int, Any]:
        options = self._request_options(url)
        try:
            async with self._session.request(method, url, json=json, timeout=self._timeout, **options) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (aiohttp.ContentTypeError, ValueError):
                    body = {"error": (await resp.text())[:200]}
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise BrokerUnavailable(f"{method} {url}: {e.__class__.__name__}: {e}") from e
        if status >= 500:
            raise BrokerUnavailable(f"{method} {url}: HTTP {status} {body}")
        if 400 <= status < 500 and status != 404:
            raise BrokerRejected(f"{method} {url}: HTTP {status} {(body or {}).get('error', body)}")
        return status, body

    async def broker_info(self, base: str) -> dict[str, Any]:
        _, body = await self._call("GET", f"{base}/api/v1/broker")
        return dict(body or {})

    async def ready(self, base: str) -> bool:
        try:
            url = f"{base}/readyz"
            async with self._session.get(url, timeout=self._timeout, **self._request_options(url)) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def list_topics(self, base: str) -> list[dict[str, Any]]:
        _, body = await self._call("GET", f"{base}/api/v1/topics")
        return list((body or {}).get("topics") or [])

    async def get_topic(self, base: str, topic: str) -> dict[str, Any] | None:
        status, body = await self._call("GET", f"{base}/api/v1/topics/{quote(topic, safe='')}")
        return None if status == 404 else dict(body)

    async def upsert_topic(self, base: str, cfg: TopicConfig) -> dict[str, Any]:
        """Create or replace the topic (queues, perm and its attributes, e.g. message.type, in RocketMQ's
        TopicConfig JSON); the topic as the broker holds it afterwards."""
        _, body = await self._call("POST", f"{base}/api/v1/topics", json=cfg.to_json())
        return dict(body or {})

    async def delete_topic(self, base: str, topic: str) -> bool:
        status, _ = await self._call("DELETE", f"{base}/api/v1/topics/{quote(topic, safe='')}")
        return status != 404

    async def set_write_permission(self, base: str, writable: bool) -> int:
        """Withdraw (False) or restore (True) the whole broker's write permission (RocketMQ's brokerPermission,
        what mqadmin's wipeWritePerm/addWritePerm change): producers are routed to other groups and sends to this
        broker are refused, reads go on. In memory: a restarted broker is writable again. The new permission."""
        _, body = await self._call("PUT", f"{base}/api/v1/broker/permission", json={"writable": writable})
        return int((body or {}).get("brokerPermission", 0))

    async def consumer_lag(self, base: str) -> list[dict[str, Any]]:
        """Every topic on the broker holding messages or consumer offsets: ``{"topic", "messages" (held in the
        queues), "groups": {group: lag}}``; what a drain waits on."""
        _, body = await self._call("GET", f"{base}/api/v1/lag")
        return list((body or {}).get("topics") or [])

    async def group_offsets(self, base: str, group: str) -> dict[str, Any] | None:
        """A consumer group's rows on the broker (``offsets``: topic, queueId, brokerOffset, consumerOffset, lag)
        and its connected ``clients``, both empty for a group the broker does not know; None only where a broker
        answers 404 (older krocket brokers did for an unknown group)."""
        status, body = await self._call("GET", f"{base}/api/v1/groups/{quote(group, safe='')}/offsets")
        return None if status == 404 else dict(body or {})

    async def upsert_group(self, base: str, config: dict[str, Any]) -> dict[str, Any]:
        """Create or update a subscription group (RocketMQ's SubscriptionGroupConfig JSON: groupName,
        retryMaxTimes, consumeMessageOrderly, consumeBroadcastEnable, ...); the group as the broker holds it."""
        name = quote(str(config.get("groupName", "")), safe="")
        _, body = await self._call("PUT", f"{base}/api/v1/groups/{name}", json=config)
        return dict(body or {})

    async def delete_group(self, base: str, group: str) -> bool:
        status, _ = await self._call("DELETE", f"{base}/api/v1/groups/{quote(group, safe='')}")
        return status != 404
