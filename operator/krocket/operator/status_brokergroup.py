"""A BrokerGroup's status and conditions from what the reconciler observed (pure).

The reconciler gathers the StatefulSet, the Pods and each broker's admin API answer; everything shown
to the user (master and slaves, replication lag, Ready, ScaleBlocked, RollingUpdate, Reconciled) is
computed here from that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from krocket.common import ports
from krocket.operator import build_brokergroup as bg
from krocket.operator import conditions as cond
from krocket.operator.build_common import meta, selector_labels
from krocket.operator.rollout import writable_of
from krocket.operator.status_common import label_selector, statefulset_count

REVISION_LABEL = "controller-revision-hash"  # set on each Pod by the StatefulSet controller


@dataclass
class PodView:
    """One pod of the group as observed: Kubernetes readiness and the broker's own answer (None: none)."""

    ordinal: int
    pod: str
    address: str
    ready: bool
    info: dict[str, Any] | None
    revision: str | None = None  # the Pod's controller-revision-hash label
    terminating: bool = False


def pod_ready(pod: Mapping[str, Any] | None) -> bool:
    """The Pod's Ready condition."""
    for cnd in ((pod or {}).get("status") or {}).get("conditions") or []:
        if cnd.get("type") == "Ready":
            return cnd.get("status") == "True"
    return False


def pod_view(
    body: Mapping[str, Any], ordinal: int, pod: Mapping[str, Any] | None, info: dict[str, Any] | None
) -> PodView:
    """A pod is ready when its Pod says so; with no Pod seen, when its broker says it is registered."""
    name, ns = meta(body)["name"], meta(body)["namespace"]
    ready = pod_ready(pod) if pod is not None else bool(info and info.get("registered"))
    address = f"{bg.pod_host(name, ns, ordinal)}:{ports.BROKER_PORT}"
    pod_meta = (pod or {}).get("metadata") or {}
    revision = (pod_meta.get("labels") or {}).get(REVISION_LABEL)
    return PodView(
        ordinal,
        bg.pod_name(name, ordinal),
        address,
        ready,
        info,
        revision=str(revision) if revision else None,
        terminating=bool(pod_meta.get("deletionTimestamp")),
    )


def current_image(sts: Mapping[str, Any] | None) -> str | None:
    """The broker container's image in the StatefulSet's pod template."""
    for ctr in ((((sts or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
        if ctr.get("name") == "broker":
            return ctr.get("image")
    return None


def status(
    body: Mapping[str, Any], sts: Mapping[str, Any] | None, pods: Sequence[PodView], lag_limit: int
) -> dict[str, Any]:
    """Status fields (conditions are added elsewhere); a slave is in sync when it lags at most `lag_limit` bytes."""
    name = meta(body)["name"]
    master_offset = None
    master: dict[str, Any] = {"pod": bg.pod_name(name, 0), "ready": False}
    slaves: list[dict[str, Any]] = []
    for p in pods:
        entry: dict[str, Any] = {"pod": p.pod, "brokerId": p.ordinal, "address": p.address, "ready": p.ready}
        if p.info is not None:
            entry["registered"] = bool(p.info.get("registered"))
        if p.ordinal == 0:
            writable = writable_of(p.info)
            if writable is not None:
                entry["writable"] = writable
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
    replicas = statefulset_count(sts, "replicas")
    out: dict[str, Any] = {
        "brokerName": bg.broker_name(body),
        "clusterName": bg.cluster_name(body),
        "nameServerAddress": bg.namesrv_address(body),
        "replicas": replicas,
        "readyReplicas": statefulset_count(sts, "readyReplicas"),
        "slaveReplicas": max(replicas - 1, 0),
        "labelSelector": label_selector(selector_labels(name, bg.COMPONENT)),
        "master": master,
        "slaves": slaves,
        "registered": bool(master.get("registered", False)),
        "grpcEndpoint": bg.grpc_endpoint(body),  # None (gRPC off) removes it from the status (a merge patch)
    }
    image = current_image(sts)
    if image:
        out["currentImage"] = image
    if max_lag is not None:
        out["replicationLagBytes"] = max_lag
    return out


def has_slave_in_sync(status: Mapping[str, Any]) -> bool:
    """A ready slave within the lag limit: the master may restart (its clients fail over to that slave)."""
    return any(s.get("inSync") and s.get("ready") for s in status["slaves"])


def ready_condition(body: Mapping[str, Any], sts: Mapping[str, Any] | None) -> cond.Condition:
    want = bg.replicas(body)
    ready = statefulset_count(sts, "readyReplicas")
    if ready >= want:
        return cond.Condition(cond.READY, cond.TRUE, cond.REASON_ALL_READY, f"master and {want - 1} slave(s) ready")
    return cond.Condition(
        cond.READY,
        cond.FALSE,
        cond.REASON_WAITING,
        f"{ready}/{want} broker pods ready; see `kubectl describe pod {bg.pod_name(meta(body)['name'], 0)}` "
        "and the broker logs",
    )


def scale_condition(decision: bg.ScaleDecision) -> cond.Condition:
    if decision.blocked:
        return cond.Condition(cond.SCALE_BLOCKED, cond.TRUE, cond.REASON_SCALE_BLOCKED, decision.message)
    return cond.Condition(cond.SCALE_BLOCKED, cond.FALSE, cond.REASON_NOT_BLOCKED, decision.message)


def paused_condition(paused: bool) -> cond.Condition:
    if paused:
        return cond.Condition(
            cond.PAUSED,
            cond.TRUE,
            cond.REASON_PAUSED,
            'krocket.io/paused is "true": the operator changes no child object; status is still updated',
        )
    return cond.Condition(cond.PAUSED, cond.FALSE, cond.REASON_NOT_PAUSED, "")


def rollout_condition(rollout: bg.Rollout) -> cond.Condition:
    status = cond.TRUE if rollout.rolling else cond.FALSE
    return cond.Condition(cond.ROLLING_UPDATE, status, rollout.reason, rollout.message)


def reconciled_condition(problems: Sequence[tuple[str, str]]) -> cond.Condition:
    """`problems` are (reason, message) pairs; the first one's reason is shown, every message is."""
    if problems:
        reason = problems[0][0]
        return cond.Condition(cond.RECONCILED, cond.FALSE, reason, "; ".join(m for _, m in problems))
    return cond.Condition(cond.RECONCILED, cond.TRUE, cond.REASON_RECONCILED, "children match the spec")
