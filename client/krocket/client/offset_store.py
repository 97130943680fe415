"""Consumer offset stores: on the brokers (clustering) or in a local file (broadcasting)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from krocket.common.jsonfile import read_json, write_json_atomic

from .types import MessageQueue

log = logging.getLogger(__name__)

DEFAULT_OFFSET_DIR = Path("~/.krocket_offsets")
WARN_EVERY_S = 60.0


class OffsetStore(Protocol):
    def read(self, queue: MessageQueue) -> int:
        """The offset held in memory, -1 when none."""

    async def read_stored(self, queue: MessageQueue) -> int:
        """The persisted offset (loaded into memory), -1 when none."""

    def update(self, queue: MessageQueue, offset: int, increase_only: bool = False) -> None: ...

    async def persist(self, queues: Iterable[MessageQueue]) -> None: ...

    def remove(self, queue: MessageQueue) -> None: ...


class _MemoryTable:
    def __init__(self) -> None:
        self.table: dict[MessageQueue, int] = {}

    def read(self, queue: MessageQueue) -> int:
        return self.table.get(queue, -1)

    def update(self, queue: MessageQueue, offset: int, increase_only: bool = False) -> None:
        if offset < 0:
            return
        if increase_only and self.table.get(queue, -1) >= offset:
            return
        self.table[queue] = offset

    def remove(self, queue: MessageQueue) -> None:
        self.table.pop(queue, None)


QueryFn = Callable[[MessageQueue], Awaitable[int]]
CommitFn = Callable[[MessageQueue, int], Awaitable[None]]


class RemoteBrokerOffsetStore(_MemoryTable):
    """Offsets kept by the broker that owns each queue (QUERY_CONSUMER_OFFSET 14 / UPDATE 15)."""

    def __init__(self, query: QueryFn, commit: CommitFn) -> None:
        super().__init__()
        self._query = query
        self._commit = commit
        self._persisted: dict[MessageQueue, int] = {}
        self._warned: dict[MessageQueue, float] = {}

    async def read_stored(self, queue: MessageQueue) -> int:
        offset = await self._query(queue)
        if offset >= 0:
            self.table[queue] = offset
            self._persisted[queue] = offset
        return offset

    async def persist(self, queues: Iterable[MessageQueue]) -> None:
        todo = [(q, self.table[q]) for q in queues if q in self.table and self._persisted.get(q) != self.table[q]]
        if not todo:
            return
        results = await asyncio.gather(*(self._commit(q, o) for q, o in todo), return_exceptions=True)
        for (queue, offset), result in zip(todo, results, strict=True):
            if isinstance(result, BaseException):
                now = time.monotonic()
                if now - self._warned.get(queue, -1e9) >= WARN_EVERY_S:
                    self._warned[queue] = now
                    log.warning("committing offset %d of %s failed (will retry): %s", offset, queue, result)
            else:
                self._persisted[queue] = offset

    def remove(self, queue: MessageQueue) -> None:
        super().remove(queue)
        self._persisted.pop(queue, None)


class LocalFileOffsetStore(_MemoryTable):
    """Offsets in ``{dir}/{clientId}/{group}/offsets.json``, written atomically (temp file + rename)."""

    def __init__(self, client_id: str, group: str, directory: str | Path | None = None) -> None:
        super().__init__()
        root = Path(directory).expanduser() if directory else DEFAULT_OFFSET_DIR.expanduser()
        self.path = root / client_id.replace("/", "_") / group / "offsets.json"
        self._saved: list[dict[str, Any]] | None = None
        self.load()

    def load(self) -> None:
        data = read_json(self.path, {"offsets": []})
        self.table = {
            MessageQueue(str(e["topic"]), str(e["brokerName"]), int(e["queueId"])): int(e["offset"])
            for e in data.get("offsets", [])
        }

    async def read_stored(self, queue: MessageQueue) -> int:
        return self.read(queue)

    async def persist(self, queues: Iterable[MessageQueue]) -> None:
        del queues  # the file holds every queue ever consumed, not only the current ones
        entries = self._entries()
        if entries != self._saved:
            await asyncio.to_thread(write_json_atomic, self.path, {"offsets": entries})
            self._saved = entries

    def save(self) -> None:
        self._saved = self._entries()
        write_json_atomic(self.path, {"offsets": self._saved})

    def _entries(self) -> list[dict[str, Any]]:
        return [
            {"topic": q.topic, "brokerName": q.broker_name, "queueId": q.queue_id, "offset": o}
            for q, o in sorted(self.table.items())
        ]

    def remove(self, queue: MessageQueue) -> None:
        """Keep the file's entry: a broadcasting consumer resumes from it after a restart."""
