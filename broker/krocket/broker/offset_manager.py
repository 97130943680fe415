"""Consumer offsets per group, topic and queue, persisted in ``config/consumerOffset.json``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from krocket.broker.config_file import ConfigFile
from krocket.common.jsonfile import read_json

log = logging.getLogger(__name__)


class ConsumerOffsetManager:
    def __init__(self, config_dir: Path) -> None:
        self._path = config_dir / "consumerOffset.json"
        self._file = ConfigFile(self._path, "consumer offsets")
        # "topic@group" -> {queueId: offset}, RocketMQ's key layout.
        self.table: dict[str, dict[int, int]] = {}
        self._version = 0  # bumped by every change
        self._persisted_version = 0
        self._lock: asyncio.Lock | None = None

    def load(self) -> None:
        data = read_json(self._path, {"offsetTable": {}})
        self.table = {
            key: {int(q): int(o) for q, o in queues.items()} for key, queues in data.get("offsetTable", {}).items()
        }

    def _snapshot(self) -> dict[str, Any]:
        return {"offsetTable": {key: {str(q): o for q, o in queues.items()} for key, queues in self.table.items()}}

    def persist(self) -> None:
        """Write the table now if it changed (periodic and at stop)."""
        version = self._version
        if version == self._persisted_version:
            return
        if self._write(self._snapshot()):
            self._persisted_version = version

    def _write(self, snapshot: dict[str, Any]) -> bool:
        """Write the file; on a full disk the offsets stay in memory (the periodic persist tries again)."""
        return self._file.write(snapshot)

    async def persist_durably(self) -> None:
        """Return once every change made before the call is on disk; concurrent callers share one write. On a
        full disk it returns with the change in memory only (written by a later persist once space frees)."""
        wanted = self._version
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._persisted_version >= wanted:
                return
            version = self._version
            snapshot = self._snapshot()
            if await asyncio.get_running_loop().run_in_executor(None, self._write, snapshot):
                self._persisted_version = max(self._persisted_version, version)

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        queues = self.table.setdefault(f"{topic}@{group}", {})
        if queues.get(queue_id) != offset:
            queues[queue_id] = offset
            self._version += 1

    def query(self, group: str, topic: str, queue_id: int) -> int | None:
        return self.table.get(f"{topic}@{group}", {}).get(queue_id)

    def groups_of(self, topic: str) -> list[str]:
        return sorted(key.split("@", 1)[1] for key in self.table if key.split("@", 1)[0] == topic)

    def offsets_of(self, group: str) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for key, queues in self.table.items():
            topic, _, grp = key.partition("@")
            if grp == group:
                out[topic] = dict(queues)
        return out

    def all_groups(self) -> list[str]:
        return sorted({key.partition("@")[2] for key in self.table})

    def delete_topic(self, topic: str) -> None:
        for key in [k for k in self.table if k.partition("@")[0] == topic]:
            del self.table[key]
            self._version += 1
