"""Custom resource bodies as the API server would hand them to the operator."""

from __future__ import annotations

import copy
from typing import Any


def make_body(kind: str, name: str, spec: dict[str, Any], ns: str = "mq", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "krocket.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{kind}-{ns}-{name}", "generation": 1, **meta},
        "spec": copy.deepcopy(spec),
    }
