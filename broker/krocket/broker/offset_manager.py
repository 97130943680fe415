"""Consumer offsets per group, topic and queue, persisted in ``config/consumerOffset.json`` (RocketMQ's file and
shape) and its journal (``krocket.broker.metadata_journal``): a write appends the entries that changed since the
last one, whatever the table's size, and the journal is compacted into the file now and then.

On a full disk a write fails, the offsets stay in memory and the next write (periodic, or a durable commit) tries
again with everything still unwritten; the first refusal and the first write that works again are logged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from krocket.broker.config_file import DISK_FULL_ERRNOS
from krocket.broker.metadata_journal import MetadataJournal, delete_change, put_change

log = logging.getLogger(__name__)


class ConsumerOffsetManager:
    def __init__(self, config_dir: Path) -> None:
        self._journal = MetadataJournal(config_dir / "consumerOffset.json", "consumer offsets", "offsetTable")
        # "topic@group" -> {queueId: offset}, RocketMQ's key layout.
        self.table: dict[str, dict[int, int]] = {}
        self._version = 0  # bumped by every change
        self._persisted_version = 0
        self._dirty: set[str] = set()  # keys changed since the last write that worked
        self._failing = False  # the last write met a full disk
        self._lock: asyncio.Lock | None = None
        # (group, topic, queueId) -> the offset an admin reset moved the queue to, until a consumer pulls from it:
        # RocketMQ 5's resetOffsetTable. Until then a client's commits are ignored (they carry the offset it held
        # before it heard of the reset) and a pull from elsewhere is told the offset moved. In memory only.
        self._resets: dict[tuple[str, str, int], int] = {}

    def load(self) -> None:
        loaded = self._journal.load()
        self.table = {key: {int(q): int(o) for q, o in queues.items()} for key, queues in loaded.entries.items()}
        self._version = self._persisted_version = loaded.version

    def persist(self) -> bool:
        """Write what changed now (periodic and at stop); True when every change is on disk."""
        if self._version == self._persisted_version:
            return True
        version, keys, changes = self._capture()
        return self._finish(version, keys, self._append(changes))

    async def persist_durably(self) -> None:
        """Return once every change made before the call is on disk; concurrent callers share one write. On a
        full disk it returns with the change in memory only (written by a later persist once space frees)."""
        wanted = self._version
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._persisted_version >= wanted:
                return
            version, keys, changes = self._capture()
            written = await asyncio.get_running_loop().run_in_executor(None, self._append, changes)
            self._finish(version, keys, written)

    def _capture(self) -> tuple[int, set[str], list[dict[str, Any]]]:
        """The changes since the last write, as journal lines (each key's queues as they are now)."""
        version, keys = self._version, self._dirty
        self._dirty = set()
        changes = [
            put_change(key, _queues_json(self.table[key]), version)
            if key in self.table
            else delete_change(key, version)
            for key in sorted(keys)
        ]
        return version, keys, changes

    def _append(self, changes: list[dict[str, Any]]) -> bool:
        """The lines on disk; False on a full disk (other errors raise)."""
        try:
            self._journal.append(changes)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            if not self._failing:
                log.warning("disk full: consumer offsets stay in memory until they can be written: %s", exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("consumer offsets are written again")
            self._failing = False
        return True

    def _finish(self, version: int, keys: set[str], written: bool) -> bool:
        if not written:
            self._dirty |= keys  # written with the next try
            return False
        self._persisted_version = max(self._persisted_version, version)
        if self._journal.due(len(self.table)):
            entries = {key: _queues_json(queues) for key, queues in self.table.items()}
            self._journal.maybe_compact(entries, self._version, lambda value: value)
        return True

    def close(self) -> None:
        """Let a compaction in flight finish and close the journal (at stop, after the last persist)."""
        self._journal.close()

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        key = f"{topic}@{group}"
        queues = self.table.setdefault(key, {})
        if queues.get(queue_id) != offset:
            queues[queue_id] = offset
            self._version += 1
            self._dirty.add(key)

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
            self._dirty.add(key)
        for pending in [k for k in self._resets if k[1] in gone]:
            del self._resets[pending]


def _queues_json(queues: dict[int, int]) -> dict[str, int]:
    return {str(q): o for q, o in queues.items()}
