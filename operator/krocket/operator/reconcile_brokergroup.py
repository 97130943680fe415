"""BrokerGroup reconciler: observe the StatefulSet, Pods and brokers, decide scale and rollout, apply, report.

The decisions (scale, rollout, storage) live in `build_brokergroup` and the status in
`status_brokergroup`; this module reads, applies and relays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator import status_brokergroup as bg_status
from krocket.operator.apply import OwnershipConflict, apply_children
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta, spec_of
from krocket.operator.context import OperatorContext
from krocket.operator.kube import NAMESERVERSETS, PODS, PVCS, STATEFULSETS
from krocket.operator.outcome import Event, Outcome
from krocket.operator.status_brokergroup import PodView

log = logging.getLogger(__name__)


async def observe_group(body: Mapping[str, Any], sts: Mapping[str, Any] | None, ctx: OperatorContext) -> list[PodView]:
    """Pods of the group with their readiness (from the Pod) and broker state (from the admin API)."""
    name, ns = meta(body)["name"], meta(body)["namespace"]
    count = int(((sts or {}).get("spec") or {}).get("replicas", 0) or 0)
    if count == 0:
        return []
    pods = await ctx.started_kube().list(PODS, ns, bg.selector_labels(name, bg.COMPONENT))
    by_name = {meta(p)["name"]: p for p in pods}

    async def one(i: int) -> PodView:
        info = None
        url = ctx.resolver.admin_url(body, i)
        if url and ctx.admin is not None:
            try:
                info = await ctx.admin.broker_info(url)
            except (BrokerUnavailable, BrokerRejected) as e:
                log.debug("broker %s/%s-%d unreachable: %s", ns, name, i, e)
        return bg_status.pod_view(body, i, by_name.get(bg.pod_name(name, i)), info)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _missing_namesrv(body: Mapping[str, Any], ctx: OperatorContext) -> str | None:
    """Why brokers cannot register when spec.nameServerSetRef names a NameServerSet that does not exist."""
    ref = spec_of(body).get("nameServerSetRef") or {}
    nss_ns = ref.get("namespace") or meta(body)["namespace"]
    if (
        ref.get("name")
        and not ref.get("address")
        and await ctx.started_kube().get(NAMESERVERSETS, nss_ns, ref["name"]) is None
    ):
        return (
            f"NameServerSet {ref['name']!r} not found; brokers cannot register until it exists "
            "(create it or fix spec.nameServerSetRef.name)"
        )
    return None


async def _expand_volumes(body: Mapping[str, Any], sts: Mapping[str, Any], size: str, ctx: OperatorContext) -> None:
    kube = ctx.started_kube()
    name, ns = meta(body)["name"], meta(body)["namespace"]
    for i in range(int(sts["spec"]["replicas"])):
        pvc = await kube.get(PVCS, ns, bg.pvc_name(name, i))
        if pvc is not None:
            await kube.patch(PVCS, ns, bg.pvc_name(name, i), {"spec": {"resources": {"requests": {"storage": size}}}})


async def reconcile_brokergroup(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    kube = ctx.started_kube()
    name, ns = meta(body)["name"], meta(body)["namespace"]
    out = Outcome()
    updates: list[cond.Condition] = []
    problems: list[tuple[str, str]] = []

    sts = await kube.get(STATEFULSETS, ns, bg.statefulset_name(name))
    new_size = None
    try:
        new_size = bg.check_storage_change(body, sts)
    except bg.SpecError as e:
        problems.append((e.reason, str(e)))
        out.events.append(Event("Warning", "StorageChangeRefused", str(e)))

    missing = await _missing_namesrv(body, ctx)
    if missing is not None:
        problems.append((cond.REASON_NAMESRV_MISSING, missing))

    pods = await observe_group(body, sts, ctx)
    master_ready = bool(pods and pods[0].ready)
    skip = str((meta(body).get("annotations") or {}).get(c.ANN_SKIP_DRAIN_CHECK, "")).lower() == "true"
    current = int(sts["spec"]["replicas"]) if sts else None
    scale = bg.scale(desired=bg.replicas(body), current=current, master_ready=master_ready, skip_check=skip)
    updates.append(bg_status.scale_condition(scale))
    if scale.blocked:
        out.events.append(Event("Warning", "ScaleDownBlocked", scale.message))
        out.retry_after = ctx.config.retry_base_delay
        out.retry_message = scale.message
    elif scale.message:
        out.events.append(Event("Normal", "ScalingDown", scale.message))

    lag_limit = ctx.config.max_slave_lag_bytes
    in_sync = bg_status.has_slave_in_sync(bg_status.status(body, sts, pods, lag_limit))
    desired_sts = bg.statefulset(body, replica_count=scale.replicas)
    desired_hash = desired_sts["metadata"]["annotations"][c.ANN_TEMPLATE_HASH]
    live_hash = ((sts or {}).get("metadata") or {}).get("annotations", {}).get(c.ANN_TEMPLATE_HASH)
    template_changed = sts is not None and live_hash != desired_hash
    ro = bg.rollout(replica_count=scale.replicas, template_changed=template_changed, sts=sts, slave_in_sync=in_sync)
    if template_changed:
        out.events.append(Event("Normal", "RollingUpdate", f"pod template changed: {ro.message}"))
    updates.append(bg_status.rollout_condition(ro))

    try:
        children = bg.children(body, partition=ro.partition, replica_count=scale.replicas)
        live = await apply_children(kube, children, out.events)
    except OwnershipConflict as e:
        problems.append((cond.REASON_CONFLICT, str(e)))
        out.events.append(Event("Warning", cond.REASON_CONFLICT, str(e)))
        live = {"StatefulSet": sts} if sts else {}

    if new_size and sts:
        await _expand_volumes(body, sts, new_size, ctx)
        out.events.append(Event("Normal", "VolumesExpanding", f"requested {new_size} for every broker volume"))

    sts_live = live.get("StatefulSet")
    updates.append(bg_status.ready_condition(body, sts_live))
    updates.append(bg_status.reconciled_condition(problems))
    out.status = cond.status_with_conditions(body, bg_status.status(body, sts_live, pods, lag_limit), updates)
    return out
