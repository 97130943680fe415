"""The ``rig`` fixture: a broker's service and processors over a real store under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.broker.broker_rig import BrokerRig, make_rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[BrokerRig]:
    broker = make_rig(tmp_path)
    yield broker
    broker.store.close()
