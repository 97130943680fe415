"""Metadata files on a full disk: the data stays in memory, one warning, and the next write that fits saves it."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from krocket.broker import config_file
from krocket.broker.subscription_group_manager import SubscriptionGroupManager


def _full_disk(path: Path, data: object) -> None:
    path.with_name(path.name + ".tmp").write_text("partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_groups_in_memory_and_a_later_persist_saves_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from krocket.broker import metadata_journal

    groups = SubscriptionGroupManager(tmp_path)
    real_fsync = metadata_journal.os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metadata_journal.os, "fsync", full)
    with caplog.at_level(logging.WARNING):
        assert groups.find_or_create("readers") is not None  # a pull's auto-creation still answers
        assert groups.find_or_create("writers") is not None
    assert [r.message for r in caplog.records].count(
        "disk full: subscription groups stay in memory until they can be written: [Errno 28] No space left on device"
    ) == 1
    monkeypatch.setattr(metadata_journal.os, "fsync", real_fsync)
    groups.persist_if_unsaved()
    saved = json.loads((tmp_path / "subscriptionGroup.json").read_text())
    assert set(saved["subscriptionGroupTable"]) == {"readers", "writers"}
    groups.find_or_create("third")  # back to one journal line per change
    reloaded = SubscriptionGroupManager(tmp_path)
    reloaded.load()
    assert set(reloaded.groups) == {"readers", "writers", "third"}


def test_other_write_errors_still_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path, data: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(config_file, "write_json_atomic", denied)
    with pytest.raises(PermissionError):
        config_file.ConfigFile(tmp_path / "x.json", "things").write({})


def test_a_full_disk_keeps_offsets_in_memory_and_the_next_write_saves_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from krocket.broker import metadata_journal
    from krocket.broker.offset_manager import ConsumerOffsetManager

    offsets = ConsumerOffsetManager(tmp_path)
    offsets.commit("g", "T", 0, 1)
    assert offsets.persist()
    real_fsync = metadata_journal.os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metadata_journal.os, "fsync", full)
    offsets.commit("g", "T", 0, 2)
    offsets.commit("g", "U", 1, 9)
    with caplog.at_level(logging.WARNING):
        assert not offsets.persist() and not offsets.persist()
    assert [r.message for r in caplog.records].count(
        "disk full: consumer offsets stay in memory until they can be written: [Errno 28] No space left on device"
    ) == 1
    assert offsets.query("g", "T", 0) == 2  # served from memory meanwhile
    journal = (tmp_path / "consumerOffset.json.journal").read_bytes()
    assert journal.count(b"\n") == 1 and journal.endswith(b"\n")  # the failed appends left no half line
    monkeypatch.setattr(metadata_journal.os, "fsync", real_fsync)
    assert offsets.persist()
    offsets.close()
    reloaded = ConsumerOffsetManager(tmp_path)
    reloaded.load()
    assert reloaded.table == {"T@g": {0: 2}, "U@g": {1: 9}}
