from __future__ import annotations

from typing import Any

import pytest

from tests.operator.bodies import make_body
from tests.operator.crdschema import apply_defaults, load_crds


@pytest.fixture(scope="session")
def crds() -> dict[str, dict[str, Any]]:
    return load_crds()


@pytest.fixture()
def defaulted(crds):
    """make a body and apply the CRD defaults, as the API server would."""

    def _make(kind: str, name: str, spec: dict[str, Any], ns: str = "mq", **meta: Any) -> dict[str, Any]:
        return apply_defaults(crds[kind], make_body(kind, name, spec, ns, **meta))

    return _make
