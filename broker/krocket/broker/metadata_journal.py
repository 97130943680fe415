"""A metadata table (``{key: JSON}``, e.g. the topic configs) kept as a snapshot file and a journal of changes.

A change costs one appended line and an fsync, whatever the table's size: ``<crc32 hex> {"v": version, "put": key,
"value": ...}`` or ``... {"v": version, "del": key}``. Once the journal holds more lines than a quarter of the table
(and at least ``compact_min``), it is compacted: the journal is set aside (``<file>.journal.old``), a new one takes
the next changes, and a thread writes the snapshot (temp file, fsync, rename) and then drops the old journal. At
load the snapshot is read, then the old journal and the journal, each line applied when its version is newer than
the snapshot's: a crash at any point of a compaction loses nothing, and replaying a line twice is harmless.

A torn last line (``kill -9`` during an append) is cut; a line whose CRC or JSON is bad is skipped without taking
the lines after it, and the table is compacted at once so the bad bytes are gone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krocket.common.jsonfile import read_json, write_json_atomic

log = logging.getLogger(__name__)

Entries = dict[str, Any]


@dataclass(slots=True)
class Loaded:
    """A table as the files hold it: its entries (JSON), its version, and what loading met."""

    entries: Entries
    version: int
    snapshot_version: int = 0
    replayed: int = 0
    skipped: int = 0
    torn: bool = False


class MetadataJournal:
    def __init__(
        self,
        path: Path,
        what: str,
        table_key: str,
        version_json: Callable[[int], Any] = lambda version: version,
        compact_min: int = 1000,
    ) -> None:
        """The snapshot file is ``{table_key: entries, "dataVersion": version_json(version)}`` (RocketMQ's files:
        ``topicConfigTable``, ``offsetTable``, ``subscriptionGroupTable``); a version is read back from a number or
        from ``{"counter": n, ...}``."""
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.old_path = path.with_name(path.name + ".journal.old")
        self._what = what
        self._table_key = table_key
        self._version_json = version_json
        self.compact_min = compact_min
        self._fd: int | None = None
        self._guard = threading.Lock()  # appends may come from a thread (a durable offset commit)
        self.lines = 0  # lines in the journal since the last compaction began
        self._compacting: threading.Thread | None = None
        self.compactions = 0

    # -- load -----------------------------------------------------------------------------------------------
    def load(self) -> Loaded:
        entries, version = self._read_snapshot(read_json(self.path, None))
        loaded = Loaded(entries, version, version)
        for path in (self.old_path, self.journal_path):
            self._replay(path, loaded)
        if loaded.replayed or loaded.skipped:
            log.info(
                "%s: %d entries, %d journal lines replayed%s",
                self._what,
                len(entries),
                loaded.replayed,
                f", {loaded.skipped} bad lines skipped" if loaded.skipped else "",
            )
        if loaded.skipped or self.old_path.exists():
            # Bad lines or a compaction cut short: write them out of the files now, if the disk lets us (a full
            # disk must not stop a start: the files are read the same way next time).
            try:
                self.compact_now(loaded.entries, loaded.version)
            except OSError as exc:
                log.warning("%s: cannot compact the journal now, it stays as it is: %s", self._what, exc)
        return loaded

    def _replay(self, path: Path, loaded: Loaded) -> None:
        """Apply the lines of ``path`` newer than the snapshot (older ones are in it already)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):
            loaded.torn = True
            log.warning("%s: a torn last line (%d bytes) of %s is cut", self._what, len(data) - end, path)
            os.truncate(path, end)  # so the next line appended does not join it (works on a full disk too)
        for line in data[:end].splitlines():
            change = _parse_line(line)
            if change is None:
                loaded.skipped += 1
                log.warning("%s: a bad line of %s is skipped: %r", self._what, path, line[:120])
            elif change["v"] > loaded.snapshot_version:
                _apply(loaded, change)
            if path == self.journal_path:
                self.lines += 1

    def _read_snapshot(self, data: Any) -> tuple[Entries, int]:
        if not isinstance(data, dict):
            return {}, 0
        table = data.get(self._table_key) or {}
        version = data.get("dataVersion", 0)
        counter = version.get("counter", 0) if isinstance(version, dict) else version
        return (dict(table) if isinstance(table, dict) else {}), int(counter) if isinstance(counter, int) else 0

    # -- changes --------------------------------------------------------------------------------------------
    def put(self, key: str, value: Any, version: int) -> None:
        self.append([put_change(key, value, version)])

    def delete(self, key: str, version: int) -> None:
        self.append([delete_change(key, version)])

    def append(self, changes: list[dict[str, Any]]) -> None:
        """Lines for ``changes`` (``put_change``/``delete_change``), on disk before this returns with one fsync
        for all (OSError when they cannot be: the changes must not be acknowledged)."""
        lines = []
        for change in changes:
            text = json.dumps(change, separators=(",", ":"), sort_keys=True).encode()
            lines.append(b"%08x %s\n" % (zlib.crc32(text), text))
        data = b"".join(lines)
        with self._guard:
            if self._fd is None:
                self.journal_path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, start)  # no half line left to join the next append (a full disk)
                raise
            self.lines += len(lines)

    # -- compaction -----------------------------------------------------------------------------------------
    def due(self, size: int) -> bool:
        return not self.compacting and self.lines >= max(self.compact_min, size // 4)

    @property
    def compacting(self) -> bool:
        return self._compacting is not None and self._compacting.is_alive()

    def maybe_compact(self, entries: Mapping[str, Any], version: int, to_json: Callable[[Any], Any]) -> None:
        """Compact when due: a thread writes the snapshot of a copy of ``entries`` (``to_json`` of each), so the
        event loop goes on serving; changes meanwhile go to the new journal."""
        if not self.due(len(entries)):
            return
        copy = dict(entries)
        with self._guard:
            self._set_aside()
        self._compacting = threading.Thread(
            target=self._write_snapshot_logged, args=(copy, version, to_json), name="metadata-compaction", daemon=True
        )
        self._compacting.start()

    def compact_now(
        self, entries: Mapping[str, Any], version: int, to_json: Callable[[Any], Any] = lambda v: v
    ) -> None:
        """Write the snapshot here and now (a slave taking its master's table, a load that met bad lines)."""
        self.wait_compacted()
        with self._guard:
            self._set_aside()
        self._write_snapshot(dict(entries), version, to_json)

    def wait_compacted(self) -> None:
        """Let a compaction in flight finish (at stop, and before another)."""
        if self._compacting is not None:
            self._compacting.join()
            self._compacting = None

    def _set_aside(self) -> None:
        """The journal becomes the old journal (unless one is still there: then both hold changes the snapshot
        being written covers, and the journal's lines are appended to it); the next change starts a new one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.journal_path.exists():
            if self.old_path.exists():
                with open(self.old_path, "ab") as old:
                    old.write(self.journal_path.read_bytes())
                    old.flush()
                    os.fsync(old.fileno())
                self.journal_path.unlink()
            else:
                os.replace(self.journal_path, self.old_path)
        self.lines = 0

    def _write_snapshot_logged(self, entries: Entries, version: int, to_json: Callable[[Any], Any]) -> None:
        try:
            self._write_snapshot(entries, version, to_json)
        except Exception:  # noqa: BLE001 - the journal still holds every change; the next compaction retries
            log.exception("%s: compaction failed (the journals keep every change)", self._what)

    def _write_snapshot(self, entries: Entries, version: int, to_json: Callable[[Any], Any]) -> None:
        began = time.monotonic()
        data = {
            self._table_key: {key: to_json(value) for key, value in entries.items()},
            "dataVersion": self._version_json(version),
        }
        write_json_atomic(self.path, data, compact=True)
        self.old_path.unlink(missing_ok=True)
        self.compactions += 1
        log.info(
            "%s: snapshot of %d entries at version %d written in %.2f s",
            self._what,
            len(entries),
            version,
            time.monotonic() - began,
        )

    def close(self) -> None:
        self.wait_compacted()
        with self._guard:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def put_change(key: str, value: Any, version: int) -> dict[str, Any]:
    return {"v": version, "put": key, "value": value}


def delete_change(key: str, version: int) -> dict[str, Any]:
    return {"v": version, "del": key}


def _parse_line(line: bytes) -> dict[str, Any] | None:
    crc, _, text = line.partition(b" ")
    try:
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(text):
            return None
        change = json.loads(text)
    except ValueError:
        return None
    if not isinstance(change, dict) or not isinstance(change.get("v"), int):
        return None
    if isinstance(change.get("put"), str) and "value" in change:
        return change
    if isinstance(change.get("del"), str):
        return change
    return None


def _apply(loaded: Loaded, change: dict[str, Any]) -> None:
    if "put" in change:
        loaded.entries[change["put"]] = change["value"]
    else:
        loaded.entries.pop(change["del"], None)
    loaded.version = max(loaded.version, change["v"])
    loaded.replayed += 1
