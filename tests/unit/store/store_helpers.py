"""Helpers for the store tests: small segments and files, a fixed disk usage, real files under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from krocket.broker.store.config import StoreConfig
from krocket.broker.store.message_store import MessageStore
from krocket.common.message import PROPERTY_KEYS, PROPERTY_TAGS, PROPERTY_UNIQ_KEY
from krocket.common.message_id import pack_host

SEGMENT = 64 * 1024
BORN_HOST = pack_host(("10.0.0.7", 50123))


def small_config(root: Path, **overrides: Any) -> StoreConfig:
    settings: dict[str, Any] = dict(
        commitlog_segment_bytes=SEGMENT,
        consume_queue_entries_per_file=50,
        consume_queue_pending_entries=16,
        index_hash_slots=64,
        index_max_entries=400,
        index_pending_entries=8,
        store_host=pack_host(("192.168.1.2", 10911)),
        disk_check_interval_s=0,
    )
    settings.update(overrides)
    return StoreConfig(root, **settings)


def props(i: int, tags: str | None = "TagA", keys: str | None = None) -> dict[str, str]:
    out = {PROPERTY_UNIQ_KEY: f"UNIQ{i:08d}"}
    if tags:
        out[PROPERTY_TAGS] = tags
    if keys:
        out[PROPERTY_KEYS] = keys
    return out


def body(i: int, size: int = 200) -> bytes:
    head = f"message-{i}-".encode()
    return (head * (size // len(head) + 1))[:size]


StoreFactory = Callable[..., MessageStore]
