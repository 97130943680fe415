"""Subscription groups of one broker, persisted in ``config/subscriptionGroup.json`` (RocketMQ's file and shape) and
its journal (``krocket.broker.metadata_journal``: a change is one line, the journal compacted into the file now and
then). On a full disk a change stays in memory; ``persist_if_unsaved`` writes the whole table once space frees.

A group is created on first use (a heartbeat or a pull names it) unless ``autoCreateSubscriptionGroup`` is off;
then only groups created by an admin (``krocket group create``) may pull.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from krocket.broker.config_file import DISK_FULL_ERRNOS
from krocket.broker.metadata_journal import MetadataJournal
from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError, NoPermissionError
from krocket.common.subscription_group import DEFAULT_RETRY_MAX_TIMES, SubscriptionGroupConfig

log = logging.getLogger(__name__)

FILE_NAME = "subscriptionGroup.json"


class SubscriptionGroupNotExistError(KrocketError):
    code = ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST


class SubscriptionGroupManager:
    def __init__(self, config_dir: Path | None, auto_create: bool = True) -> None:
        """``config_dir`` None keeps the groups in memory only."""
        self._journal = (
            MetadataJournal(config_dir / FILE_NAME, "subscription groups", "subscriptionGroupTable", _counter_and_time)
            if config_dir is not None
            else None
        )
        self._unsaved = False
        self._failing = False
        self.auto_create = auto_create
        self.groups: dict[str, SubscriptionGroupConfig] = {}
        self.data_version = 0

    def load(self) -> None:
        if self._journal is None:
            return
        loaded = self._journal.load()
        for raw in loaded.entries.values():
            config = SubscriptionGroupConfig.from_json(raw)
            self.groups[config.group_name] = config
        self.data_version = loaded.version

    def persist(self) -> None:
        """Write the whole table now; on a full disk it stays in memory (``persist_if_unsaved`` tries again)."""
        if self._journal is not None:
            self._saved(lambda j: j.compact_now(self.groups, self.data_version, SubscriptionGroupConfig.to_json))

    def persist_if_unsaved(self) -> None:
        """The periodic retry of a write a full disk refused."""
        if self._unsaved:
            self.persist()

    def _saved(self, write: Any) -> None:
        assert self._journal is not None
        try:
            write(self._journal)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            if not self._failing:
                log.warning("disk full: subscription groups stay in memory until they can be written: %s", exc)
            self._failing = self._unsaved = True
            return
        if self._failing:
            log.warning("subscription groups are written again")
        self._failing = self._unsaved = False

    def to_json(self) -> dict:
        """RocketMQ's ``SubscriptionGroupWrapper``: what the file holds and GET_ALL_SUBSCRIPTIONGROUP_CONFIG answers."""
        return {
            "subscriptionGroupTable": {name: cfg.to_json() for name, cfg in sorted(self.groups.items())},
            "dataVersion": {"counter": self.data_version, "timestamp": int(time.time() * 1000)},
        }

    def _changed(self, group: str) -> None:
        """One journal line for ``group`` (a full write instead while an earlier one is still unsaved)."""
        self.data_version += 1
        if self._journal is None:
            return
        if self._unsaved:
            self.persist()
            return
        config = self.groups.get(group)
        if config is None:
            self._saved(lambda j: j.delete(group, self.data_version))
        else:
            self._saved(lambda j: j.put(group, config.to_json(), self.data_version))
        self._journal.maybe_compact(self.groups, self.data_version, SubscriptionGroupConfig.to_json)

    def get(self, group: str) -> SubscriptionGroupConfig | None:
        return self.groups.get(group)

    def upsert(self, config: SubscriptionGroupConfig) -> SubscriptionGroupConfig:
        config.validate()
        old = self.groups.get(config.group_name)
        if old == config:
            return config
        self.groups[config.group_name] = config
        log.info("%s subscription group %s", "updated" if old else "created", config.group_name)
        self._changed(config.group_name)
        return config

    def delete(self, group: str) -> bool:
        if self.groups.pop(group, None) is None:
            return False
        log.info("deleted subscription group %s", group)
        self._changed(group)
        return True

    def replace_all(self, configs: list[SubscriptionGroupConfig]) -> None:
        """A slave takes its master's table as it is."""
        table = {c.group_name: c for c in configs}
        if table != self.groups:
            self.groups = table
            self.data_version += 1
            self.persist()

    def find_or_create(self, group: str) -> SubscriptionGroupConfig | None:
        """The group's config, created with the defaults when auto-creation is on; None when it is off."""
        config = self.groups.get(group)
        if config is None and self.auto_create and group:
            config = self.upsert(SubscriptionGroupConfig(group))
        return config

    def check_consumable(self, group: str, broadcasting: bool = False) -> SubscriptionGroupConfig:
        """What a pull checks first, with RocketMQ's codes and remarks (``broadcasting``: the group's clients
        said BROADCASTING in their heartbeats)."""
        config = self.find_or_create(group)
        if config is None:
            raise SubscriptionGroupNotExistError(
                f"subscription group [{group}] does not exist and autoCreateSubscriptionGroup is off; "
                "create it with `krocket group create`"
            )
        if not config.consume_enable:
            raise NoPermissionError(f"subscription group no permission, {group} (consumeEnable is false)")
        if broadcasting and not config.consume_broadcast_enable:
            raise NoPermissionError(f"the consumer group[{group}] can not consume by broadcast way")
        return config

    def retry_max_times(self, group: str) -> int:
        """How many times a message of ``group`` is retried before it goes to the dead letter topic."""
        config = self.groups.get(group)
        return config.retry_max_times if config is not None else DEFAULT_RETRY_MAX_TIMES


def _counter_and_time(version: int) -> dict[str, int]:
    """RocketMQ's DataVersion shape, as subscriptionGroup.json has it."""
    return {"counter": version, "timestamp": int(time.time() * 1000)}
