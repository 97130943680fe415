"""Helpers shared by the pure builders: labels, owner references, pod-template overrides, hashes."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from krocket.operator import constants as c

Manifest = dict[str, Any]


def meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def spec_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("spec") or {}


def selector_labels(name: str, component: str) -> dict[str, str]:
    """The labels a child's selector matches; never change once created (selectors are immutable)."""
    return {
        c.LABEL_NAME: "krocket",
        c.LABEL_INSTANCE: name,
        c.LABEL_COMPONENT: component,
    }


def common_labels(name: str, component: str, cluster: str | None = None) -> dict[str, str]:
    labels = selector_labels(name, component)
    labels[c.LABEL_MANAGED_BY] = c.MANAGED_BY
    labels[c.LABEL_PART_OF] = "krocket"
    if cluster:
        labels[c.LABEL_CLUSTER] = cluster
    return labels


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to `owner` (controller=true), so children are garbage-collected with it."""
    md = meta(owner)
    if not md.get("uid"):
        raise ValueError(f"owner {md.get('name')!r} has no uid")
    return {
        "apiVersion": owner.get("apiVersion", c.API_VERSION),
        "kind": owner["kind"],
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    owner: Mapping[str, Any], name: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    md: dict[str, Any] = {
        "name": name,
        "namespace": meta(owner)["namespace"],
        "labels": dict(labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        md["annotations"] = dict(annotations)
    return md


def stable_hash(obj: Any) -> str:
    """A short content hash of a JSON-able value (sorted keys), used to trigger rolling updates."""
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _merge_named_lists(base: list[Any], override: list[Any]) -> list[Any]:
    """Merge two lists of {name: ...} dicts by name (containers, volumes, env); others appended."""
    out = [copy.deepcopy(x) for x in base]
    index = {x.get("name"): i for i, x in enumerate(out) if isinstance(x, dict) and "name" in x}
    for item in override:
        if isinstance(item, dict) and item.get("name") in index:
            pos = index[item["name"]]
            out[pos] = deep_merge(out[pos], item)
        else:
            out.append(copy.deepcopy(item))
    return out


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`.

    Dicts merge recursively; lists whose items all carry a `name` merge by name (so an override can
    patch the `broker` container or add a sidecar); other lists and scalars are replaced.
    """
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        cur = out.get(key)
        if isinstance(cur, dict) and isinstance(value, Mapping):
            out[key] = deep_merge(cur, value)
        elif (
            isinstance(cur, list)
            and isinstance(value, list)
            and all(isinstance(x, dict) and "name" in x for x in cur + value)
        ):
            out[key] = _merge_named_lists(cur, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_pod_template(pod_template: Manifest, overrides: Mapping[str, Any] | None) -> Manifest:
    """Apply `spec.podTemplate` ({metadata: {labels, annotations}, spec: {...}}) to a generated template.

    Selector labels cannot be overridden: they are re-applied after the merge.
    """
    if not overrides:
        return pod_template
    merged = deep_merge(pod_template, overrides)
    merged.setdefault("metadata", {}).setdefault("labels", {}).update(pod_template["metadata"]["labels"])
    return merged


def pdb(owner: Mapping[str, Any], name: str, component: str, cluster: str | None, max_unavailable: int) -> Manifest:
    labels = common_labels(meta(owner)["name"], component, cluster)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(owner, name, labels),
        "spec": {
            "maxUnavailable": max_unavailable,
            "selector": {"matchLabels": selector_labels(meta(owner)["name"], component)},
        },
    }


def restricted_security_context() -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod securityContext, container securityContext) meeting the `restricted` Pod Security Standard."""
    pod = {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


# Requests and limits for a container whose resource's spec.resources gives none (never BestEffort pods). The
# broker is a Python process (no JVM heap to size): its memory is the page cache of the mapped commit log and
# consume queues plus in-flight batches; the name server keeps only routes. No CPU limit (throttling hurts
# latency more than it protects neighbours).
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    c.COMPONENT_BROKER: {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    c.COMPONENT_NAMESRV: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
}


def default_resources(component: str) -> dict[str, dict[str, str]]:
    """The default requests/limits of a component's container (a fresh copy)."""
    return copy.deepcopy(DEFAULT_RESOURCES[component])


def container_resources(component: str, spec_resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """The container's resources: the spec's when it sets requests or limits, else the component's defaults."""
    given = {k: dict(v) for k, v in (spec_resources or {}).items() if k in ("requests", "limits") and v}
    return given or default_resources(component)
