"""The ``make_store`` fixture: opened stores under tmp_path, closed at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.store.message_store import MessageStore

from tests.unit.store.store_helpers import StoreFactory, small_config


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[MessageStore] = []

    def factory(root: Path | None = None, usage: float = 0.1, **overrides: Any) -> MessageStore:
        store = MessageStore(small_config(root or tmp_path / "store", **overrides), usage_fn=lambda _p: usage)
        store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        if store._opened:
            store.close()
