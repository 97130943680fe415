from __future__ import annotations

import copy
from typing import Any

import pytest
from crdschema import apply_defaults, load_crds


@pytest.fixture(scope="session")
def crds() -> dict[str, dict[str, Any]]:
    return load_crds()


def make_body(kind: str, name: str, spec: dict[str, Any], ns: str = "mq", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "krocket.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{kind}-{ns}-{name}", "generation": 1, **meta},
        "spec": copy.deepcopy(spec),
    }


@pytest.fixture()
def defaulted(crds):
    """make a body and apply the CRD defaults, as the API server would."""

    def _make(kind: str, name: str, spec: dict[str, Any], ns: str = "mq", **meta: Any) -> dict[str, Any]:
        return apply_defaults(crds[kind], make_body(kind, name, spec, ns, **meta))

    return _make
