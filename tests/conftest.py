"""Shared fixtures. ``tests/`` is on sys.path, so tests import helpers as ``from support.cluster import ...``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.cluster import LocalCluster, start_cluster  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two name servers and two broker groups (masters), auto topic creation on, async flush."""
    c = start_cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop()
