"""Topic reconciler and finalizer: bring the master of every selected BrokerGroup in line with the spec, and
take the topic off the groups that left the placement without losing unconsumed messages.

Validation, selection and the per-broker action live in `placement`, the drain decisions in `drain`, the
status in `status_topic`; this module calls the brokers and relays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from krocket.common.codes import PERM_READ
from krocket.common.topic import TopicConfig
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator import drain
from krocket.operator import placement as pl
from krocket.operator import status_topic as topic_status
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta, spec_of
from krocket.operator.context import OperatorContext
from krocket.operator.kube import BROKERGROUPS, TOPICS
from krocket.operator.outcome import Event, Outcome

Entry = dict[str, Any]


async def _removed_queue_lag(
    url: str, cfg: TopicConfig, answer: Mapping[str, Any] | None, ctx: OperatorContext
) -> dict[str, int] | None:
    """Unconsumed messages per group in the queues a readQueues cut would remove; None when unknown."""
    queues = (answer or {}).get("queues")
    if not isinstance(queues, list) or ctx.admin is None:
        return None
    lag_rows = await ctx.admin.consumer_lag(url)
    groups = next((r.get("groups") or {} for r in lag_rows if r.get("topic") == cfg.topic_name), {})
    group_rows: dict[str, list[Mapping[str, Any]]] = {}
    for group in sorted(groups):
        offsets = await ctx.admin.group_offsets(url, group) or {}
        group_rows[group] = [r for r in offsets.get("offsets") or [] if r.get("topic") == cfg.topic_name]
    return drain.removed_queue_lag(cfg.read_queue_nums, queues, group_rows)


async def _apply_topic_to_group(
    group: Mapping[str, Any], cfg: TopicConfig, shrink_ok: bool, ctx: OperatorContext
) -> tuple[Entry, Event | None]:
    """The group's placement entry, and the event to emit (None when nothing happened)."""
    broker = bg.broker_name(group)
    url = ctx.resolver.admin_url(group, 0)
    if url is None or ctx.admin is None:
        return topic_status.unavailable_entry(group, "master has no address yet"), None
    try:
        answer = await ctx.admin.get_topic(url, cfg.topic_name)
        actual = pl.broker_topic(answer)
        removed = None
        if pl.reads_cut(cfg, actual) and not shrink_ok:
            removed = await _removed_queue_lag(url, cfg, answer, ctx)
        action = pl.plan(cfg, actual, shrink_allowed=shrink_ok, removed_lag=removed)
        if action.apply is not None:
            actual = pl.broker_topic(await ctx.admin.upsert_topic(url, action.apply))
        event = None
        if action.kind in ("create", "update"):
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


async def _leave_group(
    group: Mapping[str, Any],
    cfg: TopicConfig,
    topic: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    ctx: OperatorContext,
) -> tuple[Entry | None, Event | None]:
    """A group outside the placement: None when it does not hold the topic (any more); else its entry.

    Without unconsumed messages the topic is deleted there. With them it is kept (writable) and reported,
    unless the Topic asks for a drain: then it is made read-only there until its consumers catch up or the
    deadline passes, and deleted after that.
    """
    broker = bg.broker_name(group)
    url = ctx.resolver.admin_url(group, 0)
    was_placed = previous is not None
    if url is None or ctx.admin is None:
        entry = topic_status.unavailable_entry(group, "left the placement; master has no address")
        return (entry if was_placed else None), None
    try:
        held = pl.broker_topic(await ctx.admin.get_topic(url, cfg.topic_name))
        if held is None:
            return None, None
        row = next((r for r in await ctx.admin.consumer_lag(url) if r.get("topic") == cfg.topic_name), None)
        backlog = drain.topic_backlog(row) if row is not None else None
        lag = dict(backlog.lag) if backlog is not None else {}
        prev_state = (previous or {}).get("state")
        started = (
            drain.parse_time((previous or {}).get("drainStartedAt")) if prev_state == topic_status.DRAINING else None
        )
        deadline_s, _ = drain.deadline_seconds(topic, ctx.config.drain_deadline)
        now = datetime.datetime.now(datetime.UTC)
        decision = drain.decide_leave(
            broker=broker,
            lag=lag,
            requested=drain.drain_requested(topic),
            started_at=started,
            deadline_s=deadline_s,
            now=now,
        )
        total = sum(lag.values())
        if decision.kind == "delete":
            await ctx.admin.delete_topic(url, cfg.topic_name)
            if decision.abandon:
                return None, Event("Warning", "DrainDeadlinePassed", decision.message)
            return None, Event("Normal", "TopicRemovedFromGroup", f"deleted topic {cfg.topic_name}: {decision.message}")
        if decision.kind == "refuse":
            if prev_state == topic_status.DRAINING and held.perm == PERM_READ and cfg.perm != PERM_READ:
                restored = dataclasses.replace(held, perm=cfg.perm)  # its queues and attributes as they are
                held = pl.broker_topic(await ctx.admin.upsert_topic(url, restored)) or restored
            entry = topic_status.leaving_entry(group, held, topic_status.LEAVING, decision.message, total, None)
            event = Event("Warning", "DrainRequired", decision.message) if prev_state != topic_status.LEAVING else None
            return entry, event
        if held.perm != PERM_READ:
            read_only = dataclasses.replace(held, perm=PERM_READ)
            held = pl.broker_topic(await ctx.admin.upsert_topic(url, read_only)) or read_only
        entry = topic_status.leaving_entry(
            group, held, topic_status.DRAINING, decision.message, total, drain.iso(started or now)
        )
        event = Event("Normal", "TopicDraining", decision.message) if prev_state != topic_status.DRAINING else None
        return entry, event
    except (BrokerUnavailable, BrokerRejected) as e:
        entry = topic_status.unavailable_entry(group, f"left the placement; cannot remove the topic there: {e}")
        return (entry if was_placed else None), None


def _retry_for_leaving(leaving: list[Entry], ctx: OperatorContext, retry: int) -> float | None:
    states = {p["state"] for p in leaving}
    if topic_status.DRAINING in states:
        return min(ctx.config.status_interval, ctx.backoff(retry))
    if states:
        return ctx.backoff(retry)
    return None


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

    all_groups = await kube.list(BROKERGROUPS, ns)
    groups = pl.select_groups(body, all_groups)
    chosen = {meta(g)["name"] for g in groups}
    previous = {p.get("brokerGroup"): p for p in (body.get("status") or {}).get("placement") or []}
    others = [g for g in all_groups if meta(g)["name"] not in chosen]
    left = await asyncio.gather(*(_leave_group(g, cfg, body, previous.get(meta(g)["name"]), ctx) for g in others))
    leaving = [entry for entry, _ in left if entry is not None]
    out.events.extend(ev for _, ev in left if ev is not None)

    shrink_ok = pl.allow_shrink(body)
    results = await asyncio.gather(*(_apply_topic_to_group(g, cfg, shrink_ok, ctx) for g in groups))
    selected = [entry for entry, _ in results]
    out.events.extend(ev for _, ev in results if ev is not None)
    status["placement"] = selected + leaving
    status["queues"] = topic_status.total_queues(selected + leaving)
    draining_groups = [bg.broker_name(g) for g in groups if drain.drain_requested(g)]
    degraded = topic_status.degraded_condition(cfg, selected, leaving, draining_groups)
    required = topic_status.drain_required_condition(leaving)

    if not groups:
        ready = topic_status.no_groups_condition()
        out.retry_after, out.retry_message = ctx.backoff(retry), ready.message
    else:
        ready = topic_status.ready_condition(cfg.topic_name, selected)
        if ready.reason == cond.REASON_BROKER_UNAVAILABLE:
            out.retry_after, out.retry_message = ctx.backoff(retry), ready.message
    leave_retry = _retry_for_leaving(leaving, ctx, retry)
    if leave_retry is not None and (out.retry_after is None or leave_retry < out.retry_after):
        out.retry_after, out.retry_message = leave_retry, degraded.message
    out.status = cond.status_with_conditions(body, status, [ready, degraded, required])
    return out


async def delete_topic(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    """Finalizer: delete the topic from every broker holding it (selected groups, the groups of the last
    placement, and any other group of the namespace whose master lists it), unless Retain or another Topic
    owns it. A group that cannot be reached blocks the deletion only if the topic was placed there."""
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
    must = placed | {meta(g)["name"] for g in pl.select_groups(body, all_groups)}
    failed = []
    for group in sorted(all_groups, key=lambda g: str(meta(g)["name"])):
        gname = meta(group)["name"]
        url = ctx.resolver.admin_url(group, 0)
        if url is None or ctx.admin is None:
            if gname in must:
                failed.append(f"{gname}: no address")
            continue
        try:
            if await ctx.admin.delete_topic(url, name):
                out.events.append(Event("Normal", "TopicDeleted", f"deleted topic {name} from {bg.broker_name(group)}"))
        except (BrokerUnavailable, BrokerRejected) as e:
            if gname in must:
                failed.append(f"{gname}: {e}")
    if failed:
        msg = f"cannot delete topic {name} yet ({'; '.join(failed)}); retrying. Set deletionPolicy: Retain to skip"
        out.events.append(Event("Warning", "TopicDeleteFailed", msg))
        unavailable = cond.Condition(cond.READY, cond.FALSE, cond.REASON_BROKER_UNAVAILABLE, msg)
        out.status = cond.status_with_conditions(body, {}, [unavailable])
        out.retry_after, out.retry_message = ctx.backoff(retry), msg
    return out
