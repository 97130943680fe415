"""A NameServerSet's status and Ready condition from its observed StatefulSet (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from krocket.operator import build_namesrv as nsrv
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator.build_common import meta, selector_labels
from krocket.operator.status_common import label_selector, statefulset_count


def status(body: Mapping[str, Any], sts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Status fields derived from the spec and the observed StatefulSet (conditions are added elsewhere)."""
    name, ns = meta(body)["name"], meta(body)["namespace"]
    addresses = nsrv.pod_addresses(name, ns, nsrv.replicas(body))
    return {
        "replicas": statefulset_count(sts, "replicas"),
        "readyReplicas": statefulset_count(sts, "readyReplicas"),
        "labelSelector": label_selector(selector_labels(name, nsrv.COMPONENT)),
        "address": nsrv.address(name, ns),
        "serviceAddress": nsrv.service_address(name, ns),
        "addresses": addresses,
        "nsAddr": ";".join(addresses),
    }


def ready_condition(body: Mapping[str, Any], sts: Mapping[str, Any] | None) -> cond.Condition:
    want = nsrv.replicas(body)
    ready = statefulset_count(sts, "readyReplicas")
    if want == 0:
        return cond.Condition(cond.READY, cond.FALSE, cond.REASON_NO_REPLICAS, "replicas is 0")
    if ready >= want:
        return cond.Condition(cond.READY, cond.TRUE, cond.REASON_ALL_READY, f"{ready}/{want} name servers ready")
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_WAITING,
        f"{ready}/{want} name servers ready; check `kubectl describe pods -l "
        f"{c.LABEL_INSTANCE}={meta(body)['name']},{c.LABEL_COMPONENT}={c.COMPONENT_NAMESRV}`",
    )


def reconciled_condition() -> cond.Condition:
    """Every child was applied (failures are reported by `failures.guarded_reconcile` instead)."""
    return cond.Condition(cond.RECONCILED, cond.TRUE, cond.REASON_RECONCILED, "children match the spec")
