"""How far the delivery has got in each waiting queue, persisted atomically in ``config/delayOffset.json``
(RocketMQ's file: ``offsetTable`` by delay level; krocket adds ``timerOffsetTable`` by timer queue)."""

from __future__ import annotations

from pathlib import Path

from krocket.common.jsonfile import read_json, write_json_atomic
from krocket.common.topic import SCHEDULE_TOPIC, TIMER_TOPIC

_TABLES = {SCHEDULE_TOPIC: ("offsetTable", 1), TIMER_TOPIC: ("timerOffsetTable", 0)}  # name, key of queue 0


class DelayOffsets:
    def __init__(self, config_dir: Path) -> None:
        self.path = config_dir / "delayOffset.json"
        self.table: dict[tuple[str, int], int] = {}  # (waiting topic, queue id) -> next queue offset to deliver
        self._version = 0
        self._persisted = 0
        self._snapshot_version = 0

    def load(self) -> None:
        data = read_json(self.path, {})
        for topic, (name, base) in _TABLES.items():
            for key, offset in data.get(name, {}).items():
                self.table[(topic, int(key) - base)] = int(offset)

    def get(self, topic: str, queue_id: int) -> int | None:
        return self.table.get((topic, queue_id))

    def set(self, topic: str, queue_id: int, offset: int) -> None:
        if self.table.get((topic, queue_id)) != offset:
            self.table[(topic, queue_id)] = offset
            self._version += 1

    def _tables(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {name: {} for name, _ in _TABLES.values()}
        for (topic, queue_id), offset in sorted(self.table.items()):
            name, base = _TABLES[topic]
            out[name][str(queue_id + base)] = offset
        return out

    @property
    def changed(self) -> bool:
        """Whether the table changed since the last snapshot written."""
        return self._version != self._persisted

    def snapshot(self) -> dict[str, dict[str, int]]:
        self._snapshot_version = self._version
        return self._tables()

    def write(self, snapshot: dict[str, dict[str, int]]) -> None:
        """Write ``snapshot`` (atomically: a crash leaves the old or the new file)."""
        write_json_atomic(self.path, snapshot)
        self._persisted = max(self._persisted, self._snapshot_version)

    def persist(self) -> None:
        """Write the table now if anything changed."""
        if self.changed:
            self.write(self.snapshot())


def merge_offsets(mine: dict[str, dict[str, int]], theirs: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Two ``delayOffset.json`` contents merged, the larger offset of each queue winning (a slave's copy of its
    master's progress keeps what it had, so a slave restarted as master resumes close to where the master was)."""
    out: dict[str, dict[str, int]] = {name: dict(mine.get(name) or {}) for name, _ in _TABLES.values()}
    for name, _ in _TABLES.values():
        for key, offset in (theirs.get(name) or {}).items():
            if int(offset) > out[name].get(str(key), -1):
                out[name][str(key)] = int(offset)
    return out


def copy_from_master(config_dir: Path, master_table: dict[str, dict[str, int]]) -> None:
    """On a slave: fold the master's table (GET_ALL_DELAY_OFFSET, 45) into ``config/delayOffset.json``."""
    path = config_dir / "delayOffset.json"
    mine = read_json(path, {})
    merged = merge_offsets(mine, master_table)
    if merged != {name: mine.get(name) or {} for name, _ in _TABLES.values()}:
        write_json_atomic(path, merged)


def read_table(config_dir: Path) -> dict[str, dict[str, int]]:
    """The persisted table as the master serves it to its slaves (at most a second behind the delivery)."""
    data = read_json(config_dir / "delayOffset.json", {})
    return {name: data.get(name) or {} for name, _ in _TABLES.values()}
