"""Create-or-patch child objects, refusing to touch objects some other owner controls."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from krocket.operator.kube import KubeClient, kind_of
from krocket.operator.outcome import Event

Applied = Literal["created", "updated", "unchanged"]

IMMUTABLE_FIELDS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "StatefulSet": (
        ("spec", "selector"),
        ("spec", "serviceName"),
        ("spec", "podManagementPolicy"),
        ("spec", "volumeClaimTemplates"),
    ),
    "Service": (("spec", "clusterIP"),),
}
"""Per kind, the fields the API server refuses to change (or assigns itself); a patch leaves them alone."""


class OwnershipConflict(Exception):
    """The object exists but is not controlled by the resource being reconciled."""


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every field set in `desired` has the same value in `actual` (server defaults ignored)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(is_subset(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return False
        return all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
    if isinstance(desired, int | float) and isinstance(actual, str):
        return str(desired) == actual
    return desired == actual


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _without(manifest: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in manifest.items()}
    for path in paths:
        node: Any = out
        for key in path[:-1]:
            if not isinstance(node.get(key), Mapping):
                node = None
                break
            node[key] = dict(node[key])
            node = node[key]
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


async def apply(
    kube: KubeClient,
    desired: Mapping[str, Any],
    *,
    immutable: Iterable[tuple[str, ...]] = (),
) -> tuple[Applied, dict[str, Any]]:
    """Create `desired`, or merge-patch the live object towards it; `immutable` paths are left alone."""
    kind = kind_of(desired)
    md = desired["metadata"]
    ns, name = md["namespace"], md["name"]
    live = await kube.get(kind, ns, name)
    if live is None:
        return "created", await kube.create(kind, ns, desired)
    owner = controller_uid(desired)
    if controller_uid(live) != owner:
        raise OwnershipConflict(
            f"{desired['kind']} {ns}/{name} already exists and is not owned by this resource; "
            "rename the resource or delete that object"
        )
    patch = _without(desired, [("apiVersion",), ("kind",), *immutable])
    if is_subset(patch, live):
        return "unchanged", live
    updated = await kube.patch(kind, ns, name, patch)
    return "updated", updated or live


async def apply_children(
    kube: KubeClient, manifests: Iterable[Mapping[str, Any]], events: list[Event]
) -> dict[str, dict[str, Any]]:
    """Apply `manifests` in order, adding an event for each object created or updated; the live objects by kind."""
    live: dict[str, dict[str, Any]] = {}
    for m in manifests:
        result, obj = await apply(kube, m, immutable=IMMUTABLE_FIELDS.get(m["kind"], ()))
        if result != "unchanged":
            events.append(
                Event("Normal", f"{m['kind']}{result.capitalize()}", f"{m['kind']} {m['metadata']['name']} {result}")
            )
        live[m["kind"]] = obj
    return live
