"""Everything a handler needs besides the resource itself, passed through kopf's `memo`.

One `OperatorContext` per operator run (never a module global): tests build their own with a resolver that
points at loopback brokers and credentials that point at the API emulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from krocket.operator.broker_admin import AdminAccess, BrokerAdmin, BrokerResolver, DnsResolver
from krocket.operator.build_security import NetworkPolicySettings
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
    # The operator's namespace and pod labels and the monitoring namespace, for the NetworkPolicies it builds.
    network: NetworkPolicySettings = field(default_factory=NetworkPolicySettings)
    metrics_port: int = 0  # operator Prometheus metrics (/metrics) on this port; 0: off
    master_roll_deadline: float = 600.0  # a not-Ready master waiting for its turn is rolled after this
    master_write_grace: float = 10.0  # after withdrawing the master's write permission, before it restarts
    autoscale_interval: float = 15.0  # ConsumerGroup: read the lag and set the scale target's replicas
    drain_deadline: float = 3600.0  # how long a drain waits for consumers unless krocket.io/drain-deadline says


@dataclass
class OperatorContext:
    credentials: Callable[[], Credentials]
    config: OperatorConfig = field(default_factory=OperatorConfig)
    resolver: BrokerResolver = field(default_factory=DnsResolver)
    kube: KubeClient | None = None
    admin: BrokerAdmin | None = None
    # Per broker URL, the ACL admin account and CA trust for the admin API (set by reconcile_security).
    admin_access: AdminAccess = field(default_factory=AdminAccess)
    # One reconcile at a time per resource (kopf handlers, timers and child events would otherwise overlap).
    locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.kube is None:
            self.kube = KubeClient(self.credentials())
        if self.admin is None:
            self._session = aiohttp.ClientSession()
            self.admin = BrokerAdmin(self._session, timeout=self.config.admin_timeout, access=self.admin_access)

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
