"""Idempotent reconcile functions: observe, compare with the builders' desired state, act.

Each returns an `Outcome` (status to write, events to emit, when to retry); the kopf handlers only relay
it. They run the same way on create, update, resume, timers and child events (level-based).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from krocket.common import ports
from krocket.common.topic import TopicConfig
from krocket.operator import build_brokergroup as bg
from krocket.operator import build_namesrv as nsrv
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator import placement as pl
from krocket.operator.apply import OwnershipConflict, apply
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta, spec_of
from krocket.operator.context import OperatorContext
from krocket.operator.kube import (
    BROKERGROUPS,
    NAMESERVERSETS,
    PODS,
    PVCS,
    STATEFULSETS,
    TOPICS,
    KubeClient,
)

log = logging.getLogger(__name__)

STS_IMMUTABLE = (
    ("spec", "selector"),
    ("spec", "serviceName"),
    ("spec", "podManagementPolicy"),
    ("spec", "volumeClaimTemplates"),
)
SVC_IMMUTABLE = (("spec", "clusterIP"),)
PDB_IMMUTABLE: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    retry_after: float | None = None
    retry_message: str = ""


def _kube(ctx: OperatorContext) -> KubeClient:
    if ctx.kube is None:
        raise RuntimeError("operator context not started")
    return ctx.kube


def _finish(
    body: Mapping[str, Any], status: dict[str, Any], updates: list[cond.Condition], now: str | None = None
) -> dict[str, Any]:
    generation = meta(body).get("generation")
    status["conditions"] = cond.merge_conditions(
        (body.get("status") or {}).get("conditions"),
        updates,
        now=now or cond.now_iso(),
        observed_generation=generation,
    )
    if generation is not None:
        status["observedGeneration"] = generation
    return status


async def _apply_all(
    kube: KubeClient, manifests: list[dict[str, Any]], events: list[Event]
) -> dict[str, dict[str, Any]]:
    live: dict[str, dict[str, Any]] = {}
    for m in manifests:
        immutable = {"StatefulSet": STS_IMMUTABLE, "Service": SVC_IMMUTABLE}.get(m["kind"], ())
        result, obj = await apply(kube, m, immutable=immutable)
        if result != "unchanged":
            events.append(
                Event("Normal", f"{m['kind']}{result.capitalize()}", f"{m['kind']} {m['metadata']['name']} {result}")
            )
        live[m["kind"]] = obj
    return live


# --- NameServerSet ----------------------------------------------------------------------------------


def namesrv_conditions(body: Mapping[str, Any], sts: Mapping[str, Any] | None) -> list[cond.Condition]:
    want = int(spec_of(body).get("replicas", 2))
    st = (sts or {}).get("status") or {}
    ready = int(st.get("readyReplicas", 0) or 0)
    if want == 0:
        return [cond.Condition(cond.READY, cond.FALSE, cond.REASON_NO_REPLICAS, "replicas is 0")]
    if ready >= want:
        return [cond.Condition(cond.READY, cond.TRUE, cond.REASON_ALL_READY, f"{ready}/{want} name servers ready")]
    return [
        cond.Condition(
            cond.READY,
            cond.FALSE,
            cond.REASON_WAITING,
            f"{ready}/{want} name servers ready; check `kubectl describe pods -l "
            f"{c.LABEL_INSTANCE}={meta(body)['name']},{c.LABEL_COMPONENT}={c.COMPONENT_NAMESRV}`",
        )
    ]


async def reconcile_nameserverset(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    kube = _kube(ctx)
    out = Outcome()
    try:
        live = await _apply_all(kube, nsrv.children(body), out.events)
    except OwnershipConflict as e:
        out.events.append(Event("Warning", cond.REASON_CONFLICT, str(e)))
        out.status = _finish(body, {}, [cond.Condition(cond.READY, cond.FALSE, cond.REASON_CONFLICT, str(e))])
        return out
    sts = live.get("StatefulSet")
    out.status = _finish(body, nsrv.status(body, sts), namesrv_conditions(body, sts))
    return out


# --- BrokerGroup ------------------------------------------------------------------------------------


@dataclass
class PodView:
    ordinal: int
    pod: str
    address: str
    ready: bool
    info: dict[str, Any] | None


def _pod_ready(pod: Mapping[str, Any] | None) -> bool:
    for cnd in ((pod or {}).get("status") or {}).get("conditions") or []:
        if cnd.get("type") == "Ready":
            return cnd.get("status") == "True"
    return False


async def observe_group(body: Mapping[str, Any], sts: Mapping[str, Any] | None, ctx: OperatorContext) -> list[PodView]:
    """Pods of the group with their readiness (from the Pod) and broker state (from the admin API)."""
    name, ns = meta(body)["name"], meta(body)["namespace"]
    count = int(((sts or {}).get("spec") or {}).get("replicas", 0) or 0)
    if count == 0:
        return []
    pods = await _kube(ctx).list(PODS, ns, bg.selector_labels(name, bg.COMPONENT))
    by_name = {meta(p)["name"]: p for p in pods}

    async def one(i: int) -> PodView:
        info = None
        url = ctx.resolver.admin_url(body, i)
        if url and ctx.admin is not None:
            try:
                info = await ctx.admin.broker_info(url)
            except (BrokerUnavailable, BrokerRejected) as e:
                log.debug("broker %s/%s-%d unreachable: %s", ns, name, i, e)
        pod = by_name.get(bg.pod_name(name, i))
        ready = _pod_ready(pod) if pod is not None else bool(info and info.get("registered"))
        addr = f"{bg.pod_host(name, ns, i)}:{ports.BROKER_PORT}"
        return PodView(i, bg.pod_name(name, i), addr, ready, info)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def group_status(
    body: Mapping[str, Any], sts: Mapping[str, Any] | None, pods: list[PodView], lag_limit: int
) -> dict[str, Any]:
    name = meta(body)["name"]
    st = (sts or {}).get("status") or {}
    master_offset = None
    master: dict[str, Any] = {"pod": bg.pod_name(name, 0), "ready": False}
    slaves: list[dict[str, Any]] = []
    for p in pods:
        entry: dict[str, Any] = {"pod": p.pod, "brokerId": p.ordinal, "address": p.address, "ready": p.ready}
        if p.info is not None:
            entry["registered"] = bool(p.info.get("registered"))
        if p.ordinal == 0:
            master = entry
            if p.info is not None and p.info.get("maxPhyOffset") is not None:
                master_offset = int(p.info["maxPhyOffset"])
        else:
            slaves.append(entry)
    max_lag = None
    for s, p in zip(slaves, pods[1:], strict=False):
        if master_offset is not None and p.info is not None and p.info.get("maxPhyOffset") is not None:
            s["lagBytes"] = max(master_offset - int(p.info["maxPhyOffset"]), 0)
            s["inSync"] = s["lagBytes"] <= lag_limit
            max_lag = s["lagBytes"] if max_lag is None else max(max_lag, s["lagBytes"])
    status: dict[str, Any] = {
        "brokerName": bg.broker_name(body),
        "clusterName": bg.cluster_name(body),
        "nameServerAddress": bg.namesrv_address(body),
        "replicas": int(st.get("replicas", 0) or 0),
        "readyReplicas": int(st.get("readyReplicas", 0) or 0),
        "slaveReplicas": max(int(st.get("replicas", 0) or 0) - 1, 0),
        "labelSelector": ",".join(f"{k}={v}" for k, v in bg.selector_labels(name, bg.COMPONENT).items()),
        "master": master,
        "slaves": slaves,
        "registered": bool(master.get("registered", False)),
    }
    if _current_image(sts):
        status["currentImage"] = _current_image(sts)
    if max_lag is not None:
        status["replicationLagBytes"] = max_lag
    return status


def _current_image(sts: Mapping[str, Any] | None) -> str | None:
    for ctr in ((((sts or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
        if ctr.get("name") == "broker":
            return ctr.get("image")
    return None


def group_ready_condition(body: Mapping[str, Any], sts: Mapping[str, Any] | None) -> cond.Condition:
    want = bg.replicas(body)
    st = (sts or {}).get("status") or {}
    ready = int(st.get("readyReplicas", 0) or 0)
    if ready >= want:
        return cond.Condition(cond.READY, cond.TRUE, cond.REASON_ALL_READY, f"master and {want - 1} slave(s) ready")
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_WAITING,
        f"{ready}/{want} broker pods ready; see `kubectl describe pod {bg.pod_name(meta(body)['name'], 0)}` "
        "and the broker logs",
    )


async def reconcile_brokergroup(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    kube = _kube(ctx)
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

    ref = spec_of(body).get("nameServerSetRef") or {}
    nss_ns = ref.get("namespace") or ns
    if ref.get("name") and not ref.get("address") and await kube.get(NAMESERVERSETS, nss_ns, ref["name"]) is None:
        problems.append(
            (
                cond.REASON_NAMESRV_MISSING,
                f"NameServerSet {ref['name']!r} not found; brokers cannot register until it exists "
                "(create it or fix spec.nameServerSetRef.name)",
            )
        )

    pods = await observe_group(body, sts, ctx)
    master_ready = bool(pods and pods[0].ready)
    skip = str((meta(body).get("annotations") or {}).get(c.ANN_SKIP_DRAIN_CHECK, "")).lower() == "true"
    current = int(sts["spec"]["replicas"]) if sts else None
    scale = bg.scale(desired=bg.replicas(body), current=current, master_ready=master_ready, skip_check=skip)
    if scale.blocked:
        updates.append(cond.Condition(cond.SCALE_BLOCKED, cond.TRUE, cond.REASON_SCALE_BLOCKED, scale.message))
        out.events.append(Event("Warning", "ScaleDownBlocked", scale.message))
        out.retry_after = ctx.config.retry_base_delay
        out.retry_message = scale.message
    else:
        updates.append(cond.Condition(cond.SCALE_BLOCKED, cond.FALSE, "NotBlocked", scale.message))
        if scale.message:
            out.events.append(Event("Normal", "ScalingDown", scale.message))

    lag_limit = ctx.config.max_slave_lag_bytes
    status = group_status(body, sts, pods, lag_limit)
    in_sync = any(s.get("inSync") and s.get("ready") for s in status["slaves"])
    desired_sts = bg.statefulset(body, replica_count=scale.replicas)
    desired_hash = desired_sts["metadata"]["annotations"][c.ANN_TEMPLATE_HASH]
    live_hash = ((sts or {}).get("metadata") or {}).get("annotations", {}).get(c.ANN_TEMPLATE_HASH)
    template_changed = sts is not None and live_hash != desired_hash
    ro = bg.rollout(replica_count=scale.replicas, template_changed=template_changed, sts=sts, slave_in_sync=in_sync)
    if template_changed:
        out.events.append(Event("Normal", "RollingUpdate", f"pod template changed: {ro.message}"))
    updates.append(cond.Condition(cond.ROLLING_UPDATE, cond.TRUE if ro.rolling else cond.FALSE, ro.reason, ro.message))

    try:
        live = await _apply_all(
            kube, bg.children(body, partition=ro.partition, replica_count=scale.replicas), out.events
        )
    except OwnershipConflict as e:
        problems.append((cond.REASON_CONFLICT, str(e)))
        out.events.append(Event("Warning", cond.REASON_CONFLICT, str(e)))
        live = {"StatefulSet": sts} if sts else {}

    if new_size and sts:
        for i in range(int(sts["spec"]["replicas"])):
            pvc = await kube.get(PVCS, ns, bg.pvc_name(name, i))
            if pvc is not None:
                await kube.patch(
                    PVCS, ns, bg.pvc_name(name, i), {"spec": {"resources": {"requests": {"storage": new_size}}}}
                )
        out.events.append(Event("Normal", "VolumesExpanding", f"requested {new_size} for every broker volume"))

    sts_live = live.get("StatefulSet")
    updates.append(group_ready_condition(body, sts_live))
    if problems:
        reason, message = problems[0]
        updates.append(cond.Condition("Reconciled", cond.FALSE, reason, "; ".join(m for _, m in problems)))
    else:
        updates.append(cond.Condition("Reconciled", cond.TRUE, "ReconcileSucceeded", "children match the spec"))
    out.status = _finish(body, group_status(body, sts_live, pods, lag_limit), updates)
    return out


# --- Topic ------------------------------------------------------------------------------------------


async def _apply_topic_to_group(
    group: Mapping[str, Any], cfg: TopicConfig, shrink_ok: bool, ctx: OperatorContext
) -> tuple[dict[str, Any], Event | None]:
    entry: dict[str, Any] = {
        "brokerGroup": meta(group)["name"],
        "brokerName": bg.broker_name(group),
    }
    url = ctx.resolver.admin_url(group, 0)
    if url is None or ctx.admin is None:
        entry.update(state="Unavailable", message="master has no address yet")
        return entry, None
    try:
        actual = pl.broker_topic(await ctx.admin.get_topic(url, cfg.topic_name))
        action = pl.plan(cfg, actual, shrink_allowed=shrink_ok)
        event = None
        if action.kind in ("create", "update"):
            actual = pl.broker_topic(await ctx.admin.upsert_topic(url, cfg))
            reason = "TopicCreated" if action.kind == "create" else "TopicUpdated"
            event = Event("Normal", reason, f"{action.message} on {entry['brokerName']}")
        elif action.kind == "refuse":
            event = Event("Warning", "QueueShrinkRefused", f"{entry['brokerName']}: {action.message}")
    except BrokerUnavailable as e:
        entry.update(state="Unavailable", message=f"master unreachable: {e}")
        return entry, Event("Warning", cond.REASON_BROKER_UNAVAILABLE, f"{entry['brokerName']}: {e}")
    except BrokerRejected as e:
        entry.update(state="Rejected", message=str(e))
        return entry, Event("Warning", "TopicRejected", f"{entry['brokerName']}: {e}")
    held = actual or cfg
    entry.update(
        readQueues=held.read_queue_nums,
        writeQueues=held.write_queue_nums,
        perm=held.perm,
        state="Refused" if action.kind == "refuse" else "Applied",
    )
    if action.kind == "refuse":
        entry["message"] = action.message
    return entry, event


async def reconcile_topic(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    kube = _kube(ctx)
    ns = meta(body)["namespace"]
    out = Outcome()
    status: dict[str, Any] = {"topicName": pl.topic_name(body)}
    try:
        cfg = pl.desired_config(body)
    except pl.TopicSpecError as e:
        out.events.append(Event("Warning", e.reason, str(e)))
        if e.reason == cond.REASON_NOT_SUPPORTED:
            status["topicName"] = (body.get("status") or {}).get("topicName")
        out.status = _finish(body, status, [cond.Condition(cond.READY, cond.FALSE, e.reason, str(e))])
        return out

    conflict = pl.find_conflict(body, await kube.list(TOPICS, ns))
    if conflict is not None:
        msg = f"topic {cfg.topic_name!r} is already managed by Topic {ns}/{meta(conflict)['name']}; delete one of them"
        out.events.append(Event("Warning", cond.REASON_CONFLICT, msg))
        out.status = _finish(body, status, [cond.Condition(cond.READY, cond.FALSE, cond.REASON_CONFLICT, msg)])
        return out

    groups = pl.select_groups(body, await kube.list(BROKERGROUPS, ns))
    if not groups:
        msg = (
            "no BrokerGroup in this namespace matches spec.placement; create one or fix "
            "placement.clusterName / placement.brokerGroupSelector"
        )
        status["placement"] = []
        out.status = _finish(body, status, [cond.Condition(cond.READY, cond.FALSE, cond.REASON_NO_BROKER_GROUPS, msg)])
        out.retry_after, out.retry_message = ctx.backoff(retry), msg
        return out

    shrink_ok = pl.allow_shrink(body)
    results = await asyncio.gather(*(_apply_topic_to_group(g, cfg, shrink_ok, ctx) for g in groups))
    placement = [entry for entry, _ in results]
    out.events.extend(ev for _, ev in results if ev is not None)
    status["placement"] = placement
    status["queues"] = sum(int(p.get("writeQueues", 0)) for p in placement)

    states = {p["state"] for p in placement}
    if states == {"Applied"}:
        ready = cond.Condition(
            cond.READY, cond.TRUE, cond.REASON_IN_SYNC, f"{cfg.topic_name} in sync on {len(placement)} broker group(s)"
        )
    elif "Unavailable" in states:
        down = [p["brokerName"] for p in placement if p["state"] == "Unavailable"]
        ready = cond.Condition(
            cond.READY,
            cond.FALSE,
            cond.REASON_BROKER_UNAVAILABLE,
            f"cannot reach the master of {', '.join(down)}; will retry. Check the BrokerGroup's Ready condition",
        )
        out.retry_after, out.retry_message = ctx.backoff(retry), ready.message
    elif "Refused" in states:
        msgs = [p["message"] for p in placement if p["state"] == "Refused"]
        ready = cond.Condition(cond.READY, cond.FALSE, cond.REASON_NOT_SUPPORTED, msgs[0])
    else:
        msgs = [p.get("message", "") for p in placement if p["state"] == "Rejected"]
        ready = cond.Condition(cond.READY, cond.FALSE, "BrokerRejected", "; ".join(msgs))
    out.status = _finish(body, status, [ready])
    return out


async def delete_topic(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    """Finalizer: delete the topic from every broker holding it, unless Retain or another Topic owns it."""
    kube = _kube(ctx)
    ns = meta(body)["namespace"]
    out = Outcome()
    name = (body.get("status") or {}).get("topicName") or pl.topic_name(body)
    if spec_of(body).get("deletionPolicy", "Delete") == "Retain":
        out.events.append(Event("Normal", "TopicRetained", f"deletionPolicy Retain: topic {name} kept on the brokers"))
        return out
    others = [
        t
        for t in await kube.list(TOPICS, ns)
        if meta(t)["name"] != meta(body)["name"] and not meta(t).get("deletionTimestamp") and pl.topic_name(t) == name
    ]
    if others:
        out.events.append(
            Event("Normal", "TopicRetained", f"topic {name} is still managed by Topic {meta(others[0])['name']}")
        )
        return out
    all_groups = await kube.list(BROKERGROUPS, ns)
    placed = {p.get("brokerGroup") for p in (body.get("status") or {}).get("placement") or []}
    groups = {meta(g)["name"]: g for g in pl.select_groups(body, all_groups)}
    groups.update({meta(g)["name"]: g for g in all_groups if meta(g)["name"] in placed})
    failed = []
    for gname, group in sorted(groups.items()):
        url = ctx.resolver.admin_url(group, 0)
        if url is None or ctx.admin is None:
            failed.append(f"{gname}: no address")
            continue
        try:
            if await ctx.admin.delete_topic(url, name):
                out.events.append(Event("Normal", "TopicDeleted", f"deleted topic {name} from {bg.broker_name(group)}"))
        except (BrokerUnavailable, BrokerRejected) as e:
            failed.append(f"{gname}: {e}")
    if failed:
        msg = f"cannot delete topic {name} yet ({'; '.join(failed)}); retrying. Set deletionPolicy: Retain to skip"
        out.events.append(Event("Warning", "TopicDeleteFailed", msg))
        out.status = _finish(body, {}, [cond.Condition(cond.READY, cond.FALSE, cond.REASON_BROKER_UNAVAILABLE, msg)])
        out.retry_after, out.retry_message = ctx.backoff(retry), msg
    return out
