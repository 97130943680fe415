"""Status fields every resource reads the same way from what it observes (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def statefulset_count(sts: Mapping[str, Any] | None, field: str) -> int:
    """A replica count from a StatefulSet's status (`replicas`, `readyReplicas`); 0 when absent."""
    return int(((sts or {}).get("status") or {}).get(field, 0) or 0)


def label_selector(labels: Mapping[str, str]) -> str:
    """`labels` as a label selector string, the form `status.labelSelector` (the scale subresource) takes."""
    return ",".join(f"{k}={v}" for k, v in labels.items())
