"""Entry point of the operator process (`krocket operator`)."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
from pathlib import Path
from typing import Any

import kopf

from krocket.operator.build_security import SERVICE_ACCOUNT_NAMESPACE_FILE, NetworkPolicySettings, settings_from_env
from krocket.operator.context import OperatorConfig, OperatorContext
from krocket.operator.handlers import register
from krocket.operator.kube import Credentials

log = logging.getLogger(__name__)


def default_credentials() -> Credentials:
    """In a pod: the service account. Elsewhere: the current kubeconfig context."""
    creds = Credentials.in_cluster()
    if creds is not None:
        return creds
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    if info is None:
        raise RuntimeError("no in-cluster service account and no kubeconfig ($KUBECONFIG or ~/.kube/config) found")
    return Credentials.from_kopf(info)


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's login: the pod's service account, else the kubernetes client library when installed (it runs a
    kubeconfig's exec and auth-provider plugins), else kopf's own kubeconfig reader ($KUBECONFIG or
    ~/.kube/config: tokens, client certificates, basic auth)."""
    info = kopf.login_with_service_account(**kwargs)
    if info is None and importlib.util.find_spec("kubernetes") is not None:
        info = kopf.login_via_client(**kwargs)
    return info if info is not None else kopf.login_with_kubeconfig(**kwargs)


def network_settings_from_env(env: dict[str, str]) -> NetworkPolicySettings:
    """The NetworkPolicies' view of the operator (build_security.settings_from_env), falling back to the
    service account's namespace."""
    sa_file = Path(SERVICE_ACCOUNT_NAMESPACE_FILE)
    sa_namespace = sa_file.read_text().strip() if sa_file.exists() else None
    return settings_from_env(env, sa_namespace)


def config_from_env(env: dict[str, str] | None = None, metrics_port: int | None = None) -> OperatorConfig:
    """Timings can be tuned with KROCKET_OPERATOR_RESYNC_SECONDS, KROCKET_OPERATOR_STATUS_SECONDS,
    KROCKET_OPERATOR_AUTOSCALE_SECONDS and KROCKET_OPERATOR_DRAIN_DEADLINE_SECONDS (a drain's default deadline); the
    metrics port (0: off) is ``metrics_port`` (the --metrics-port flag), else KROCKET_OPERATOR_METRICS_PORT."""
    env = dict(os.environ if env is None else env)
    base = OperatorConfig()
    if metrics_port is None:
        metrics_port = int(env.get("KROCKET_OPERATOR_METRICS_PORT", base.metrics_port))
    return OperatorConfig(
        resync_interval=float(env.get("KROCKET_OPERATOR_RESYNC_SECONDS", base.resync_interval)),
        status_interval=float(env.get("KROCKET_OPERATOR_STATUS_SECONDS", base.status_interval)),
        autoscale_interval=float(env.get("KROCKET_OPERATOR_AUTOSCALE_SECONDS", base.autoscale_interval)),
        drain_deadline=float(env.get("KROCKET_OPERATOR_DRAIN_DEADLINE_SECONDS", base.drain_deadline)),
        metrics_port=metrics_port,
        network=network_settings_from_env(env),
    )


def build(config: OperatorConfig | None = None) -> tuple[kopf.OperatorRegistry, kopf.Memo]:
    """A fresh registry with every handler, and the memo carrying this run's context.

    A fresh ``OperatorRegistry`` has none of the login handlers kopf's global registry brings, so ``login`` is
    registered here: without it kopf retries "no credentials were retrieved from the login handlers" forever."""
    cfg = config or OperatorConfig()
    registry = kopf.OperatorRegistry()
    kopf.on.login(id="login", registry=registry)(login)
    register(registry, cfg)
    ctx = OperatorContext(credentials=default_credentials, config=cfg)
    return registry, kopf.Memo(ctx=ctx)


def run(
    namespaces: list[str] | None,
    cluster_wide: bool,
    liveness_port: int = 8080,
    peering: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run the operator until SIGTERM/SIGINT (blocking).

    namespaces: watch only these (glob patterns allowed, as kopf does); cluster_wide: watch all namespaces.
    peering: name of a KopfPeering (or ClusterKopfPeering when cluster-wide) object for leader election:
    every replica gets a random priority, the highest one runs and the others pause. None: standalone.
    metrics_port: serve the operator's Prometheus metrics on this port (0: off; None: from the environment).
    """
    if not cluster_wide and not namespaces:
        raise ValueError("give at least one namespace to watch, or cluster_wide=True (--all-namespaces)")
    registry, memo = build(config_from_env(metrics_port=metrics_port))
    kopf.run(
        registry=registry,
        memo=memo,
        clusterwide=cluster_wide,
        namespaces=[] if cluster_wide else list(namespaces or []),
        standalone=peering is None,
        peering_name=peering,
        priority=random.SystemRandom().randint(1, 2**31 - 1) if peering else 0,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
    )
