"""BrokerGroup drain and deletion: ask the master what it holds, withdraw or restore write permission, report.

- Deleting a BrokerGroup (finalizer) is refused while its master holds unconsumed messages (`DrainRequired`),
  and while the master cannot be asked (never assumed empty), unless a drain deadline the user opted into
  has passed. With annotation `krocket.io/drain: "true"` the operator withdraws the broker's write permission
  and waits for consumers (`Draining`), up to the deadline; then it deletes the group's topics from its broker
  and lets the deletion go on (the children go with their ownerReferences).
- The same drain on a live group: write permission withdrawn (again after a restart), progress in
  `status.drain`; removing the annotation restores write permission.

The decisions live in `drain`; this module calls the broker and relays.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from krocket.common.topic import is_system_topic
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator import drain
from krocket.operator.broker_admin import BrokerRejected, BrokerUnavailable
from krocket.operator.build_common import meta
from krocket.operator.context import OperatorConfig, OperatorContext
from krocket.operator.kopf_glue import context_of, relay
from krocket.operator.outcome import Event, Outcome

log = logging.getLogger(__name__)

DRAIN_CONDITIONS = (cond.DRAINING, cond.DRAIN_REQUIRED)


def _previous(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return (body.get("status") or {}).get("drain") or {}


async def _ask_master(
    group: Mapping[str, Any], ctx: OperatorContext, *, withdraw: bool
) -> tuple[str | None, list[drain.TopicBacklog]]:
    """(None, backlog) from the master, or (why it cannot be asked, []). Withdraws write permission first when
    asked to, so nothing new arrives between the answer and the next step."""
    url = ctx.resolver.admin_url(group, 0)
    if url is None or ctx.admin is None:
        return "the master has no address yet", []
    try:
        if withdraw:
            await ctx.admin.set_write_permission(url, False)
        return None, drain.broker_backlog(await ctx.admin.consumer_lag(url))
    except BrokerUnavailable as e:
        return str(e), []
    except BrokerRejected as e:
        return f"the master refused: {e}", []


def _view(
    body: Mapping[str, Any],
    ctx: OperatorContext,
    *,
    deleting: bool,
    problem: str | None,
    backlog: list[drain.TopicBacklog],
) -> tuple[drain.DrainView, str | None]:
    now = datetime.datetime.now(datetime.UTC)
    requested = drain.drain_requested(body)
    opt_in = requested or drain.deadline_annotated(body)
    started = drain.parse_time(_previous(body).get("startedAt")) if opt_in else None
    deadline_s, annotation_problem = drain.deadline_seconds(body, ctx.config.drain_deadline)
    view = drain.DrainView(
        deleting=deleting,
        requested=requested,
        deadline_opt_in=opt_in,
        reachable=problem is None,
        unreachable_reason=problem or "",
        backlog=backlog,
        started_at=started or now,
        deadline_s=deadline_s,
        now=now,
    )
    return view, annotation_problem


def _report(body: Mapping[str, Any], view: drain.DrainView, decision: drain.DrainDecision, out: Outcome) -> None:
    status = drain.drain_status(view, decision)
    if not view.deadline_opt_in:
        status.pop("startedAt")
        status.pop("deadline")
    out.status = cond.status_with_conditions(body, {"drain": status}, decision.conditions)
    event = drain.phase_event(_previous(body).get("phase"), decision)
    if event is not None:
        out.events.append(event)


async def _delete_topics(group: Mapping[str, Any], ctx: OperatorContext, out: Outcome) -> str | None:
    """Delete the group's (user) topics from its master; why not, when it could not."""
    url = ctx.resolver.admin_url(group, 0)
    if url is None or ctx.admin is None:
        return None  # nothing to reach: the deadline let the deletion go on
    try:
        names = sorted(str(t.get("topicName")) for t in await ctx.admin.list_topics(url))
        deleted = [n for n in names if not is_system_topic(n) and await ctx.admin.delete_topic(url, n)]
    except (BrokerUnavailable, BrokerRejected) as e:
        return str(e)
    if deleted:
        shown = ", ".join(deleted[:10]) + (f" and {len(deleted) - 10} more" if len(deleted) > 10 else "")
        out.events.append(Event("Normal", "TopicsDeleted", f"deleted {len(deleted)} topic(s) from the master: {shown}"))
    return None


async def delete_brokergroup(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    """Finalizer: let the deletion go on only once the master holds nothing unconsumed (or a drain gave up)."""
    out = Outcome()
    requested = drain.drain_requested(body)
    problem, backlog = await _ask_master(body, ctx, withdraw=requested)
    view, annotation_problem = _view(body, ctx, deleting=True, problem=problem, backlog=backlog)
    decision = drain.decide(view)
    if annotation_problem:
        out.events.append(Event("Warning", "DrainDeadlineInvalid", annotation_problem))
    if decision.proceed and view.reachable:
        failed = await _delete_topics(body, ctx, out)
        if failed is not None:
            msg = f"drained, but deleting the topics from the master failed: {failed}; retrying"
            blocked = cond.Condition(cond.DRAIN_REQUIRED, cond.TRUE, cond.REASON_MASTER_UNREACHABLE, msg)
            decision = drain.DrainDecision(
                drain.PHASE_UNREACHABLE, False, decision.withdraw_writes, [blocked], msg, True
            )
    _report(body, view, decision, out)
    if not decision.proceed:
        waiting = decision.phase == drain.PHASE_DRAINING
        delay = min(ctx.config.status_interval, ctx.backoff(retry)) if waiting else ctx.backoff(retry)
        out.retry_after, out.retry_message = delay, decision.message
    else:
        log.info("BrokerGroup %s/%s: %s", meta(body).get("namespace"), meta(body).get("name"), decision.message)
    return out


async def reconcile_live_drain(body: Mapping[str, Any], ctx: OperatorContext) -> Outcome:
    """A live group: withdraw write permission and report progress while the drain annotation is set; restore
    write permission once it is removed."""
    out = Outcome()
    if meta(body).get("deletionTimestamp"):
        return out
    previous = _previous(body)
    if drain.drain_requested(body):
        problem, backlog = await _ask_master(body, ctx, withdraw=True)
        view, annotation_problem = _view(body, ctx, deleting=False, problem=problem, backlog=backlog)
        if annotation_problem and not previous:
            out.events.append(Event("Warning", "DrainDeadlineInvalid", annotation_problem))
        _report(body, view, drain.decide(view), out)
        return out
    if not previous:
        return out
    url = ctx.resolver.admin_url(body, 0)
    if url is None or ctx.admin is None:
        return out
    try:
        await ctx.admin.set_write_permission(url, True)
    except (BrokerUnavailable, BrokerRejected) as e:
        msg = f"drain annotation removed, but write permission cannot be restored yet: {e}; retrying"
        out.status = cond.status_with_conditions(
            body, {}, [cond.Condition(cond.DRAINING, cond.UNKNOWN, cond.REASON_MASTER_UNREACHABLE, msg)]
        )
        return out
    msg = "drain annotation removed: write permission restored"
    out.events.append(Event("Normal", "WritesRestored", msg))
    out.status = cond.status_with_conditions(
        body,
        {"drain": None},
        [
            cond.Condition(cond.DRAINING, cond.FALSE, cond.REASON_NOT_DRAINING, msg),
            cond.Condition(cond.DRAIN_REQUIRED, cond.FALSE, cond.REASON_NOT_BLOCKED, ""),
        ],
    )
    return out


# --- kopf glue -------------------------------------------------------------------------------------


def _draining_or_restoring(body: kopf.Body, **_: Any) -> bool:
    return drain.drain_requested(body) or bool((body.get("status") or {}).get("drain"))


def register_drain(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:
    g, v = c.GROUP, c.VERSION

    @kopf.on.resume(g, v, c.BROKERGROUPS, id="brokergroup_drain", registry=registry)
    @kopf.on.create(g, v, c.BROKERGROUPS, id="brokergroup_drain", registry=registry)
    @kopf.on.update(g, v, c.BROKERGROUPS, field="metadata.annotations", id="brokergroup_drain", registry=registry)
    async def brokergroup_drain(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        relay(
            body,
            patch,
            await reconcile_live_drain(body, context_of(memo)),
            raise_retry=False,
            own_conditions=DRAIN_CONDITIONS,
        )

    @kopf.timer(
        g,
        v,
        c.BROKERGROUPS,
        interval=cfg.status_interval,
        initial_delay=cfg.status_interval,
        when=_draining_or_restoring,
        id="brokergroup_drain_progress",
        registry=registry,
    )
    async def brokergroup_drain_progress(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        """Keeps write permission withdrawn (a restarted broker is writable again) and the progress current."""
        relay(
            body,
            patch,
            await reconcile_live_drain(body, context_of(memo)),
            raise_retry=False,
            own_conditions=DRAIN_CONDITIONS,
        )

    @kopf.on.delete(g, v, c.BROKERGROUPS, id="brokergroup_delete", registry=registry)
    async def brokergroup_delete(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        relay(
            body,
            patch,
            await delete_brokergroup(body, context_of(memo), retry),
            raise_retry=True,
            own_conditions=DRAIN_CONDITIONS,
        )
