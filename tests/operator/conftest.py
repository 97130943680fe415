from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.bodies import make_body
from tests.operator.crdschema import apply_defaults, load_crds
from tests.operator.kopf_harness import declare_resources
from tests.operator.real_broker import local_cluster
from tests.support.cluster import LocalCluster


@pytest.fixture(scope="session")
def crds() -> dict[str, dict[str, Any]]:
    return load_crds()


@pytest.fixture()
def defaulted(crds):
    """make a body and apply the CRD defaults, as the API server would."""

    def _make(kind: str, name: str, spec: dict[str, Any], ns: str = "mq", **meta: Any) -> dict[str, Any]:
        return apply_defaults(crds[kind], make_body(kind, name, spec, ns, **meta))

    return _make


@pytest.fixture()
def k8s(kmock):
    """kmock's emulated API server, serving the krocket resources and the children the operator makes."""
    declare_resources(kmock)
    return kmock


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """One name server and one master (broker-a of DefaultCluster) on 127.0.0.1."""
    yield from local_cluster(tmp_path)
