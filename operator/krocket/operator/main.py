"""Entry point of the operator process (`krocket operator`)."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
from typing import Any

import kopf

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


def config_from_env(env: dict[str, str] | None = None) -> OperatorConfig:
    """Timings can be tuned with KROCKET_OPERATOR_RESYNC_SECONDS and KROCKET_OPERATOR_STATUS_SECONDS."""
    env = dict(os.environ if env is None else env)
    base = OperatorConfig()
    return OperatorConfig(
        resync_interval=float(env.get("KROCKET_OPERATOR_RESYNC_SECONDS", base.resync_interval)),
        status_interval=float(env.get("KROCKET_OPERATOR_STATUS_SECONDS", base.status_interval)),
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
) -> None:
    """Run the operator until SIGTERM/SIGINT (blocking).

    namespaces: watch only these (glob patterns allowed, as kopf does); cluster_wide: watch all namespaces.
    peering: name of a KopfPeering (or ClusterKopfPeering when cluster-wide) object for leader election:
    every replica gets a random priority, the highest one runs and the others pause. None: standalone.
    """
    if not cluster_wide and not namespaces:
        raise ValueError("give at least one namespace to watch, or cluster_wide=True (--all-namespaces)")
    registry, memo = build(config_from_env())
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
