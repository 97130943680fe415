"""Consumer offsets per group, topic and queue, persisted in ``config/consumerOffset.json``."""

from __future__ import annotations

from pathlib import Path

from krocket.common.jsonfile import read_json, write_json_atomic


class ConsumerOffsetManager:
    def __init__(self, config_dir: Path) -> None:
        self._path = config_dir / "consumerOffset.json"
        # "topic@group" -> {queueId: offset}, RocketMQ's key layout.
        self.table: dict[str, dict[int, int]] = {}
        self._dirty = False

    def load(self) -> None:
        data = read_json(self._path, {"offsetTable": {}})
        self.table = {
            key: {int(q): int(o) for q, o in queues.items()} for key, queues in data.get("offsetTable", {}).items()
        }

    def persist(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        write_json_atomic(
            self._path,
            {"offsetTable": {key: {str(q): o for q, o in queues.items()} for key, queues in self.table.items()}},
        )

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        queues = self.table.setdefault(f"{topic}@{group}", {})
        if queues.get(queue_id) != offset:
            queues[queue_id] = offset
            self._dirty = True

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
            self._dirty = True
