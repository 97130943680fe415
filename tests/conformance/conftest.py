"""Fixtures shared by the conformance modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import LocalCluster
from tests.support.rmq5 import start_grpc_cluster


@pytest.fixture(scope="module")
def grpc_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two broker groups serving gRPC (see ``start_grpc_cluster``), one per test module of the 5.x SDK."""
    cluster = start_grpc_cluster(tmp_path_factory.mktemp("sdk5"))
    try:
        yield cluster
    finally:
        cluster.stop()
