"""Everything a handler needs besides the resource itself, passed through kopf's `memo`.

One `OperatorContext` per operator run (never a module global): tests build their own with a resolver that
points at loopback brokers and credentials that point at the API emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from krocket.operator.broker_admin import BrokerAdmin, BrokerResolver, DnsResolver
from krocket.operator.kube import Credentials, KubeClient


@dataclass(frozen=True)
class OperatorConfig:
    """Timings and thresholds; all in seconds unless named otherwise."""

    resync_interval: float = 60.0  # level-based repair of children and topic drift
    status_interval: float = 30.0  # broker admin polling for BrokerGroup status
    admin_timeout: float = 5.0
    retry_base_delay: float = 5.0  # first retry of a failed reconcile; doubles up to retry_max_delay
    retry_max_delay: float = 300.0
    max_slave_lag_bytes: int = 1024 * 1024  # "in sync" for the master-last rolling update


@dataclass
class OperatorContext:
    credentials: Callable[[], Credentials]
    config: OperatorConfig = field(default_factory=OperatorConfig)
    resolver: BrokerResolver = field(default_factory=DnsResolver)
    kube: KubeClient | None = None
    admin: BrokerAdmin | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.kube is None:
            self.kube = KubeClient(self.credentials())
        if self.admin is None:
            self._session = aiohttp.ClientSession()
            self.admin = BrokerAdmin(self._session, timeout=self.config.admin_timeout)

    async def close(self) -> None:
        if self.kube is not None:
            await self.kube.close()
            self.kube = None
        if self._session is not None:
            await self._session.close()
            self._session = None
            self.admin = None

    def started_kube(self) -> KubeClient:
        """The Kubernetes client; a reconcile before `start()` is a bug in the caller."""
        if self.kube is None:
            raise RuntimeError("operator context not started")
        return self.kube

    def backoff(self, retry: int) -> float:
        return min(self.config.retry_base_delay * (2 ** max(retry, 0)), self.config.retry_max_delay)
