"""Every failure of a reconcile ends up in the resource's status and events, not only in the operator's log.

`guarded_reconcile` wraps any reconciler (NameServerSet, BrokerGroup, Topic, ...):

- names the children could not have are refused before anything is created (`names`), and a BrokerGroup may not
  register with another namespace's name servers unless they allow it (`references`): condition and event, no
  children touched, nothing half-made;
- an error answer of the API server (422 Invalid, 403 Forbidden, 409 Conflict, ...) while reading or applying
  children becomes `Reconciled=False` with the server's reason and a message naming the child and the server's
  message, a Warning event, and a retry with the usual backoff;
- once a reconcile goes through again, a `Reconciled=False` this module set is turned back to True.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator import references
from krocket.operator.apply import ChildApplyError
from krocket.operator.build_common import meta
from krocket.operator.context import OperatorContext
from krocket.operator.kube import ApiError
from krocket.operator.names import name_problems
from krocket.operator.outcome import Event, Outcome

REASON_INVALID_NAME = "InvalidName"

API_REASONS = frozenset(
    {
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
        "ApiError",
    }
)
"""metav1.StatusReason values: the reasons an API error gives the Reconciled condition."""

GUARD_REASONS = API_REASONS | {REASON_INVALID_NAME, references.REASON_NOT_PERMITTED}
"""Reasons only this module sets, so it knows which Reconciled=False it may clear."""

_HTTP_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}
_HTTP_REASONS |= {410: "Gone", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


def condition_reason(error: ApiError) -> str:
    """The API server's reason as a condition reason (CamelCase, one of metav1.StatusReason)."""
    camel = re.sub(r"[^A-Za-z0-9]", "", str(error.reason or ""))
    if camel in API_REASONS:
        return camel
    return _HTTP_REASONS.get(error.status, "InternalError" if error.status >= 500 else "ApiError")


def describe(error: ApiError | ChildApplyError) -> tuple[str, str]:
    """(reason, message) for the condition and event of a failed API call."""
    if isinstance(error, ChildApplyError):
        api = error.error
        what = f"cannot {error.verb} {error.kind} {error.namespace}/{error.name}"
    else:
        api, what = error, "an API request failed"
    message = api.api_message.strip() or str(api)
    return condition_reason(api), f"{what}: {message}"[:1000]


def refused(body: Mapping[str, Any], reason: str, message: str) -> Outcome:
    """Ready and Reconciled False with `reason`, and a Warning event when that is news; no children were touched."""
    before = cond.find((body.get("status") or {}).get("conditions"), cond.RECONCILED) or {}
    repeated = before.get("status") == cond.FALSE and (before.get("reason"), before.get("message")) == (reason, message)
    out = Outcome(events=[] if repeated else [Event("Warning", reason, message)])
    updates = [
        cond.Condition(cond.READY, cond.FALSE, reason, message),
        cond.Condition(cond.RECONCILED, cond.FALSE, reason, message),
    ]
    out.status = cond.status_with_conditions(body, {}, updates)
    return out


def api_failure(body: Mapping[str, Any], error: ApiError | ChildApplyError, retry_after: float) -> Outcome:
    """Reconciled False with the API server's reason (Ready too, unless the resource is Ready now: what runs keeps
    running), a Warning event, and a retry after `retry_after` seconds."""
    reason, message = describe(error)
    updates = [cond.Condition(cond.RECONCILED, cond.FALSE, reason, message)]
    if not cond.is_true((body.get("status") or {}).get("conditions"), cond.READY):
        updates.append(cond.Condition(cond.READY, cond.FALSE, reason, message))
    out = Outcome(events=[Event("Warning", reason, message)], retry_after=retry_after, retry_message=message)
    out.status = cond.status_with_conditions(body, {}, updates)
    return out


def clear_stale_failure(body: Mapping[str, Any], outcome: Outcome) -> Outcome:
    """After a reconcile that went through: a Reconciled=False this module set and the reconciler left as it was
    becomes True."""
    before = cond.find((body.get("status") or {}).get("conditions"), cond.RECONCILED)
    if before is None or before.get("status") != cond.FALSE or before.get("reason") not in GUARD_REASONS:
        return outcome
    conditions = outcome.status.get("conditions")
    if conditions is None:
        conditions = [dict(x) for x in (body.get("status") or {}).get("conditions") or []]
    after = cond.find(conditions, cond.RECONCILED)
    if after is not None and dict(after) != dict(before):
        return outcome  # the reconciler reported Reconciled itself
    others = [x for x in conditions if x.get("type") != cond.RECONCILED]
    fixed = cond.Condition(cond.RECONCILED, cond.TRUE, cond.REASON_RECONCILED, "children match the spec")
    outcome.status["conditions"] = cond.merge_conditions(
        [*others, dict(before)], [fixed], now=cond.now_iso(), observed_generation=meta(body).get("generation")
    )
    return outcome


async def guarded_reconcile(
    body: Mapping[str, Any],
    ctx: OperatorContext,
    reconcile: Callable[[], Awaitable[Outcome]],
    retry: int = 0,
    *,
    check_names: bool = True,
) -> Outcome:
    """Run `reconcile` for `body` unless its names or references are refused; turn API errors into status."""
    problems = name_problems(body) if check_names else []
    if problems:
        return refused(body, REASON_INVALID_NAME, "; ".join(problems))
    try:
        if check_names and body.get("kind") == c.KIND_BROKERGROUP:
            why = await references.check_reference(body, ctx.started_kube())
            if why is not None:
                return refused(body, references.REASON_NOT_PERMITTED, why)
        outcome = await reconcile()
    except (ApiError, ChildApplyError) as e:
        return api_failure(body, e, ctx.backoff(retry))
    return clear_stale_failure(body, outcome)


Reconciler = TypeVar("Reconciler", bound=Callable[..., Awaitable[Outcome]])


def reporting_failures(fn: Reconciler, *, passes_retry: bool = False, check_names: bool = True) -> Reconciler:
    """`fn(body, ctx[, retry])` under `guarded_reconcile`, with the same signature; `passes_retry` when `fn` takes
    the retry count (then failures back off exponentially, else after the base delay); `check_names=False` for
    finalizers (a refused name must not block a delete)."""

    @functools.wraps(fn)
    async def wrapper(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
        async def run() -> Outcome:
            return await (fn(body, ctx, retry) if passes_retry else fn(body, ctx))

        return await guarded_reconcile(body, ctx, run, retry, check_names=check_names)

    return cast(Reconciler, wrapper)
