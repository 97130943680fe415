"""KV config (PUT/GET/DELETE_KV_CONFIG): namespace -> key -> value, in memory, optionally persisted.

The file is RocketMQ's ``kvConfig.json`` shape, ``{"configTable": {namespace: {key: value}}}``, written
atomically (temporary file, then rename) after every change.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

KV_CONFIG_FILE = "kvConfig.json"


class KVConfigStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._table: dict[str, dict[str, str]] = {}

    @classmethod
    def in_dir(cls, data_dir: str | Path | None) -> KVConfigStore:
        """A store persisted to ``data_dir/kvConfig.json`` (loaded now), or in memory when no directory."""
        if data_dir is None:
            return cls()
        store = cls(Path(data_dir) / KV_CONFIG_FILE)
        store.load()
        return store

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text())
            table = raw.get("configTable", {}) if isinstance(raw, dict) else {}
            self._table = {
                str(ns): {str(k): str(v) for k, v in kv.items()} for ns, kv in table.items() if isinstance(kv, dict)
            }
        except (OSError, ValueError, AttributeError) as exc:
            log.error("cannot read KV config %s, starting empty: %s", self.path, exc)

    def _persist(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"configTable": self._table}, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def put(self, namespace: str, key: str, value: str) -> None:
        ns = self._table.setdefault(namespace, {})
        if ns.get(key) == value:
            return
        ns[key] = value
        log.info("KV config put %s/%s=%s", namespace, key, value)
        self._persist()

    def get(self, namespace: str, key: str) -> str | None:
        return self._table.get(namespace, {}).get(key)

    def delete(self, namespace: str, key: str) -> bool:
        ns = self._table.get(namespace)
        if ns is None or key not in ns:
            return False
        del ns[key]
        if not ns:
            del self._table[namespace]
        log.info("KV config deleted %s/%s", namespace, key)
        self._persist()
        return True

    def namespace(self, namespace: str) -> dict[str, str]:
        return dict(self._table.get(namespace, {}))
