"""The metadata journal: one line per change, a snapshot written in the background when the journal grows, and a
load that survives torn lines, bad lines and a crash at any point of a compaction."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from krocket.broker.metadata_journal import MetadataJournal
from krocket.broker.topic_manager import TopicManager
from krocket.common.topic import TopicConfig


def journal(tmp_path: Path, compact_min: int = 1000) -> MetadataJournal:
    return MetadataJournal(tmp_path / "table.json", "test table", "table", compact_min=compact_min)


def test_changes_survive_a_reload_and_cost_one_line_each(tmp_path: Path) -> None:
    j = journal(tmp_path)
    for v in range(1, 51):
        j.put(f"k{v % 10}", {"v": v}, v)
    j.delete("k3", 51)
    j.close()
    assert len(j.journal_path.read_bytes().splitlines()) == 51 and not j.path.exists()
    loaded = journal(tmp_path).load()
    assert loaded.version == 51 and loaded.replayed == 51 and loaded.skipped == 0
    assert sorted(loaded.entries) == [f"k{i}" for i in range(10) if i != 3]
    assert loaded.entries["k0"] == {"v": 50}


def test_a_compaction_writes_the_snapshot_and_starts_a_new_journal(tmp_path: Path) -> None:
    j = journal(tmp_path, compact_min=10)
    table: dict[str, int] = {}
    for v in range(1, 26):
        table[f"k{v}"] = v
        j.put(f"k{v}", v, v)
        j.maybe_compact(table, v, lambda value: value)
        j.wait_compacted()  # the thread done before the next change, so each due compaction runs
    j.close()
    assert j.compactions == 2 and not j.old_path.exists()
    assert json.loads(j.path.read_text())["dataVersion"] == 20
    assert len(j.journal_path.read_bytes().splitlines()) == 5
    loaded = journal(tmp_path).load()
    assert loaded.entries == table and loaded.version == 25 and loaded.replayed == 5


def test_a_torn_last_line_is_cut_and_appends_go_on_after_it(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.put("a", 1, 1)
    j.put("b", 2, 2)
    j.close()
    with open(j.journal_path, "ab") as fh:
        fh.write(b'1234abcd {"v":3,"put":"c","val')  # kill -9 in the middle of an append
    again = journal(tmp_path)
    loaded = again.load()
    assert loaded.torn and loaded.entries == {"a": 1, "b": 2} and loaded.version == 2
    again.put("d", 4, 3)
    again.close()
    assert journal(tmp_path).load().entries == {"a": 1, "b": 2, "d": 4}


def test_a_bad_line_is_skipped_without_the_lines_after_it(tmp_path: Path) -> None:
    j = journal(tmp_path)
    for v, key in enumerate("abcde", start=1):
        j.put(key, v, v)
    j.close()
    lines = j.journal_path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"c"', b'"x"')  # the CRC no longer matches
    j.journal_path.write_bytes(b"".join(lines))
    reloaded = journal(tmp_path)
    loaded = reloaded.load()
    assert loaded.skipped == 1 and loaded.entries == {"a": 1, "b": 2, "d": 4, "e": 5}
    reloaded.close()
    assert not reloaded.journal_path.exists() and json.loads(reloaded.path.read_text())["table"] == loaded.entries


@pytest.mark.parametrize("snapshot_written", [False, True])
def test_a_crash_during_a_compaction_loses_nothing(tmp_path: Path, snapshot_written: bool) -> None:
    j = journal(tmp_path)
    for v in range(1, 6):
        j.put(f"k{v}", v, v)
    j.close()
    os.replace(j.journal_path, j.old_path)  # the compaction set the journal aside ...
    if snapshot_written:  # ... and wrote the snapshot, but died before dropping the old journal
        j.path.write_text(json.dumps({"table": {f"k{v}": v for v in range(1, 6)}, "dataVersion": 5}))
    newer = journal(tmp_path)
    newer.put("k6", 6, 6)  # the new journal took a change meanwhile
    newer.close()
    reloaded = journal(tmp_path)
    loaded = reloaded.load()
    assert loaded.entries == {f"k{v}": v for v in range(1, 7)} and loaded.version == 6
    assert not reloaded.old_path.exists()  # the load finished the compaction


async def test_a_compaction_in_a_thread_lets_changes_go_on(tmp_path: Path) -> None:
    j = journal(tmp_path, compact_min=100)
    table = {f"k{i}": {"payload": ["x" * 100] * 400, "i": i} for i in range(400)}  # ~16 MB of JSON
    for i in range(100):
        j.put(f"k{i}", table[f"k{i}"], i + 1)
    j.maybe_compact(table, 100, lambda value: value)
    assert j.compacting  # writing them off the loop
    for i in range(100, 150):
        table[f"k{i}"] = {"changed": i}
        j.put(f"k{i}", table[f"k{i}"], i + 1)
        await asyncio.sleep(0)
    j.close()
    loaded = journal(tmp_path).load()
    assert loaded.version == 150 and loaded.entries == table


def test_topic_tables_load_from_the_snapshot_and_journal(tmp_path: Path) -> None:
    manager = TopicManager(tmp_path, auto_create=False, default_queue_nums=4)
    manager.load()
    for i in range(30):
        manager.upsert(TopicConfig(f"T{i}", 2, 2))
    manager.delete("T5")
    manager.persist()  # a full snapshot, the journal emptied
    manager.upsert(TopicConfig("After", 1, 1))
    manager.close()
    reloaded = TopicManager(tmp_path, auto_create=False, default_queue_nums=4)
    reloaded.load()
    assert sorted(reloaded.topics) == sorted([f"T{i}" for i in range(30) if i != 5] + ["After"])
    assert reloaded.data_version == manager.data_version == 32
