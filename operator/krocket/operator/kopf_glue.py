"""What every kopf handler shares: the run's context from kopf's memo, relaying a reconcile's `Outcome` (status,
events, retry) and the level-based registration of a reconciler (create, update, resume and a resync timer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, cast

import kopf

from krocket.operator import constants as c
from krocket.operator.apply import merge_patch_changes
from krocket.operator.context import OperatorContext
from krocket.operator.outcome import Outcome


def context_of(memo: Any) -> OperatorContext:
    ctx = memo["ctx"] if isinstance(memo, Mapping) else memo.ctx
    if not isinstance(ctx, OperatorContext):
        raise RuntimeError("kopf memo carries no OperatorContext; start the operator through krocket.operator.main")
    return ctx


def emit(obj: Mapping[str, Any], outcome: Outcome) -> None:
    for ev in outcome.events:
        kopf.event(kopf.Body(cast(kopf.RawBody, dict(obj))), type=ev.type, reason=ev.reason, message=ev.message[:1000])


def relay(
    body: Mapping[str, Any],
    patch: kopf.Patch,
    outcome: Outcome,
    *,
    raise_retry: bool = True,
    own_conditions: Collection[str] | None = None,
) -> None:
    """Put the outcome's status into kopf's patch (a field already so is not written again), emit its events and
    raise kopf's retry. With `own_conditions`, only those condition types are laid over the conditions another
    handler of the same cycle already put into the patch, so neither overwrites the other's."""
    current = body.get("status") or {}
    for key, value in outcome.status.items():
        if own_conditions is not None and key == "conditions" and isinstance(patch.status.get("conditions"), list):
            ours = [x for x in value if x.get("type") in own_conditions]
            theirs = [x for x in patch.status["conditions"] if x.get("type") not in own_conditions]
            patch.status[key] = theirs + ours
        elif merge_patch_changes(current.get(key), value):
            patch.status[key] = value
    emit(body, outcome)
    if outcome.retry_after is not None and raise_retry:
        raise kopf.TemporaryError(outcome.retry_message, delay=outcome.retry_after)


Reconcile = Callable[..., Awaitable[Outcome]]
"""`(body, ctx, retry)`: the retry count of kopf's attempt (0 on a timer) sets the backoff."""


def register_reconciler(
    registry: kopf.OperatorRegistry,
    plural: str,
    handler_id: str,
    reconcile: Reconcile,
    resync_interval: float,
    timer_id: str | None = None,
) -> None:
    """One reconcile for create, update and resume (retried by kopf on failure), and the same on a timer every
    `resync_interval` seconds (level-based repair; a failure waits for the next tick)."""
    g, v = c.GROUP, c.VERSION

    @kopf.on.resume(g, v, plural, id=handler_id, registry=registry)
    @kopf.on.create(g, v, plural, id=handler_id, registry=registry)
    @kopf.on.update(g, v, plural, id=handler_id, registry=registry)
    async def on_change(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        relay(body, patch, await reconcile(body, context_of(memo), retry))

    @kopf.timer(
        g,
        v,
        plural,
        interval=resync_interval,
        initial_delay=resync_interval,
        id=timer_id or f"{handler_id}_resync",
        registry=registry,
    )
    async def on_timer(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        relay(body, patch, await reconcile(body, context_of(memo), 0), raise_retry=False)
