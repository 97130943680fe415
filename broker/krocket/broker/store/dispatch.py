"""Dispatch: a record that is in the commit log reaches its consume queue and the index, and listeners hear of
it (RocketMQ's ``CommitLogDispatcher``s). One path for new appends, recovery and replication.

Prepared and rolled-back transaction records get no consume queue entry: they are not for consumers.
"""

from __future__ import annotations

from collections.abc import Callable

from krocket.common.message import PROPERTY_KEYS, PROPERTY_TAGS, PROPERTY_UNIQ_KEY, decode_properties, tags_code
from krocket.common.record import (
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_PREPARED,
    SYSFLAG_TRANSACTION_ROLLBACK,
    RecordMeta,
)

from .consume_queue import ConsumeQueue, ConsumeQueueTable
from .index_service import IndexService

# topic, queue id, max offset after, tags code (None: of several messages, as the send fast path reports them)
DispatchListener = Callable[[str, int, int, int | None], None]
TAGS_CODE_CACHE_SIZE = 4096


def is_consumable(sys_flag: int) -> bool:
    """Whether a record with ``sys_flag`` goes to a consume queue (not a prepared or rolled-back transaction)."""
    tx = sys_flag & SYSFLAG_TRANSACTION_MASK
    return tx != SYSFLAG_TRANSACTION_PREPARED and tx != SYSFLAG_TRANSACTION_ROLLBACK


def index_key(topic: str, key: str) -> str:
    """The index key of a message key (each of KEYS, and UNIQ_KEY) of ``topic``."""
    return f"{topic}#{key}"


def collect_index_entries(out: list[tuple[str, int]], topic: str, properties: dict[str, str], phy: int) -> None:
    """The index keys of one message (each of its KEYS and its UNIQ_KEY) into ``out``."""
    keys = properties.get(PROPERTY_KEYS)
    if keys:
        for key in keys.split(" "):
            if key:
                out.append((index_key(topic, key), phy))
    uniq = properties.get(PROPERTY_UNIQ_KEY)
    if uniq:
        out.append((index_key(topic, uniq), phy))


class Dispatcher:
    def __init__(self, queues: ConsumeQueueTable, index: IndexService, index_enabled: bool) -> None:
        self.queues = queues
        self.index = index
        self.index_enabled = index_enabled
        self.listeners: list[DispatchListener] = []
        self.last_store_timestamp = 0  # of the newest record dispatched (the checkpoint records it)
        self._tags_codes: dict[str, int] = {}
        # topic -> (queue id, store ms) -> due ms: the tag slot of a waiting (scheduled) entry holds its due time
        self.due_times: dict[str, Callable[[int, int], int]] = {}

    def tags_code(self, tags: str | None) -> int:
        """RocketMQ's tags hash code, cached (a topic uses few distinct tags)."""
        if not tags:
            return 0
        code = self._tags_codes.get(tags)
        if code is None:
            if len(self._tags_codes) > TAGS_CODE_CACHE_SIZE:
                self._tags_codes.clear()
            code = self._tags_codes[tags] = tags_code(tags)
        return code

    def queue_for(self, topic: str, queue_id: int, sys_flag: int) -> ConsumeQueue | None:
        """The consume queue a new record goes to (created on first use), None when it goes to none."""
        if not is_consumable(sys_flag):
            return None
        return self.queues.queues.get((topic, queue_id)) or self.queues.get_or_create(topic, queue_id)

    def dispatch(
        self, cq: ConsumeQueue | None, topic: str, phy: int, size: int, properties: dict[str, str], store_ts: int
    ) -> int:
        """A new record (appended at ``phy``) into ``cq`` and the index; returns its tags code."""
        self.last_store_timestamp = store_ts
        tcode = 0
        if cq is not None:
            due = self.due_times.get(topic) if self.due_times else None
            if due is not None:
                tcode = due(cq.queue_id, store_ts)
            else:
                tags = properties.get(PROPERTY_TAGS)
                if tags:
                    tcode = self._tags_codes.get(tags) or self.tags_code(tags)
            cq.append(phy, size, tcode)
        if self.index_enabled and properties:
            self.index_keys(topic, properties, phy, store_ts)
        return tcode

    def dispatch_run(
        self, cq: ConsumeQueue, topic: str, phy: int, sizes: list[int], properties: list[dict[str, str]], store_ts: int
    ) -> set[int]:
        """New records of one queue, contiguous from ``phy``, into ``cq`` and the index; returns their tags codes."""
        self.last_store_timestamp = store_ts
        tcodes: set[int] = set()
        entries: list[tuple[str, int]] = []
        index = self.index_enabled
        tags_codes = self._tags_codes
        cq_append = cq.append
        for size, props in zip(sizes, properties, strict=True):
            tcode = 0
            if props:
                tags = props.get(PROPERTY_TAGS)
                if tags:
                    tcode = tags_codes.get(tags) or self.tags_code(tags)
                if index:
                    collect_index_entries(entries, topic, props, phy)
            cq_append(phy, size, tcode)
            tcodes.add(tcode)
            phy += size
        if entries:
            self.index.put_many(entries, store_ts)
        return tcodes

    def index_keys(self, topic: str, properties: dict[str, str], phy: int, ts: int) -> None:
        entries: list[tuple[str, int]] = []
        collect_index_entries(entries, topic, properties, phy)
        if entries:
            self.index.put_many(entries, ts)

    def notify(self, topic: str, queue_id: int, max_offset: int, tcode: int | None) -> None:
        for cb in self.listeners:
            cb(topic, queue_id, max_offset, tcode)

    def redispatch(self, meta: RecordMeta, force_cq: bool, index: bool, notify: bool = False) -> None:
        """Dispatch a record found in the commit log (recovery, replication). ``force_cq``: put it in its queue
        even when the queue looks complete (past the checkpoint); ``index``: add its keys to the index."""
        props: dict[str, str] | None = None
        tcode = 0
        cq = None
        if is_consumable(meta.sys_flag):
            cq = self.queues.get(meta.topic, meta.queue_id)
            # Queues are created only for records past the checkpoint, so a deleted topic stays deleted.
            if cq is None and force_cq:
                cq = self.queues.get_or_create(meta.topic, meta.queue_id)
            if cq is not None and (force_cq or meta.queue_offset >= cq.max_offset):
                props = decode_properties(meta.properties)
                due = self.due_times.get(meta.topic)
                if due is not None:
                    tcode = due(meta.queue_id, meta.store_timestamp)
                else:
                    tcode = self.tags_code(props.get(PROPERTY_TAGS))
                cq.put_at(meta.queue_offset, meta.phy, meta.size, tcode)
            else:
                cq = None
        if index and self.index_enabled:
            if props is None:
                props = decode_properties(meta.properties)
            self.index_keys(meta.topic, props, meta.phy, meta.store_timestamp)
        self.last_store_timestamp = max(self.last_store_timestamp, meta.store_timestamp)
        if notify and cq is not None:
            self.notify(meta.topic, meta.queue_id, cq.max_offset, tcode)
