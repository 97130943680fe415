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
        # (group, topic, queueId) -> the offset an admin reset moved the queue to, until a consumer pulls from it:
        # RocketMQ 5's resetOffsetTable. Until then a client's commits are ignored (they carry the offset it held
        # before it heard of the reset) and a pull from elsewhere is told the offset moved. In memory only.
        self._resets: dict[tuple[str, str, int], int] = {}

    def load(self) -> None:
        data = read_json(self._path, {"offsetTable": {}})
        self.table = {
            key: {int(q): int(o) for q, o in queues.items()} for key, queues in data.get("offsetTable", {}).items()
        }

    def _snapshot(self) -> dict[str, Any]:
        return {"offsetTable": {key: {str(q): o for q, o in queues.items()} for key, queues in self.table.items()}}

    def persist(self) -> bool:
        """Write the table now if it changed (periodic and at stop); True when every change is on disk."""
        version = self._version
        if version == self._persisted_version:
            return True
        if self._write(self._snapshot()):
            self._persisted_version = version
            return True
        return False

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

    def assign_reset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """An admin reset: the queue continues from ``offset``, whatever its consumers commit before they pull."""
        self.commit(group, topic, queue_id, offset)
        self._resets[(group, topic, queue_id)] = offset

    def commit_from_client(self, group: str, topic: str, queue_id: int, offset: int) -> bool:
        """A consumer's commit; ignored (False) while a reset of that queue waits for the consumer to pull."""
        if (group, topic, queue_id) in self._resets:
            return False
        self.commit(group, topic, queue_id, offset)
        return True

    def take_reset(self, group: str, topic: str, queue_id: int) -> int | None:
        """On a pull: the offset a pending reset moved the queue to (the reset is done once pulled from), or None."""
        return self._resets.pop((group, topic, queue_id), None)

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
        self.delete_topics([topic])

    def delete_topics(self, topics: list[str]) -> None:
        """Forget every group's offsets of ``topics`` (one pass over the table, however many topics)."""
        gone = set(topics)
        for key in [k for k in self.table if k.partition("@")[0] in gone]:
            del self.table[key]
            self._version += 1
        for pending in [k for k in self._resets if k[1] in gone]:
            del self._resets[pending]
