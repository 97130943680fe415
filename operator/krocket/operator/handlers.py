"""kopf handlers: thin glue between kopf and the reconcile functions.

`register()` puts every handler into the registry it is given, so an operator run (or a test) owns its
registry and nothing is registered at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from krocket.operator import constants as c
from krocket.operator.apply import merge_patch_changes
from krocket.operator.context import OperatorConfig, OperatorContext
from krocket.operator.failures import reporting_failures
from krocket.operator.kube import BROKERGROUPS, NAMESERVERSETS
from krocket.operator.metrics import observed, register_metrics
from krocket.operator.outcome import Outcome
from krocket.operator.reconcile_brokergroup import reconcile_brokergroup
from krocket.operator.reconcile_consumergroup import register_consumergroup
from krocket.operator.reconcile_drain import register_drain
from krocket.operator.reconcile_nameserverset import reconcile_nameserverset
from krocket.operator.reconcile_topic import delete_topic, reconcile_topic
from krocket.operator.reconcile_user import register_users

log = logging.getLogger(__name__)

# Every reconcile counted, timed and its readiness recorded (krocket.operator.metrics, served on --metrics-port).
reconcile_nameserverset = observed(c.KIND_NAMESERVERSET)(reconcile_nameserverset)
reconcile_brokergroup = observed(c.KIND_BROKERGROUP)(reconcile_brokergroup)
reconcile_topic = observed(c.KIND_TOPIC)(reconcile_topic)
delete_topic = observed(c.KIND_TOPIC, "delete")(delete_topic)
# Refused names and references, and API errors, reported in status and events (krocket.operator.failures).
reconcile_nameserverset = reporting_failures(reconcile_nameserverset, passes_retry=True)
reconcile_brokergroup = reporting_failures(reconcile_brokergroup)
reconcile_topic = reporting_failures(reconcile_topic, passes_retry=True)
delete_topic = reporting_failures(delete_topic, passes_retry=True, check_names=False)


def _ctx(memo: Any) -> OperatorContext:
    ctx = memo["ctx"] if isinstance(memo, Mapping) else memo.ctx
    if not isinstance(ctx, OperatorContext):
        raise RuntimeError("kopf memo carries no OperatorContext; start the operator through krocket.operator.main")
    return ctx


def _emit(obj: Mapping[str, Any], outcome: Outcome) -> None:
    for ev in outcome.events:
        kopf.event(kopf.Body(cast(kopf.RawBody, dict(obj))), type=ev.type, reason=ev.reason, message=ev.message[:1000])


def _relay(body: Mapping[str, Any], patch: kopf.Patch, outcome: Outcome, *, raise_retry: bool = True) -> None:
    current = body.get("status") or {}
    for key, value in outcome.status.items():
        if merge_patch_changes(current.get(key), value):  # a status that is already so is not written again
            patch.status[key] = value
    _emit(body, outcome)
    if outcome.retry_after is not None and raise_retry:
        raise kopf.TemporaryError(outcome.retry_message, delay=outcome.retry_after)


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """Our own finalizer and annotation names, so several kopf operators never step on each other."""
    settings.persistence.finalizer = c.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 8


def register(registry: kopf.OperatorRegistry, config: OperatorConfig | None = None) -> None:
    cfg = config or OperatorConfig()
    register_metrics(registry, cfg)
    g, v = c.GROUP, c.VERSION

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        configure_settings(settings)
        await _ctx(memo).start()

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await _ctx(memo).close()

    @kopf.on.probe(id="context", registry=registry)
    def probe(memo: Any, **_: Any) -> bool:
        return _ctx(memo).kube is not None

    # NameServerSet ----------------------------------------------------------------------------------
    @kopf.on.resume(g, v, c.NAMESERVERSETS, id="nameserverset", registry=registry)
    @kopf.on.create(g, v, c.NAMESERVERSETS, id="nameserverset", registry=registry)
    @kopf.on.update(g, v, c.NAMESERVERSETS, id="nameserverset", registry=registry)
    async def nameserverset(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        _relay(body, patch, await reconcile_nameserverset(body, _ctx(memo), retry))

    @kopf.timer(
        g,
        v,
        c.NAMESERVERSETS,
        interval=cfg.resync_interval,
        initial_delay=cfg.resync_interval,
        id="nameserverset_resync",
        registry=registry,
    )
    async def nameserverset_resync(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        _relay(body, patch, await reconcile_nameserverset(body, _ctx(memo)), raise_retry=False)

    # BrokerGroup ------------------------------------------------------------------------------------
    @kopf.on.resume(g, v, c.BROKERGROUPS, id="brokergroup", registry=registry)
    @kopf.on.create(g, v, c.BROKERGROUPS, id="brokergroup", registry=registry)
    @kopf.on.update(g, v, c.BROKERGROUPS, id="brokergroup", registry=registry)
    async def brokergroup(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        _relay(body, patch, await reconcile_brokergroup(body, _ctx(memo)))

    @kopf.timer(
        g,
        v,
        c.BROKERGROUPS,
        interval=cfg.status_interval,
        initial_delay=cfg.status_interval,
        id="brokergroup_resync",
        registry=registry,
    )
    async def brokergroup_resync(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        _relay(body, patch, await reconcile_brokergroup(body, _ctx(memo)), raise_retry=False)

    # Children: a StatefulSet changed (status moved, or it was edited/deleted out of band) -----------
    @kopf.on.event(
        "apps",
        "v1",
        "statefulsets",
        labels={c.LABEL_MANAGED_BY: c.MANAGED_BY},
        id="child_statefulset",
        registry=registry,
    )
    async def child_statefulset(body: kopf.Body, memo: Any, **_: Any) -> None:
        ctx = _ctx(memo)
        owner_ref = next((r for r in body.metadata.get("ownerReferences") or [] if r.get("controller")), None)
        namespace = body.metadata.namespace
        if owner_ref is None or ctx.kube is None or namespace is None:
            return
        kind = {c.KIND_NAMESERVERSET: NAMESERVERSETS, c.KIND_BROKERGROUP: BROKERGROUPS}.get(owner_ref.get("kind"))
        if kind is None:
            return
        owner = await ctx.kube.get(kind, namespace, owner_ref["name"])
        if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
            return
        if owner.get("metadata", {}).get("uid") != owner_ref.get("uid"):
            return
        if kind is NAMESERVERSETS:
            outcome = await reconcile_nameserverset(owner, ctx)
        else:
            outcome = await reconcile_brokergroup(owner, ctx)
        if merge_patch_changes(owner.get("status"), outcome.status):
            await ctx.kube.patch(kind, namespace, owner_ref["name"], {"status": outcome.status}, "status")
        _emit(owner, outcome)

    # Topic ------------------------------------------------------------------------------------------
    @kopf.on.resume(g, v, c.TOPICS, id="topic", registry=registry)
    @kopf.on.create(g, v, c.TOPICS, id="topic", registry=registry)
    @kopf.on.update(g, v, c.TOPICS, id="topic", registry=registry)
    async def topic(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        _relay(body, patch, await reconcile_topic(body, _ctx(memo), retry))

    @kopf.timer(
        g,
        v,
        c.TOPICS,
        interval=cfg.resync_interval,
        initial_delay=cfg.resync_interval,
        id="topic_drift",
        registry=registry,
    )
    async def topic_drift(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        """Repairs drift (queues changed or the topic deleted out of band) and picks up new groups."""
        _relay(body, patch, await reconcile_topic(body, _ctx(memo)), raise_retry=False)

    @kopf.on.delete(g, v, c.TOPICS, id="topic_delete", registry=registry)
    async def topic_delete(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        _relay(body, patch, await delete_topic(body, _ctx(memo), retry))

    register_drain(registry, cfg)
    register_consumergroup(registry, cfg)
    register_users(registry, cfg)
