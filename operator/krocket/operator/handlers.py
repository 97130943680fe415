"""kopf handlers: thin glue between kopf and the reconcile functions.

`register()` puts every handler into the registry it is given, so an operator run (or a test) owns its
registry and nothing is registered at import time.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from krocket.operator import constants as c
from krocket.operator.apply import merge_patch_changes
from krocket.operator.context import OperatorConfig
from krocket.operator.failures import reporting_failures
from krocket.operator.kopf_glue import context_of, emit, register_reconciler, relay
from krocket.operator.kube import BROKERGROUPS, NAMESERVERSETS
from krocket.operator.metrics import observed, register_metrics
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
        await context_of(memo).start()

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await context_of(memo).close()

    @kopf.on.probe(id="context", registry=registry)
    def probe(memo: Any, **_: Any) -> bool:
        return context_of(memo).kube is not None

    register_reconciler(registry, c.NAMESERVERSETS, "nameserverset", reconcile_nameserverset, cfg.resync_interval)
    # BrokerGroup: its timer also polls the brokers for status
    register_reconciler(registry, c.BROKERGROUPS, "brokergroup", reconcile_brokergroup, cfg.status_interval)
    # Topic: the timer repairs drift (queues changed or the topic deleted out of band) and picks up new groups
    register_reconciler(registry, c.TOPICS, "topic", reconcile_topic, cfg.resync_interval, timer_id="topic_drift")

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
        ctx = context_of(memo)
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
        emit(owner, outcome)

    @kopf.on.delete(g, v, c.TOPICS, id="topic_delete", registry=registry)
    async def topic_delete(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        relay(body, patch, await delete_topic(body, context_of(memo), retry))

    register_drain(registry, cfg)
    register_consumergroup(registry, cfg)
    register_users(registry, cfg)
