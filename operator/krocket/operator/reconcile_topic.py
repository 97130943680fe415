"""Topic reconciler and finalizer: bring the master of every selected BrokerGroup in line with the spec.

Validation, selection and the per-broker action live in `placement`, the status in `status_topic`;
this module calls the brokers and relays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from krocket.common.topic import TopicConfig
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator import placement as pl
from krocket.operator import status_topic as topic_status
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta, spec_of
from krocket.operator.context import OperatorContext
from krocket.operator.kube import BROKERGROUPS, TOPICS
from krocket.operator.outcome import Event, Outcome


async def _apply_topic_to_group(
    group: Mapping[str, Any], cfg: TopicConfig, shrink_ok: bool, ctx: OperatorContext
) -> tuple[dict[str, Any], Event | None]:
    """The group's placement entry, and the event to emit (None when nothing happened)."""
    broker = bg.broker_name(group)
    url = ctx.resolver.admin_url(group, 0)
    if url is None or ctx.admin is None:
        return topic_status.unavailable_entry(group, "master has no address yet"), None
    try:
        actual = pl.broker_topic(await ctx.admin.get_topic(url, cfg.topic_name))
        action = pl.plan(cfg, actual, shrink_allowed=shrink_ok)
        event = None
        if action.kind in ("create", "update"):
            actual = pl.broker_topic(await ctx.admin.upsert_topic(url, cfg))
            reason = "TopicCreated" if action.kind == "create" else "TopicUpdated"
            event = Event("Normal", reason, f"{action.message} on {broker}")
        elif action.kind == "refuse":
            event = Event("Warning", "QueueShrinkRefused", f"{broker}: {action.message}")
    except BrokerUnavailable as e:
        entry = topic_status.unavailable_entry(group, f"master unreachable: {e}")
        return entry, Event("Warning", cond.REASON_BROKER_UNAVAILABLE, f"{broker}: {e}")
    except BrokerRejected as e:
        return topic_status.rejected_entry(group, str(e)), Event("Warning", "TopicRejected", f"{broker}: {e}")
    return topic_status.held_entry(group, actual or cfg, action), event


async def reconcile_topic(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    kube = ctx.started_kube()
    ns = meta(body)["namespace"]
    out = Outcome()
    status: dict[str, Any] = {"topicName": pl.topic_name(body)}
    try:
        cfg = pl.desired_config(body)
    except pl.TopicSpecError as e:
        out.events.append(Event("Warning", e.reason, str(e)))
        if e.reason == cond.REASON_NOT_SUPPORTED:
            status["topicName"] = (body.get("status") or {}).get("topicName")
        out.status = cond.status_with_conditions(
            body, status, [cond.Condition(cond.READY, cond.FALSE, e.reason, str(e))]
        )
        return out

    conflict = pl.find_conflict(body, await kube.list(TOPICS, ns))
    if conflict is not None:
        ready = topic_status.conflict_condition(cfg.topic_name, ns, conflict)
        out.events.append(Event("Warning", cond.REASON_CONFLICT, ready.message))
        out.status = cond.status_with_conditions(body, status, [ready])
        return out

    groups = pl.select_groups(body, await kube.list(BROKERGROUPS, ns))
    if not groups:
        ready = topic_status.no_groups_condition()
        status["placement"] = []
        out.status = cond.status_with_conditions(body, status, [ready])
        out.retry_after, out.retry_message = ctx.backoff(retry), ready.message
        return out

    shrink_ok = pl.allow_shrink(body)
    results = await asyncio.gather(*(_apply_topic_to_group(g, cfg, shrink_ok, ctx) for g in groups))
    placement = [entry for entry, _ in results]
    out.events.extend(ev for _, ev in results if ev is not None)
    status["placement"] = placement
    status["queues"] = topic_status.total_queues(placement)
    ready = topic_status.ready_condition(cfg.topic_name, placement)
    if ready.reason == cond.REASON_BROKER_UNAVAILABLE:
        out.retry_after, out.retry_message = ctx.backoff(retry), ready.message
    out.status = cond.status_with_conditions(body, status, [ready])
    return out


async def delete_topic(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    """Finalizer: delete the topic from every broker holding it, unless Retain or another Topic owns it."""
    kube = ctx.started_kube()
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
        unavailable = cond.Condition(cond.READY, cond.FALSE, cond.REASON_BROKER_UNAVAILABLE, msg)
        out.status = cond.status_with_conditions(body, {}, [unavailable])
        out.retry_after, out.retry_message = ctx.backoff(retry), msg
    return out
