"""NameServerSet reconciler: apply the builders' children, then report what the StatefulSet shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from krocket.operator import build_namesrv as nsrv
from krocket.operator import conditions as cond
from krocket.operator import status_nameserverset as nss_status
from krocket.operator.apply import OwnershipConflict, apply_children
from krocket.operator.context import OperatorContext
from krocket.operator.outcome import Event, Outcome
from krocket.operator.reconcile_security import secure_nameserverset


async def reconcile_nameserverset(body: Mapping[str, Any], ctx: OperatorContext, retry: int = 0) -> Outcome:
    """`retry`: kopf's retry count, for the backoff of `failures.reporting_failures` (unused here)."""
    kube = ctx.started_kube()
    out = Outcome()
    security = await secure_nameserverset(body, ctx)  # NetworkPolicy, ACL and TLS (reconcile_security)
    out.events.extend(security.events)
    try:
        live = await apply_children(kube, [*nsrv.children(body), *security.children], out.events)
    except OwnershipConflict as e:
        out.events.append(Event("Warning", cond.REASON_CONFLICT, str(e)))
        conflict = [
            cond.Condition(cond.READY, cond.FALSE, cond.REASON_CONFLICT, str(e)),
            cond.Condition(cond.RECONCILED, cond.FALSE, cond.REASON_CONFLICT, str(e)),
        ]
        out.status = cond.status_with_conditions(body, {}, conflict)
        return out
    sts = live.get("StatefulSet")
    out.status = cond.status_with_conditions(
        body,
        nss_status.status(body, sts),
        [nss_status.ready_condition(body, sts), nss_status.reconciled_condition(), security.condition()],
    )
    return out
