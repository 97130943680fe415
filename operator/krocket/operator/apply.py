"""Create-or-patch child objects, refusing to touch objects some other owner controls.

A child is patched only when it differs from what the builders want in a way the API server would keep: the server
rewrites quantities into their canonical form (`1000m` -> `1`, `4096Mi` -> `4Gi`), fills in defaults (protocol,
imagePullPolicy, terminationMessagePath, ...), drops empty values and turns numbers into strings in places, so the
comparison is semantic and a steady state reconciles with no writes and no events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from krocket.operator.kube import ApiError, KubeClient, kind_of
from krocket.operator.outcome import Event
from krocket.operator.quantity import parse_quantity

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


QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "hard"})
"""Maps whose values are resource quantities (ResourceRequirements, PVC capacity, quotas)."""
QUANTITY_FIELDS = frozenset({"sizeLimit"})


class ChildApplyError(Exception):
    """The API server refused to read, create or patch a child; carries which child and the server's answer."""

    def __init__(self, verb: str, manifest: Mapping[str, Any], error: ApiError) -> None:
        md = manifest.get("metadata") or {}
        self.verb = verb
        self.kind = str(manifest.get("kind", "object"))
        self.namespace = str(md.get("namespace", ""))
        self.name = str(md.get("name", ""))
        self.error = error
        super().__init__(f"cannot {verb} {self.kind} {self.namespace}/{self.name}: {error.reason}: {error.api_message}")


def _is_empty(value: Any) -> bool:
    """Values a Go API type omits (`omitempty`) when it serialises them: unset and empty look the same."""
    return value is None or value is False or value == "" or value == [] or value == {}


def _same_quantity(desired: Any, actual: Any) -> bool:
    try:
        return parse_quantity(desired) == parse_quantity(actual)
    except (ValueError, TypeError, AttributeError):
        return False


def _same_scalar(desired: Any, actual: Any, quantity: bool) -> bool:
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if desired == actual:
        return True
    if quantity:
        return _same_quantity(desired, actual)
    if isinstance(desired, int | float | str) and isinstance(actual, int | float | str):
        return str(desired) == str(actual)  # int-or-string fields: 8080 and "8080"
    return False


def is_subset(desired: Any, actual: Any, *, quantity: bool = False) -> bool:
    """True when every field set in `desired` means the same in `actual`.

    Fields only `actual` has (server defaults, status, other controllers' annotations) are ignored; quantities
    (`quantity`: this value, or this map's values) compare by value; an empty desired value matches an absent one.
    """
    if actual is None:
        return _is_empty(desired)
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(
            is_subset(value, actual.get(key), quantity=quantity or key in QUANTITY_MAPS or key in QUANTITY_FIELDS)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return False
        return all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
    return _same_scalar(desired, actual, quantity)


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
    try:
        live = await kube.get(kind, ns, name)
    except ApiError as e:
        raise ChildApplyError("read", desired, e) from e
    if live is None:
        try:
            return "created", await kube.create(kind, ns, desired)
        except ApiError as e:
            raise ChildApplyError("create", desired, e) from e
    owner = controller_uid(desired)
    if controller_uid(live) != owner:
        raise OwnershipConflict(
            f"{desired['kind']} {ns}/{name} already exists and is not owned by this resource; "
            "rename the resource or delete that object"
        )
    patch = _without(desired, [("apiVersion",), ("kind",), *immutable])
    if is_subset(patch, live):
        return "unchanged", live
    try:
        updated = await kube.patch(kind, ns, name, patch)
    except ApiError as e:
        raise ChildApplyError("patch", desired, e) from e
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


def merge_patch_changes(current: Any, patch: Any) -> bool:
    """Whether applying the JSON merge patch `patch` to `current` changes anything (None in a patch deletes a key),
    so a status that is already what a reconcile computed is not written again."""
    if not isinstance(patch, Mapping):
        return bool(current != patch)
    if not isinstance(current, Mapping):
        return True
    for key, value in patch.items():
        if value is None:
            if key in current:
                return True
        elif key not in current or merge_patch_changes(current[key], value):
            return True
    return False
