"""Which name servers a BrokerGroup may register with, when they live in another namespace.

A BrokerGroup names its NameServerSet (`nameServerSetRef.name`, optionally `.namespace`) or gives an `address`.
Registering with another namespace's name servers puts the group's routes into another tenant's registry, so the
target has to agree, as Gateway API's ReferenceGrant asks: the NameServerSet lists the namespaces it accepts in the
annotation `krocket.io/allowed-namespaces` ("team-a,team-b", or "*" for every namespace). An `address` is allowed
(name servers outside Kubernetes), but when one of its hosts is the Service of a NameServerSet in another namespace
(`<service>.<namespace>.svc...`), the same rule holds. The parsing and the decision are pure; `check_reference`
reads the targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from krocket.operator import build_namesrv
from krocket.operator import constants as c
from krocket.operator.build_common import meta, spec_of
from krocket.operator.kube import NAMESERVERSETS, ApiError, KubeClient

REASON_NOT_PERMITTED = "ReferenceNotPermitted"


@dataclass(frozen=True)
class Target:
    """A NameServerSet a BrokerGroup would register with: by reference, or because an address resolves to it."""

    namespace: str
    candidates: tuple[str, ...]  # NameServerSet names the reference may mean (a Service name can be either)
    via: str  # the field it comes from, for the message


def allowed_namespaces(nss: Mapping[str, Any]) -> frozenset[str]:
    raw = str((meta(nss).get("annotations") or {}).get(c.ANN_ALLOWED_NAMESPACES, ""))
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def namespace_allowed(nss: Mapping[str, Any], from_namespace: str) -> bool:
    """A NameServerSet accepts its own namespace always, others when its annotation lists them (or "*")."""
    if meta(nss).get("namespace") == from_namespace:
        return True
    allowed = allowed_namespaces(nss)
    return "*" in allowed or from_namespace in allowed


def service_of_host(host: str) -> tuple[str, str] | None:
    """(service, namespace) of an in-cluster Service DNS name: `svc.ns.svc[.cluster.local]` or a pod of a headless
    Service, `pod.svc.ns.svc...`; None for anything else (an IP, an outside name)."""
    labels = host.strip().rstrip(".").lower().split(".")
    if "svc" not in labels:
        return None
    i = labels.index("svc")
    if i < 2:
        return None
    return labels[i - 2], labels[i - 1]


def _host_of(address: str) -> str:
    address = address.strip()
    if address.startswith("["):  # [v6]:port
        return address[1 : address.find("]")] if "]" in address else address
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def nameserverset_candidates(service: str) -> tuple[str, ...]:
    """The NameServerSets whose Service is `service`: its client Service (`<name>`) or headless one."""
    suffix = build_namesrv.headless_service_name("")
    if service.endswith(suffix) and len(service) > len(suffix):
        return (service[: -len(suffix)], service)
    return (service,)


def targets(body: Mapping[str, Any]) -> list[Target]:
    """Every NameServerSet in another namespace the group's spec points at (pure)."""
    own_ns = str(meta(body).get("namespace", ""))
    ref = spec_of(body).get("nameServerSetRef") or {}
    if ref.get("address"):
        found: list[Target] = []
        for part in str(ref["address"]).split(";"):
            svc = service_of_host(_host_of(part)) if part.strip() else None
            if svc is not None and svc[1] != own_ns:
                target = Target(svc[1], nameserverset_candidates(svc[0]), f"nameServerSetRef.address {part.strip()!r}")
                if all((t.namespace, t.candidates) != (target.namespace, target.candidates) for t in found):
                    found.append(target)
        return found
    ns = str(ref.get("namespace") or own_ns)
    if ref.get("name") and ns != own_ns:
        return [Target(ns, (str(ref["name"]),), "nameServerSetRef")]
    return []


def refusal(body: Mapping[str, Any], target: Target, nss: Mapping[str, Any]) -> str | None:
    """Why `nss` (the NameServerSet `target` found) does not accept this group; None when it does (pure)."""
    own_ns = str(meta(body).get("namespace", ""))
    if namespace_allowed(nss, own_ns):
        return None
    return (
        f"{target.via} points at NameServerSet {target.namespace}/{meta(nss).get('name')}, which does not accept "
        f"BrokerGroups from namespace {own_ns!r}; its owner can allow it with the annotation "
        f'{c.ANN_ALLOWED_NAMESPACES}: "{own_ns}" (a comma-separated list, or "*")'
    )


async def check_reference(body: Mapping[str, Any], kube: KubeClient) -> str | None:
    """Why the group may not register with the name servers it points at; None when it may.

    A target that does not exist is not refused here (the BrokerGroup reports a missing NameServerSet itself,
    and an address may be an outside name server); one the operator may not read is refused, since nobody can
    tell whether its owner agrees.
    """
    for target in targets(body):
        for name in target.candidates:
            try:
                nss = await kube.get(NAMESERVERSETS, target.namespace, name)
            except ApiError as e:
                if e.status in (401, 403):
                    return (
                        f"{target.via}: cannot read NameServerSet {target.namespace}/{name} to check that it accepts "
                        f"namespace {meta(body).get('namespace')!r} ({e.reason}: the operator does not watch "
                        f"{target.namespace!r}); reference name servers the operator can see, or outside ones by IP"
                    )
                raise
            if nss is not None:
                why = refusal(body, target, nss)
                if why is not None:
                    return why
                break
    return None
