"""The state the send fast path reads and writes: ``FastContext`` (one per broker) and ``TopicEntry`` (one per
topic it serves). Both implementations of ``serve`` (``pure.py`` and the C extension ``_cserve``) take the same
objects; the glue (``FastSendPath``) fills them from the store before a call and writes them back after it.

Plain attributes, no properties: the C implementation reads them with one attribute lookup each per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from krocket.broker.store.consume_queue import ConsumeQueue, ConsumeQueueTable
from krocket.common.codes import KROCKET_VERSION
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TRANSACTION_PREPARED,
)
from krocket.common.record import topic_prefix

STOP_END = 0  # no whole frame left to serve (the buffer is exhausted, or an incomplete frame is next)
STOP_SLOW = 1  # the next frame goes to the slow path (today's code)
STOP_COMMIT = 2  # the commit log buffer is full: commit, then call again

# Properties that change where or how a message is stored (transactions, delays, 5.x timers): the slow path's.
TIMER_DELAY_MS = "TIMER_DELAY_MS"
SLOW_PROPERTY_KEYS = frozenset(
    (PROPERTY_TRANSACTION_PREPARED, PROPERTY_DELAY, PROPERTY_TIMER_DELIVER_MS, PROPERTY_TIMER_DELAY_SEC, TIMER_DELAY_MS)
)


class TopicEntry:
    """A topic the fast path may store to: a known, writable, plain (not system, retry or dead-letter) topic."""

    __slots__ = ("_table", "prefix", "queues", "topic", "write_queues")

    def __init__(self, topic: str, write_queues: int, queue_count: int, table: ConsumeQueueTable) -> None:
        self.topic = topic
        self.prefix = topic_prefix(topic)  # as the record stores it: one length byte, then the UTF-8 bytes
        self.write_queues = write_queues
        self._table = table
        # One slot per queue id (max(write, read) queue nums): the queue, or None until its first message, which
        # creates it (``make_queue``), as today's path creates queues.
        self.queues: list[ConsumeQueue | None] = [table.get(topic, queue_id) for queue_id in range(queue_count)]

    def make_queue(self, queue_id: int) -> ConsumeQueue:
        queue = self.queues[queue_id] = self._table.get_or_create(self.topic, queue_id)
        return queue


class FastContext:
    """Everything one ``serve`` call needs; see ``krocket.broker.fastpath`` for the contract."""

    __slots__ = (
        "born_host",
        "commit_limit",
        "count",
        "enabled",
        "index_enabled",
        "index_entries",
        "log_buf",
        "log_room",
        "log_wrote",
        "max_body",
        "max_frame",
        "missing_topic",
        "msg_id_prefix",
        "msg_id_prefix_bytes",
        "now",
        "roll_at",
        "rr",
        "slow_keys",
        "stop",
        "store_host",
        "tags_code",
        "topics",
        "topics_by_name",
        "touched",
        "version",
    )

    def __init__(
        self,
        log_buf: bytearray,
        store_host: bytes,
        max_frame: int,
        max_body: int,
        commit_limit: int,
        tags_code: Callable[[str], int],
        index_enabled: bool,
    ) -> None:
        self.enabled = True
        self.max_frame = max_frame
        self.max_body = max_body
        self.log_buf = log_buf
        self.log_wrote = 0
        self.log_room = 0
        self.roll_at: float = math.inf
        self.commit_limit = commit_limit
        self.now = 0
        self.born_host = store_host
        self.store_host = store_host
        self.msg_id_prefix = store_host.hex().upper()
        self.msg_id_prefix_bytes = self.msg_id_prefix.encode("ascii")
        self.version = KROCKET_VERSION
        self.rr = 0
        self.topics: dict[bytes, TopicEntry] = {}
        self.topics_by_name: dict[str, TopicEntry] = {}  # the same entries by name (the Python twin's lookup)
        self.slow_keys = SLOW_PROPERTY_KEYS
        self.tags_code = tags_code
        self.index_enabled = index_enabled
        self.index_entries: list[tuple[str, int]] = []
        self.touched: list[ConsumeQueue] = []
        self.count = 0
        self.stop = STOP_END
        self.missing_topic: bytes | None = None  # set by serve when it stopped at a topic it has no entry for

    def add_topic(self, entry: TopicEntry) -> None:
        self.topics[entry.topic.encode()] = entry
        self.topics_by_name[entry.topic] = entry

    def clear_topics(self) -> None:
        self.topics.clear()
        self.topics_by_name.clear()
