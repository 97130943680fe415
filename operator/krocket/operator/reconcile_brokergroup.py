"""BrokerGroup reconciler: observe the StatefulSet, Pods and brokers, decide scale and rollout, apply, report.

The decisions live in pure modules: shapes, scale and the slaves-first order in `build_brokergroup`, the
forced master roll, write permission and manual roll in `rollout`, the fixed identity in `identity`, and the
status in `status_brokergroup`; this module reads, applies and relays.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator import identity
from krocket.operator import rollout as rl
from krocket.operator import status_brokergroup as bg_status
from krocket.operator.apply import OwnershipConflict, apply_children, controller_uid
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta, spec_of
from krocket.operator.context import OperatorContext
from krocket.operator.drain import writes_withdrawn
from krocket.operator.kube import BROKERGROUPS, CONFIGMAPS, NAMESERVERSETS, PODS, PVCS, STATEFULSETS
from krocket.operator.outcome import Event, Outcome
from krocket.operator.quantity import parse_quantity
from krocket.operator.reconcile_security import secure_brokergroup
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


def sync_needs_slave(body: Mapping[str, Any]) -> str | None:
    """SYNC_MASTER acks a send only once a slave has it: with no slave every send fails (SLAVE_NOT_AVAILABLE)."""
    spec = spec_of(body)
    if spec.get("replicationMode") == "SYNC" and bg.replicas(body) < 2:
        return (
            f"replicationMode SYNC needs at least one slave (spec.slaves is {spec.get('slaves')}): every send "
            "would fail with SLAVE_NOT_AVAILABLE; the group keeps its current shape. Set spec.slaves >= 1 "
            "or replicationMode ASYNC"
        )
    return None


async def _expand_volumes(
    body: Mapping[str, Any], sts: Mapping[str, Any], size: str, ctx: OperatorContext
) -> list[str]:
    """Patch the PVCs whose requested size is below `size` (compared as quantities); the ones patched."""
    kube = ctx.started_kube()
    name, ns = meta(body)["name"], meta(body)["namespace"]
    want = parse_quantity(size)
    patched = []
    for i in range(int(sts["spec"]["replicas"])):
        pvc_name = bg.pvc_name(name, i)
        pvc = await kube.get(PVCS, ns, pvc_name)
        if pvc is None:
            continue
        have = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        try:
            if have is not None and parse_quantity(str(have)) >= want:
                continue
        except ValueError:
            pass
        await kube.patch(PVCS, ns, pvc_name, {"spec": {"resources": {"requests": {"storage": size}}}})
        patched.append(pvc_name)
    return patched


async def _delete_old_configmaps(body: Mapping[str, Any], keep: set[str], ctx: OperatorContext) -> list[str]:
    """Config revisions no pod template refers to any more (and the un-versioned one of older operators)."""
    kube = ctx.started_kube()
    name, ns = meta(body)["name"], meta(body)["namespace"]
    uid = meta(body).get("uid")
    deleted = []
    for cm in await kube.list(CONFIGMAPS, ns, bg.selector_labels(name, bg.COMPONENT)):
        cm_name = str(meta(cm).get("name", ""))
        ours = bg.is_config_revision_name(name, cm_name) or cm_name == bg.configmap_name(name)
        if ours and cm_name not in keep and controller_uid(cm) == uid:
            await kube.delete(CONFIGMAPS, ns, cm_name)
            deleted.append(cm_name)
    return deleted


def _config_map_of(sts: Mapping[str, Any] | None) -> str | None:
    for vol in ((((sts or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []:
        if vol.get("name") == "config":
            return (vol.get("configMap") or {}).get("name")
    return None


async def _remove_annotation(body: Mapping[str, Any], key: str, ctx: OperatorContext) -> None:
    md = meta(body)
    await ctx.started_kube().patch(
        BROKERGROUPS, md["namespace"], md["name"], {"metadata": {"annotations": {key: None}}}
    )


@dataclass
class _Flags:
    paused: bool
    force: bool
    manual: bool
    draining: bool
    deadline: float
    problems: list[tuple[str, str]] = field(default_factory=list)


def _flags(body: Mapping[str, Any], ctx: OperatorContext) -> _Flags:
    annotations = meta(body).get("annotations") or {}
    flags = _Flags(
        paused=rl.annotation_true(body, c.ANN_PAUSED),
        force=rl.annotation_true(body, c.ANN_FORCE_ROLL),
        manual=rl.annotation_true(body, c.ANN_MANUAL_ROLLING_UPDATE),
        draining=writes_withdrawn(body),  # a drain (annotation or deletion) keeps writes off
        deadline=ctx.config.master_roll_deadline,
    )
    raw = annotations.get(c.ANN_MASTER_ROLL_DEADLINE)
    if raw is not None:
        try:
            flags.deadline = rl.parse_duration(str(raw))
        except ValueError as e:
            flags.problems.append((cond.REASON_INVALID, f"annotation {c.ANN_MASTER_ROLL_DEADLINE}: {e}"))
    return flags


async def _withdraw_master_write(body: Mapping[str, Any], ctx: OperatorContext, out: Outcome) -> bool:
    """True when withdrawn; False when the master cannot be asked (it takes no writes then either)."""
    url = ctx.resolver.admin_url(body, 0)
    if url is None or ctx.admin is None:
        return False
    try:
        await ctx.admin.set_write_permission(url, False)
    except (BrokerUnavailable, BrokerRejected) as e:
        log.info("could not withdraw write permission of %s (restarting it anyway): %s", url, e)
        return False
    out.events.append(
        Event("Normal", "WritePermissionWithdrawn", "master write permission withdrawn before its restart")
    )
    return True


async def _restore_master_write(body: Mapping[str, Any], ctx: OperatorContext, out: Outcome) -> bool:
    url = ctx.resolver.admin_url(body, 0)
    if url is None or ctx.admin is None:
        return False
    try:
        await ctx.admin.set_write_permission(url, True)
    except (BrokerUnavailable, BrokerRejected) as e:
        log.info("could not restore write permission of %s: %s", url, e)
        return False
    out.events.append(Event("Normal", "WritePermissionRestored", "master write permission restored"))
    return True


async def _delete_stuck_pods(
    body: Mapping[str, Any], sts: Mapping[str, Any] | None, pods: list[PodView], ctx: OperatorContext
) -> list[str]:
    """A forced roll: Pods that are not Ready and run an old revision are deleted, so the StatefulSet
    controller (which waits for every Pod to be Ready before it moves on) recreates them on the new one."""
    update_revision = ((sts or {}).get("status") or {}).get("updateRevision")
    if not update_revision:
        return []
    ns = meta(body)["namespace"]
    deleted = []
    for p in sorted(pods, key=lambda v: -v.ordinal):
        if not p.ready and not p.terminating and p.revision and p.revision != update_revision:
            await ctx.started_kube().delete(PODS, ns, p.pod)
            deleted.append(p.pod)
    return deleted


async def reconcile_brokergroup(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    """One reconcile at a time per BrokerGroup, on the body as it is now: kopf's handlers, the status timer and
    StatefulSet events would otherwise overlap, and one that started from an older body would undo what another
    just decided (a second manual roll, a config revision deleted while the template moves to it)."""
    name, ns = meta(body)["name"], meta(body)["namespace"]
    lock = ctx.locks.setdefault((c.KIND_BROKERGROUP, ns, name), asyncio.Lock())
    async with lock:
        fresh = await ctx.started_kube().get(BROKERGROUPS, ns, name)
        if fresh is not None and meta(fresh).get("uid") == meta(body).get("uid"):
            body = fresh
        out = await _reconcile(body, ctx)
        before = rl.RollState.from_status(body.get("status"))
        if out.status.get("rollout") != before.as_status():
            # written now, so the next reconcile (it may start before kopf patches the status) sees it
            await ctx.started_kube().patch(
                BROKERGROUPS, ns, name, {"status": {"rollout": out.status["rollout"]}}, "status"
            )
        return out


async def _reconcile(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    kube = ctx.started_kube()
    name, ns = meta(body)["name"], meta(body)["namespace"]
    now = datetime.datetime.now(datetime.UTC)
    out = Outcome()
    updates: list[cond.Condition] = []
    flags = _flags(body, ctx)
    problems = flags.problems
    status_in = body.get("status") or {}

    sts = await kube.get(STATEFULSETS, ns, bg.statefulset_name(name))

    # the identity applied first is kept: a change is refused and the children keep the old values
    ident = identity.check(body, identity.recorded(body, sts is not None))
    for msg in ident.refusals:
        problems.append((cond.REASON_IMMUTABLE_FIELD, msg))
        out.events.append(Event("Warning", "ImmutableFieldRefused", msg))
    group = ident.body

    refused_shape = sync_needs_slave(group)
    if refused_shape is not None:
        problems.append((cond.REASON_SYNC_NEEDS_SLAVE, refused_shape))
        out.events.append(Event("Warning", cond.REASON_SYNC_NEEDS_SLAVE, refused_shape))
    frozen = flags.paused or refused_shape is not None

    new_size = None
    try:
        new_size = bg.check_storage_change(group, sts)
    except bg.SpecError as e:
        problems.append((e.reason, str(e)))
        out.events.append(Event("Warning", "StorageChangeRefused", str(e)))

    missing = await _missing_namesrv(group, ctx)
    if missing is not None:
        problems.append((cond.REASON_NAMESRV_MISSING, missing))

    pods = await observe_group(group, sts, ctx)
    master_ready = bool(pods and pods[0].ready)
    master_writable = rl.writable_of(pods[0].info) if pods else None
    skip = rl.annotation_true(body, c.ANN_SKIP_DRAIN_CHECK)
    current = int(sts["spec"]["replicas"]) if sts else None
    scale = bg.scale(desired=bg.replicas(group), current=current, master_ready=master_ready, skip_check=skip)
    updates.append(bg_status.scale_condition(scale))
    if scale.blocked:
        out.events.append(Event("Warning", "ScaleDownBlocked", scale.message))
        out.retry_after = ctx.config.retry_base_delay
        out.retry_message = scale.message
    elif scale.message and not frozen:
        out.events.append(Event("Normal", "ScalingDown", scale.message))

    lag_limit = ctx.config.max_slave_lag_bytes
    in_sync = bg_status.has_slave_in_sync(bg_status.status(group, sts, pods, lag_limit))
    state = rl.RollState.from_status(status_in)
    live_token = rl.live_restart_token(sts)
    token, state = rl.restart_token(requested=flags.manual and not frozen, state=state, live_token=live_token)
    desired_sts = bg.statefulset(group, replica_count=scale.replicas, restart_token=token)
    desired_hash = desired_sts["metadata"]["annotations"][c.ANN_TEMPLATE_HASH]
    live_hash = ((sts or {}).get("metadata") or {}).get("annotations", {}).get(c.ANN_TEMPLATE_HASH)
    template_changed = sts is not None and live_hash != desired_hash
    base = bg.rollout(replica_count=scale.replicas, template_changed=template_changed, sts=sts, slave_in_sync=in_sync)

    def plan(state: rl.RollState, grace: float, writable: bool | None) -> rl.RollPlan:
        return rl.plan_roll(
            base=base,
            sts=sts,
            template_changed=template_changed,
            desired_hash=desired_hash,
            master_ready=master_ready,
            master_writable=writable,
            force=flags.force,
            deadline=flags.deadline,
            write_grace=grace,
            state=state,
            now=now,
        )

    ro = plan(state, ctx.config.master_write_grace, master_writable)
    forced_now = ro.forced_now
    if not frozen and ro.withdraw_write:
        if await _withdraw_master_write(group, ctx, out):
            master_writable = False
            ro = plan(rl.after_withdrawal(ro.state, now), ctx.config.master_write_grace, False)
        else:  # unreachable: it takes no writes, nothing to wait for
            ro = plan(ro.state, 0.0, False)
    if not frozen:
        if forced_now or ro.forced_now:
            out.events.append(Event("Warning", cond.REASON_FORCED_MASTER_ROLL, ro.message))
        if template_changed:
            out.events.append(Event("Normal", "RollingUpdate", f"pod template changed: {ro.message}"))
        if ro.retry_after is not None and out.retry_after is None:
            out.retry_after = max(ro.retry_after, ctx.config.retry_base_delay / 10)
            out.retry_message = ro.message
    updates.append(bg_status.paused_condition(flags.paused))
    if not flags.paused:
        updates.append(bg_status.rollout_condition(bg.Rollout(ro.partition, ro.rolling, ro.reason, ro.message)))

    security = await secure_brokergroup(group, ctx)  # NetworkPolicy, ACL and TLS (reconcile_security)
    out.events.extend(security.events)
    updates.append(security.condition())

    live: dict[str, dict[str, Any]] = {"StatefulSet": sts} if sts else {}
    applied = False
    if not frozen:
        try:
            children = bg.children(group, partition=ro.partition, replica_count=scale.replicas, restart_token=token)
            children += security.children
            live = await apply_children(kube, children, out.events)
            applied = True
        except OwnershipConflict as e:
            problems.append((cond.REASON_CONFLICT, str(e)))
            out.events.append(Event("Warning", cond.REASON_CONFLICT, str(e)))

    sts_live = live.get("StatefulSet")
    if applied and sts_live is not None:
        if ro.state.forced and ro.partition == 0:
            for pod in await _delete_stuck_pods(group, sts_live, pods, ctx):
                out.events.append(Event("Warning", "StuckPodDeleted", f"deleted {pod} (not Ready, old revision)"))
        if new_size:
            patched = await _expand_volumes(group, sts_live, new_size, ctx)
            if patched:
                out.events.append(Event("Normal", "VolumesExpanding", f"requested {new_size} for {', '.join(patched)}"))
        done = rl.settled(sts_live, scale.replicas, template_changed=False)
        if done:
            # read again: a reconcile running at the same time may have just moved the template to a new revision
            fresh = await kube.get(STATEFULSETS, ns, bg.statefulset_name(name))
            if rl.settled(fresh, scale.replicas, template_changed=False):
                keep = {n for n in (_config_map_of(fresh), _config_map_of(desired_sts)) if n}
                for cm in await _delete_old_configmaps(group, keep, ctx):
                    out.events.append(Event("Normal", "ConfigMapDeleted", f"old config revision {cm} deleted"))
        if done and ro.state.manual_token and rl.live_restart_token(sts_live) == ro.state.manual_token:
            if flags.manual:
                await _remove_annotation(body, c.ANN_MANUAL_ROLLING_UPDATE, ctx)
            out.events.append(Event("Normal", "ManualRollingUpdateDone", "every pod was rolled once"))
            ro = rl.RollPlan(ro.partition, ro.rolling, ro.reason, ro.message, rl.RollState(manual_done=token))
        if done and flags.force:
            await _remove_annotation(body, c.ANN_FORCE_ROLL, ctx)
        if rl.should_restore_write(
            rolling=ro.rolling or not rl.controller_caught_up(sts_live),
            master_ready=master_ready,
            master_writable=master_writable,
            draining=flags.draining,
            paused=flags.paused,
        ) and await _restore_master_write(group, ctx, out):
            master_writable = True

    updates.append(bg_status.ready_condition(group, sts_live))
    updates.append(bg_status.reconciled_condition(problems))
    status = bg_status.status(group, sts_live, pods, lag_limit)
    if master_writable is not None:
        status["master"]["writable"] = master_writable
    status["rollout"] = ro.state.as_status()
    if applied or status_in.get("identity"):
        status["identity"] = ident.identity
    out.status = cond.status_with_conditions(body, status, updates)
    return out
