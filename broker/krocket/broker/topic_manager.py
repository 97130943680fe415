"""Topic configs of one broker, persisted in ``config/topics.json`` and its journal
(``krocket.broker.metadata_journal``: a change costs one appended line, not a rewrite of every topic); auto-creation
through TBW102."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from krocket.broker.metadata_journal import MetadataJournal, delete_change, put_change
from krocket.common.codes import PERM_INHERIT, PERM_READ_WRITE, PERM_WRITE
from krocket.common.errors import MessageIllegalError, NoPermissionError, TopicNotExistError
from krocket.common.register_body import DataVersion, data_version
from krocket.common.topic import AUTO_CREATE_TOPIC_KEY, RETRY_GROUP_PREFIX, TopicConfig, validate_topic

log = logging.getLogger(__name__)


class TopicManager:
    def __init__(
        self, config_dir: Path, auto_create: bool, default_queue_nums: int, on_change: Callable[[], None] | None = None
    ) -> None:
        self._journal = MetadataJournal(config_dir / "topics.json", "topic configs", "topicConfigTable")
        self._auto_create = auto_create
        self._default_queue_nums = default_queue_nums
        self._on_change = on_change
        self.topics: dict[str, TopicConfig] = {}
        self.data_version = 0
        self.started_ms = int(time.time() * 1000)  # the data version's timestamp: a restart is a new version
        # Topics changed since the name servers were last told (``take_changes``); None: all of them (the
        # broker's permission changed what every topic registers as, or a slave took its master's table).
        self._changed_topics: set[str] | None = set()
        # The whole broker's permission (brokerPermission): sends need its write bit too, and the table registered
        # with the name servers shows each topic's perm masked by it.
        self.broker_permission = PERM_READ_WRITE

    def load(self) -> None:
        loaded = self._journal.load()
        for raw in loaded.entries.values():
            config = TopicConfig.from_json(raw)
            self.topics[config.topic_name] = config
        self.data_version = loaded.version
        if self._auto_create:
            self.topics.setdefault(
                AUTO_CREATE_TOPIC_KEY,
                TopicConfig(
                    AUTO_CREATE_TOPIC_KEY,
                    self._default_queue_nums,
                    self._default_queue_nums,
                    PERM_READ_WRITE | PERM_INHERIT,
                ),
            )
        else:
            self.topics.pop(AUTO_CREATE_TOPIC_KEY, None)

    def persist(self) -> None:
        """The whole table to ``topics.json`` now (the journal starts empty)."""
        self._journal.compact_now(self.topics, self.data_version, TopicConfig.to_json)

    def close(self) -> None:
        """Let a compaction in flight finish and close the journal (at stop)."""
        self._journal.close()

    def _replaced(self) -> None:
        """Every topic may have changed (a slave took its master's table): a new version and the whole table."""
        self.data_version += 1
        self.persist()
        self._announce(every_topic=True)

    def _announce(self, every_topic: bool = False) -> None:
        """Tell the name servers (``every_topic``: each topic may have changed, not only those noted)."""
        if every_topic:
            self._changed_topics = None
        if self._on_change is not None:
            self._on_change()

    def version(self) -> DataVersion:
        """The data version the name servers are told (``krocket.common.register_body``)."""
        return data_version(self.data_version, self.started_ms)

    def take_changes(self) -> set[str] | None:
        """The topics changed since the last call (created, updated or deleted), None when every topic may
        have; the next call starts empty."""
        changed, self._changed_topics = self._changed_topics, set()
        return changed

    def registered_table(self, names: set[str] | None = None) -> dict[str, dict[str, object]]:
        """``{name: TopicConfig JSON}`` as registered (perm masked by the broker's), of ``names`` that exist or
        of every topic."""
        chosen = self.topics if names is None else {n: self.topics[n] for n in names if n in self.topics}
        table = {}
        for name, cfg in chosen.items():
            entry = cfg.to_json()
            entry["perm"] = self.registered_perm(cfg)
            table[name] = entry
        return table

    def set_broker_permission(self, perm: int) -> bool:
        """Change the broker's permission; a change is a new data version (registered at once). True if changed."""
        if perm == self.broker_permission:
            return False
        self.broker_permission = perm
        self.data_version += 1
        self._announce(every_topic=True)
        return True

    def registered_perm(self, config: TopicConfig) -> int:
        """The perm the name servers are told for a topic: its own, masked by the broker's permission."""
        return config.perm & (self.broker_permission | ~PERM_READ_WRITE)

    def replace_all(self, configs: list[TopicConfig]) -> None:
        """A slave takes its master's topic table as it is."""
        table = {c.topic_name: c for c in configs}
        if table == self.topics:
            return
        self.topics = table
        self._replaced()

    def get(self, topic: str) -> TopicConfig | None:
        return self.topics.get(topic)

    def upsert(self, config: TopicConfig) -> TopicConfig:
        self._check(config)
        old = self.topics.get(config.topic_name)
        if old == config:
            return config
        self._apply_many([config], [])
        log.info(
            "%s topic %s: read=%d write=%d perm=%d",
            "updated" if old else "created",
            config.topic_name,
            config.read_queue_nums,
            config.write_queue_nums,
            config.perm,
        )
        return config

    def _check(self, config: TopicConfig) -> None:
        config.validate()
        if config.topic_name == AUTO_CREATE_TOPIC_KEY and not self._auto_create:
            raise MessageIllegalError(f"{AUTO_CREATE_TOPIC_KEY} is reserved for topic auto-creation")

    def upsert_many(self, configs: list[TopicConfig]) -> list[TopicConfig]:
        """Create or update many topics at once: every config is checked before any is applied, the changes
        reach the disk with one fsync and the name servers in one delta. Returns those that changed."""
        for config in configs:
            self._check(config)
        latest = {c.topic_name: c for c in configs}  # a topic named twice: the last one
        changed = [c for c in latest.values() if self.topics.get(c.topic_name) != c]
        self._apply_many(changed, [])
        log.info("%d topics created or updated at once (%d unchanged)", len(changed), len(latest) - len(changed))
        return changed

    def delete_many(self, topics: list[str]) -> list[str]:
        """Delete many topics at once (one fsync, one delta); the names that existed."""
        gone = [name for name in dict.fromkeys(topics) if name in self.topics]
        self._apply_many([], gone)
        log.info("%d topics deleted at once", len(gone))
        return gone

    def _apply_many(self, upserts: list[TopicConfig], deletes: list[str]) -> None:
        """Each change a new data version and a journal line, on disk (one fsync) before memory changes and
        before the caller acknowledges; the journal is compacted in the background now and then."""
        if not upserts and not deletes:
            return
        changes = []
        version = self.data_version
        for config in upserts:
            version += 1
            changes.append(put_change(config.topic_name, config.to_json(), version))
        for name in deletes:
            version += 1
            changes.append(delete_change(name, version))
        self._journal.append(changes)  # on disk first: a failed write changes nothing in memory
        for config in upserts:
            self.topics[config.topic_name] = config
        for name in deletes:
            del self.topics[name]
        self.data_version = version
        if self._changed_topics is not None:
            self._changed_topics.update([c.topic_name for c in upserts] + deletes)
        self._journal.maybe_compact(self.topics, self.data_version, TopicConfig.to_json)
        self._announce()

    def delete(self, topic: str) -> bool:
        if topic not in self.topics:
            return False
        self._apply_many([], [topic])
        log.info("deleted topic %s", topic)
        return True

    def for_send(
        self, topic: str, default_topic: str | None, default_queue_nums: int | None, queue_id: int
    ) -> TopicConfig:
        """The topic's config for a send, auto-creating it the RocketMQ way when allowed."""
        validate_topic(topic)
        config = self.topics.get(topic)
        if config is None and topic.startswith(RETRY_GROUP_PREFIX):
            config = self.upsert(TopicConfig(topic, 1, 1, PERM_READ_WRITE))
        if config is None:
            template = self.topics.get(default_topic or "") if default_topic else None
            if not self._auto_create or template is None or not template.perm & PERM_INHERIT:
                raise TopicNotExistError(
                    f"topic {topic} does not exist on this broker and auto-creation is "
                    f"{'off' if not self._auto_create else 'not allowed through ' + repr(default_topic)}; "
                    "create it with `krocket topic create`"
                )
            nums = min(default_queue_nums or template.write_queue_nums, template.write_queue_nums)
            config = self.upsert(TopicConfig(topic, nums, nums, PERM_READ_WRITE))
        if not config.perm & PERM_WRITE:
            raise NoPermissionError(f"topic {topic} is not writable on this broker")
        if not self.broker_permission & PERM_WRITE:
            raise NoPermissionError(
                f"this broker takes no writes now (brokerPermission {self.broker_permission}: its write permission "
                "was withdrawn for a drain or a restart); send to another broker of the cluster"
            )
        if not 0 <= queue_id < max(config.write_queue_nums, config.read_queue_nums):
            raise MessageIllegalError(
                f"queueId {queue_id} is out of range for topic {topic} ({config.write_queue_nums} write queues)"
            )
        return config

    def auto_create_enabled(self) -> bool:
        return self._auto_create
