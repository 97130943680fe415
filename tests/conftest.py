"""Shared fixtures. ``tests`` is a package: tests import helpers as ``from tests.support.cluster import ...``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import LocalCluster, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two name servers and two broker groups (masters), auto topic creation on, async flush."""
    c = start_cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop()
