"""ConsumerGroup reconciler, autoscaler and finalizer.

Every run (create, update, resume, and a timer every `autoscale_interval`): keep the subscription group on the
master of every selected BrokerGroup, then, with `spec.autoscaling`, read the group's lag from those masters and
set the scale target's replicas through its scale subresource. The decisions are in `autoscale`, the spec in
`consumergroup`, the status in `status_consumergroup`; this module calls the brokers and the API server.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from krocket.common.subscription_group import SubscriptionGroupConfig
from krocket.operator import autoscale
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator import consumergroup as cg
from krocket.operator import status_consumergroup as cgs
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta, spec_of
from krocket.operator.context import OperatorConfig, OperatorContext
from krocket.operator.kopf_glue import context_of, emit
from krocket.operator.kube import BROKERGROUPS, CONSUMERGROUPS, ApiError
from krocket.operator.metrics import observed
from krocket.operator.outcome import Event, Outcome

# --- the subscription group on each master ------------------------------------------------------------


async def _apply_group(
    group: Mapping[str, Any], config: SubscriptionGroupConfig, ctx: OperatorContext
) -> dict[str, Any]:
    url = ctx.resolver.admin_url(group, 0)
    if url is None or ctx.admin is None:
        return cgs.unavailable_entry(group, "master has no address yet")
    try:
        await ctx.admin.upsert_group(url, config.to_json())
    except BrokerUnavailable as e:
        return cgs.unavailable_entry(group, f"master unreachable: {e}")
    except BrokerRejected as e:
        return cgs.rejected_entry(group, str(e))
    return cgs.applied_entry(group)


def _needs_sync(body: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], now: float, interval: float) -> bool:
    """Whether the subscription group must be written again: the spec or the selection changed, a master did not
    take it, or the last write is older than the resync interval (drift repair)."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != meta(body).get("generation"):
        return True
    entries = status.get("brokers") or []
    if [e.get("brokerGroup") for e in entries] != [meta(g)["name"] for g in groups]:
        return True
    if not cgs.all_applied(entries):
        return True
    try:
        synced = datetime.datetime.fromisoformat(str(status["lastSyncTime"])).timestamp()
    except (KeyError, ValueError):
        return True
    return now - synced >= interval


def _group_events(
    previous: Sequence[Mapping[str, Any]], entries: Sequence[Mapping[str, Any]], name: str
) -> list[Event]:
    """An event for each master whose state changed (none in a steady state)."""
    before = {e.get("brokerGroup"): e.get("state") for e in previous}
    events = []
    for entry in entries:
        if before.get(entry["brokerGroup"]) == entry["state"]:
            continue
        if entry["state"] == cgs.APPLIED:
            events.append(
                Event("Normal", "GroupApplied", f"subscription group {name} applied on {entry['brokerName']}")
            )
        elif entry["state"] == cgs.REJECTED:
            events.append(Event("Warning", cond.REASON_BROKER_REJECTED, f"{entry['brokerName']}: {entry['message']}"))
        else:
            events.append(
                Event("Warning", cond.REASON_BROKER_UNAVAILABLE, f"{entry['brokerName']}: {entry['message']}")
            )
    return events


# --- autoscaling --------------------------------------------------------------------------------------


@dataclass
class _Scaling:
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[cond.Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def active(self) -> cond.Condition | None:
        return next((x for x in self.conditions if x.type == cgs.SCALING_ACTIVE), None)


@dataclass
class _Backlog:
    lag: dict[str, int]
    queues: dict[str, int]
    failures: list[str]


async def _read_backlog(
    groups: Sequence[Mapping[str, Any]], group_name: str, topics: Sequence[str], ctx: OperatorContext
) -> _Backlog:
    """The group's lag per topic and each topic's read queues, summed over the masters."""

    async def one(group: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, dict[str, int], str | None]:
        url = ctx.resolver.admin_url(group, 0)
        if url is None or ctx.admin is None:
            return None, {}, f"{bg.broker_name(group)}: master has no address yet"
        admin = ctx.admin
        try:
            offsets = await admin.group_offsets(url, group_name)
            held = await asyncio.gather(*(admin.get_topic(url, t) for t in topics))
        except (BrokerUnavailable, BrokerRejected) as e:
            return None, {}, f"{bg.broker_name(group)}: {e}"
        queues = {t: int((h or {}).get("readQueueNums", 0)) for t, h in zip(topics, held, strict=True)}
        return offsets, queues, None

    results = await asyncio.gather(*(one(g) for g in groups))
    lag = autoscale.lag_by_topic((r[0] for r in results), autoscale.group_topics(topics, group_name))
    queues = dict.fromkeys(topics, 0)
    for _, per_topic, _ in results:
        for topic, n in per_topic.items():
            queues[topic] += n
    return _Backlog(lag, queues, [r[2] for r in results if r[2] is not None])


def _changed(body: Mapping[str, Any], new: cond.Condition) -> bool:
    old = cond.find((body.get("status") or {}).get("conditions"), new.type)
    return old is None or old.get("status") != new.status or old.get("reason") != new.reason


async def _autoscale(
    body: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]],
    policy: autoscale.Policy,
    ctx: OperatorContext,
    now: float,
) -> _Scaling:
    kube = ctx.started_kube()
    ns = meta(body)["namespace"]
    previous = body.get("status") or {}
    ref = (spec_of(body).get("autoscaling") or {}).get("scaleTargetRef") or {}
    api_version, kind_name, name = ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment"), ref.get("name")
    target = f"{kind_name}/{name}"
    out = _Scaling()
    out.status["lastScaleTime"] = previous.get("lastScaleTime")
    out.status["recommendations"] = previous.get("recommendations") or []

    backlog = await _read_backlog(groups, cg.group_name(body), cg.topics(body), ctx)
    if not backlog.failures:
        out.status["lag"] = cgs.lag_status(backlog.lag, backlog.queues)
        out.status["queues"] = autoscale.queue_limit(backlog.queues)

    def inactive(reason: str, message: str) -> _Scaling:
        active = cgs.scaling_active(cond.FALSE, reason, message)
        out.conditions.append(active)
        out.status["lastDecision"] = message
        if _changed(body, active):
            out.events.append(Event("Warning", reason, message))
        return out

    try:
        kind = await kube.scalable_kind(str(api_version), str(kind_name))
        scale = None if kind is None else await kube.get_scale(kind, ns, str(name))
    except ApiError as e:
        return inactive(cgs.REASON_FAILED_GET_SCALE, f"cannot read the scale of {target}: {e}")
    if kind is None:
        return inactive(cgs.REASON_FAILED_GET_SCALE, f"{api_version} {kind_name} has no scale subresource")
    if scale is None:
        return inactive(cgs.REASON_FAILED_GET_SCALE, f"scale target {target} not found in namespace {ns}")
    current = int((scale.get("spec") or {}).get("replicas", 0) or 0)
    out.status["currentReplicas"] = current
    if backlog.failures:
        out.status["desiredReplicas"] = current
        return inactive(
            cond.REASON_BROKER_UNAVAILABLE,
            f"cannot read the lag ({'; '.join(backlog.failures)}); keeping {target} at {current} replica(s)",
        )

    decision = autoscale.decide(
        current=current,
        lag=sum(backlog.lag.values()),
        queues=autoscale.queue_limit(backlog.queues),
        history=cgs.history_from_status(previous),
        now=now,
        policy=policy,
    )
    out.status["desiredReplicas"] = decision.desired
    out.status["recommendations"] = cgs.history_to_status(decision.history)
    out.status["lastDecision"] = decision.message
    if decision.scaled:
        try:
            await kube.set_scale(kind, ns, str(name), decision.desired)
        except ApiError as e:
            return inactive(cgs.REASON_FAILED_UPDATE_SCALE, f"cannot set {target} to {decision.desired}: {e}")
        reason = "ScaledUp" if decision.desired > current else "ScaledDown"
        out.events.append(Event("Normal", reason, f"{target}: {decision.message}"))
        out.status["lastScaleTime"] = cond.now_iso(datetime.datetime.fromtimestamp(now, datetime.UTC))
    masters = len(groups)
    out.conditions.append(
        cgs.scaling_active(cond.TRUE, cgs.REASON_VALID_LAG, f"lag read from {masters} master(s); target {target}")
    )
    out.conditions.append(cgs.scaling_limited(decision.bounded))
    return out


# --- the reconcile ------------------------------------------------------------------------------------


def _refused(body: Mapping[str, Any], status: dict[str, Any], reason: str, message: str) -> Outcome:
    out = Outcome()
    ready = cond.Condition(cond.READY, cond.FALSE, reason, message)
    if _changed(body, ready):
        out.events.append(Event("Warning", reason, message))
    out.status = cond.status_with_conditions(body, status, [ready])
    return out


async def reconcile_consumergroup(
    body: Mapping[str, Any], ctx: OperatorContext, *, sync_group: bool = True, now: float | None = None
) -> Outcome:
    """`sync_group`: write the subscription group to every master even when nothing changed (change handlers)."""
    kube = ctx.started_kube()
    ns = meta(body)["namespace"]
    now = time.time() if now is None else now
    autoscaling = spec_of(body).get("autoscaling")
    if not autoscaling:
        body = cgs.without_autoscaling_conditions(body)
    status: dict[str, Any] = {"groupName": cg.group_name(body)}
    try:
        config = cg.subscription_group(body)
        policy = autoscale.Policy.from_spec(autoscaling) if autoscaling else None
    except cg.ConsumerGroupSpecError as e:
        if e.reason == cond.REASON_NOT_SUPPORTED:
            status["groupName"] = (body.get("status") or {}).get("groupName")
        return _refused(body, status, e.reason, str(e))
    except autoscale.AutoscalingSpecError as e:
        return _refused(body, status, cond.REASON_INVALID, str(e))

    owner = cg.find_owner(body, await kube.list(CONSUMERGROUPS, ns))
    if owner is not None:
        ready = cgs.conflict_condition(config.group_name, ns, owner)
        return _refused(body, status, ready.reason, ready.message)

    groups = cg.select_groups(body, await kube.list(BROKERGROUPS, ns))
    if not groups:
        ready = cgs.no_groups_condition()
        status["brokers"] = []
        return _refused(body, status, ready.reason, ready.message)

    out = Outcome()
    previous = (body.get("status") or {}).get("brokers") or []
    if sync_group or _needs_sync(body, groups, now, ctx.config.resync_interval):
        entries = list(await asyncio.gather(*(_apply_group(g, config, ctx) for g in groups)))
        out.events.extend(_group_events(previous, entries, config.group_name))
        status["lastSyncTime"] = cond.now_iso(datetime.datetime.fromtimestamp(now, datetime.UTC))
    else:
        entries = [dict(e) for e in previous]
        status["lastSyncTime"] = (body.get("status") or {}).get("lastSyncTime")
    status["brokers"] = entries

    updates: list[cond.Condition] = []
    if policy is not None:
        scaling = await _autoscale(body, groups, policy, ctx, now)
        status.update(scaling.status)
        out.events.extend(scaling.events)
        updates.extend(scaling.conditions)
        updates.insert(0, cgs.ready_condition(config.group_name, entries, scaling.active))
    else:
        updates.append(cgs.ready_condition(config.group_name, entries, None))
    out.status = cond.status_with_conditions(body, status, updates)
    return out


async def delete_consumergroup(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    """Finalizer: delete the subscription group from every master holding it, unless Retain or another
    ConsumerGroup resource manages the same group."""
    kube = ctx.started_kube()
    ns = meta(body)["namespace"]
    out = Outcome()
    name = (body.get("status") or {}).get("groupName") or cg.group_name(body)
    if cg.retained(body):
        out.events.append(Event("Normal", "GroupRetained", f"deletionPolicy Retain: group {name} kept on the brokers"))
        return out
    others = [
        g
        for g in await kube.list(CONSUMERGROUPS, ns)
        if meta(g)["name"] != meta(body)["name"] and not meta(g).get("deletionTimestamp") and cg.group_name(g) == name
    ]
    if others:
        msg = f"group {name} is still managed by ConsumerGroup {meta(others[0])['name']}"
        out.events.append(Event("Normal", "GroupRetained", msg))
        return out
    all_groups = await kube.list(BROKERGROUPS, ns)
    held = {e.get("brokerGroup") for e in (body.get("status") or {}).get("brokers") or []}
    targets = {meta(g)["name"]: g for g in cg.select_groups(body, all_groups)}
    targets.update({meta(g)["name"]: g for g in all_groups if meta(g)["name"] in held})
    failed = []
    for gname, group in sorted(targets.items()):
        url = ctx.resolver.admin_url(group, 0)
        if url is None or ctx.admin is None:
            failed.append(f"{gname}: no address")
            continue
        try:
            if await ctx.admin.delete_group(url, name):
                out.events.append(Event("Normal", "GroupDeleted", f"deleted group {name} from {bg.broker_name(group)}"))
        except (BrokerUnavailable, BrokerRejected) as e:
            failed.append(f"{gname}: {e}")
    if failed:
        msg = f"cannot delete group {name} yet ({'; '.join(failed)}); retrying. Set deletionPolicy: Retain to skip"
        out.events.append(Event("Warning", "GroupDeleteFailed", msg))
        unavailable = cond.Condition(cond.READY, cond.FALSE, cond.REASON_BROKER_UNAVAILABLE, msg)
        out.status = cond.status_with_conditions(body, {}, [unavailable])
        out.retry_after, out.retry_message = ctx.backoff(retry), msg
    return out


# --- kopf handlers ------------------------------------------------------------------------------------

Reconcile = Callable[[Mapping[str, Any], OperatorContext], Awaitable[Outcome]]


class _OneAtATime:
    """kopf runs a resource's change handlers and its timer concurrently. Two runs reading the same replicas would
    both scale and both post ScaledUp, and a run on a stale body would forget the other's recommendations; so
    each ConsumerGroup is reconciled by one run at a time, on a fresh read of the resource, and that run writes
    the status itself before the next starts. One instance per registry (per operator run)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    async def run(self, body: kopf.Body, ctx: OperatorContext, reconcile: Reconcile, *, deleting: bool) -> Outcome:

        kube = ctx.started_kube()
        ns, name, uid = body.metadata.namespace, body.metadata.name, body.metadata.uid
        if ns is None or name is None or uid is None:
            return Outcome()
        async with self._locks.setdefault(uid, asyncio.Lock()):
            fresh = await kube.get(CONSUMERGROUPS, ns, name)
            if fresh is None or meta(fresh).get("uid") != uid:
                self._locks.pop(uid, None)
                return Outcome()
            if meta(fresh).get("deletionTimestamp") and not deleting:
                return Outcome()  # the finalizer has it now; a late timer must not write the group back
            outcome = await reconcile(fresh, ctx)
            if outcome.status:
                await kube.patch(CONSUMERGROUPS, ns, name, {"status": outcome.status}, "status")
            emit(fresh, outcome)
        if deleting and outcome.retry_after is None:
            self._locks.pop(uid, None)
        return outcome


def register_consumergroup(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:

    g, v = c.GROUP, c.VERSION
    serial = _OneAtATime()
    reconcile = observed(c.KIND_CONSUMERGROUP)(reconcile_consumergroup)
    delete = observed(c.KIND_CONSUMERGROUP, "delete")(delete_consumergroup)

    @kopf.on.resume(g, v, c.CONSUMERGROUPS, id="consumergroup", registry=registry)
    @kopf.on.create(g, v, c.CONSUMERGROUPS, id="consumergroup", registry=registry)
    @kopf.on.update(g, v, c.CONSUMERGROUPS, id="consumergroup", registry=registry)
    async def consumergroup(body: kopf.Body, memo: Any, **_: Any) -> None:
        """The spec changed: write the subscription group everywhere; the timer retries what failed."""
        await serial.run(body, context_of(memo), lambda b, ctx: reconcile(b, ctx, sync_group=True), deleting=False)

    @kopf.timer(
        g,
        v,
        c.CONSUMERGROUPS,
        interval=cfg.autoscale_interval,
        initial_delay=cfg.autoscale_interval,
        id="consumergroup_autoscale",
        registry=registry,
    )
    async def consumergroup_autoscale(body: kopf.Body, memo: Any, **_: Any) -> None:
        """Reads the lag and sets the replicas; repairs the subscription group every resync interval."""
        await serial.run(body, context_of(memo), lambda b, ctx: reconcile(b, ctx, sync_group=False), deleting=False)

    @kopf.on.delete(g, v, c.CONSUMERGROUPS, id="consumergroup_delete", registry=registry)
    async def consumergroup_delete(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
        outcome = await serial.run(body, context_of(memo), lambda b, ctx: delete(b, ctx, retry), deleting=True)
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(outcome.retry_message, delay=outcome.retry_after)
