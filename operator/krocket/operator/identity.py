"""A BrokerGroup's identity: clusterName, brokerName and the name server reference (pure).

They are fixed once the group's children were first applied: brokers register under these names, topics and
consumer offsets live under the brokerName, and clients find the brokers through these name servers. The
values applied first are kept in `status.identity`; a later change is refused (the CRD's CEL rules refuse it
too, where the API server evaluates them) and the children keep the recorded values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from krocket.operator import build_brokergroup as bg
from krocket.operator.build_common import spec_of

REF_KEYS = ("name", "namespace", "address")


def name_server_ref(body: Mapping[str, Any]) -> dict[str, str]:
    ref = spec_of(body).get("nameServerSetRef") or {}
    return {k: str(ref[k]) for k in REF_KEYS if ref.get(k)}


def desired(body: Mapping[str, Any]) -> dict[str, Any]:
    """The identity the spec asks for (defaults applied)."""
    return {
        "clusterName": bg.cluster_name(body),
        "brokerName": bg.broker_name(body),
        "nameServerSetRef": name_server_ref(body),
    }


def recorded(body: Mapping[str, Any], sts_exists: bool) -> dict[str, Any] | None:
    """The identity applied first: `status.identity`; for a group an older operator created (children exist,
    no record), its status' brokerName and clusterName; None before anything was applied."""
    status = body.get("status") or {}
    ident = status.get("identity")
    if isinstance(ident, Mapping) and ident.get("brokerName") and ident.get("clusterName"):
        return {
            "clusterName": str(ident["clusterName"]),
            "brokerName": str(ident["brokerName"]),
            "nameServerSetRef": {k: str(v) for k, v in (ident.get("nameServerSetRef") or {}).items() if v},
        }
    if sts_exists and status.get("brokerName") and status.get("clusterName"):
        return {
            "clusterName": str(status["clusterName"]),
            "brokerName": str(status["brokerName"]),
            "nameServerSetRef": name_server_ref(body),
        }
    return None


def applied_cluster_name(body: Mapping[str, Any]) -> str:
    """The cluster a group's brokers register under: the recorded one once applied (a refused change of
    spec.clusterName does not move the group to another cluster's topics), else the spec's."""
    ident = (body.get("status") or {}).get("identity")
    if isinstance(ident, Mapping) and ident.get("clusterName"):
        return str(ident["clusterName"])
    return bg.cluster_name(body)


def _describe_ref(ref: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={ref[k]}" for k in REF_KEYS if k in ref) or "(none)"


@dataclass(frozen=True)
class IdentityCheck:
    body: dict[str, Any]  # the body with the recorded identity: what the children are built from
    identity: dict[str, Any]  # what to keep in status.identity
    refusals: list[str]  # one message per field the spec tried to change


def check(body: Mapping[str, Any], record: Mapping[str, Any] | None) -> IdentityCheck:
    want = desired(body)
    if record is None:
        return IdentityCheck(copy.deepcopy(dict(body)), want, [])
    refusals: list[str] = []
    hint = "set it back, or create a new BrokerGroup and drain this one (krocket.io/drain)"
    for key in ("clusterName", "brokerName"):
        if want[key] != record[key]:
            refusals.append(
                f"spec.{key} cannot change after creation ({record[key]!r} -> {want[key]!r}); "
                f"the brokers keep {record[key]!r}: {hint}"
            )
    if want["nameServerSetRef"] != record["nameServerSetRef"]:
        refusals.append(
            "spec.nameServerSetRef cannot change after creation "
            f"({_describe_ref(record['nameServerSetRef'])} -> {_describe_ref(want['nameServerSetRef'])}); "
            f"the brokers keep registering with the first name servers: {hint}"
        )
    effective = copy.deepcopy(dict(body))
    spec = dict(effective.get("spec") or {})
    spec["clusterName"] = record["clusterName"]
    spec["brokerName"] = record["brokerName"]
    spec["nameServerSetRef"] = dict(record["nameServerSetRef"])
    effective["spec"] = spec
    return IdentityCheck(effective, dict(record), refusals)
