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
    groups = SubscriptionGroupManager(tmp_path)
    real_write = config_file.write_json_atomic
    monkeypatch.setattr(config_file, "write_json_atomic", _full_disk)
    with caplog.at_level(logging.WARNING):
        assert groups.find_or_create("readers") is not None  # a pull's auto-creation still answers
        assert groups.find_or_create("writers") is not None
    assert [r.message for r in caplog.records].count(
        f"disk full: subscription groups stay in memory until {tmp_path / 'subscriptionGroup.json'} can be "
        "written: [Errno 28] No space left on device"
    ) == 1
    assert not (tmp_path / "subscriptionGroup.json.tmp").exists()
    monkeypatch.setattr(config_file, "write_json_atomic", real_write)
    groups.persist_if_unsaved()
    saved = json.loads((tmp_path / "subscriptionGroup.json").read_text())
    assert set(saved["subscriptionGroupTable"]) == {"readers", "writers"}


def test_other_write_errors_still_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path, data: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(config_file, "write_json_atomic", denied)
    with pytest.raises(PermissionError):
        config_file.ConfigFile(tmp_path / "x.json", "things").write({})
