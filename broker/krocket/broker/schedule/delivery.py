"""The master's delivery of due messages: each waiting queue (a delay level, a timer queue) is read front to back
from its durable offset; an entry whose due time (its tag slot) has come is re-put to its real topic and queue (a
timer with time left goes on to its next, smaller timer queue). The offset moves past an entry only once its
re-put is in the commit log, and is persisted every second and at stop: after ``kill -9`` the entries since the
last persist are delivered again (at-least-once), none is lost. Nothing pending is held in memory: entries are
read in chunks from the consume queue, and the body only when due. Slaves never run this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from krocket.broker.store import MessageStore
from krocket.broker.store.consume_queue import ConsumeQueue
from krocket.common.errors import KrocketError
from krocket.common.message import PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC
from krocket.common.message_id import pack_host
from krocket.common.record import RecordError, decode_record
from krocket.common.topic import SCHEDULE_TOPIC, TIMER_TOPIC

from .levels import DelayLevels
from .offsets import DelayOffsets
from .routing import TIMER_QUEUES, delivered_properties, entry_due_ms, schedule_if_delayed

log = logging.getLogger(__name__)

WAITING_TOPICS = (SCHEDULE_TOPIC, TIMER_TOPIC)
CHUNK_ENTRIES = 256  # consume-queue entries read at once
MAX_PER_ROUND = 512  # re-puts per queue per round, so a large due backlog cannot hold the event loop long
MAX_ROUND = 2048  # re-puts per round in all
TICK_S = 0.02
PERSIST_EVERY_S = 1.0


def install_due_times(store: MessageStore, levels: DelayLevels) -> None:
    """Make the store's dispatch write due times into the tag slot of waiting entries (before ``store.open``,
    so recovery and replication compute them the same way)."""

    def due_time_of(topic: str) -> Callable[[int, int], int]:
        return lambda queue_id, store_ms: entry_due_ms(topic, queue_id, store_ms, levels) or 0

    for topic in WAITING_TOPICS:
        store.dispatcher.due_times[topic] = due_time_of(topic)


class ScheduleDelivery:
    def __init__(self, store: MessageStore, levels: DelayLevels, config_dir: Path) -> None:
        self.store = store
        self.levels = levels
        self.offsets = DelayOffsets(config_dir)
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None
        self._last_persist = 0.0
        self._candidate: tuple[int, dict[str, dict[str, int]]] | None = None  # (log end, offsets) to write
        # The waiting queues looked at each round: every level and timer queue, and any other found at start.
        self._lanes = {(SCHEDULE_TOPIC, q) for q in range(levels.max_level)} | {
            (TIMER_TOPIC, q) for q in range(TIMER_QUEUES)
        }
        self._lanes |= {(topic, q) for topic in WAITING_TOPICS for q in store.queue_ids(topic)}
        self._head: dict[tuple[str, int], tuple[int, int]] = {}  # lane -> (offset, due ms) of its first waiting entry

    def start(self) -> None:
        self.offsets.load()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop delivering; ``persist_all`` once the store is closed (flushed) writes the last offsets."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def persist_all(self) -> None:
        """Write every offset: only after the store flushed the re-puts (its close does)."""
        self.offsets.persist()

    def persist_flushed(self) -> None:
        """Write the offsets whose re-puts are on disk: the offsets as they were when the commit log ended at
        or before the flushed offset (a snapshot waits for the flush to pass it), so a crash of the machine
        never leaves an offset past a re-put it lost."""
        flushed = self.store.flushed_offset
        if self._candidate is not None and self._candidate[0] <= flushed:
            self.offsets.write(self._candidate[1])
            self._candidate = None
        if self._candidate is None and self.offsets.changed:
            self.store.commit()  # the re-puts into the files first: a killed process keeps them
            candidate = (self.store.max_phy_offset, self.offsets.snapshot())
            if candidate[0] <= flushed:
                self.offsets.write(candidate[1])
            else:
                self._candidate = candidate

    async def _run(self) -> None:
        while True:
            try:
                self.deliver_due(int(time.time() * 1000))
                now = time.monotonic()
                if now - self._last_persist >= PERSIST_EVERY_S:
                    self._last_persist = now
                    self.persist_flushed()
            except Exception:
                log.exception("delivery of delayed messages failed; retrying")
                await asyncio.sleep(1.0)
            await asyncio.sleep(TICK_S)

    def pending(self) -> int:
        """Entries not yet delivered (waiting, across all queues)."""
        total = 0
        for topic, queue_id, cq in self._queues():
            total += cq.max_offset - self._start(topic, queue_id, cq)
        return total

    def _queues(self) -> list[tuple[str, int, ConsumeQueue]]:
        table = self.store.dispatcher.queues
        out = []
        for topic, queue_id in sorted(self._lanes):
            cq = table.get(topic, queue_id)
            if cq is not None:
                out.append((topic, queue_id, cq))
        return out

    def _start(self, topic: str, queue_id: int, cq: ConsumeQueue) -> int:
        offset = self.offsets.get(topic, queue_id)
        return cq.min_offset if offset is None else max(offset, cq.min_offset)

    def deliver_due(self, now_ms: int) -> int:
        """Re-put the entries due at ``now_ms``, in queue order (at most MAX_ROUND a round); returns how many."""
        count = 0
        for topic, queue_id, cq in self._queues():
            count += self._deliver_queue(topic, queue_id, cq, now_ms)
            if count >= MAX_ROUND:
                break
        self.delivered += count
        return count

    def _deliver_queue(self, topic: str, queue_id: int, cq: ConsumeQueue, now_ms: int) -> int:
        offset = self._start(topic, queue_id, cq)
        if offset >= cq.max_offset:
            return 0
        head = self._head.get((topic, queue_id))
        if head is not None and head[0] == offset and head[1] > now_ms:
            return 0  # its first entry is not due yet: nothing behind it is either
        done = 0
        try:
            while offset < cq.max_offset and done < MAX_PER_ROUND:
                progressed = False
                for q, phy, _size, due in cq.iter_entries(offset, CHUNK_ENTRIES):
                    if due > now_ms or done >= MAX_PER_ROUND:
                        self._head[(topic, queue_id)] = (q, due)
                        return done
                    self._redeliver(topic, phy, now_ms)
                    offset = q + 1
                    done += 1
                    progressed = True
                if not progressed:
                    return done
        except KrocketError as exc:  # a full disk, say: this entry is tried again next round
            log.warning("cannot deliver a delayed message of %s/%d yet: %s", topic, queue_id, exc.message)
        finally:
            self.offsets.set(topic, queue_id, offset)
        return done

    def _redeliver(self, topic: str, phy: int, now_ms: int) -> None:
        raw = self.store.read_record(phy)
        if raw is None:
            log.warning("delayed message at %d is gone from the commit log (retention); skipped", phy)
            return
        try:
            msg = decode_record(raw, decompress=False)
        except RecordError as exc:
            log.warning("delayed message at %d is unreadable, skipped: %s", phy, exc)
            return
        props = msg.properties
        real_topic = props.get(PROPERTY_REAL_TOPIC)
        if not real_topic:
            log.warning("delayed message at %d has no %s; skipped", phy, PROPERTY_REAL_TOPIC)
            return
        try:
            real_queue = int(props.get(PROPERTY_REAL_QUEUE_ID, "0") or 0)
        except ValueError:
            log.warning("delayed message at %d has a bad %s; skipped", phy, PROPERTY_REAL_QUEUE_ID)
            return
        if topic == TIMER_TOPIC:  # the next hop, or its real topic once due
            to_topic, to_queue, to_props = schedule_if_delayed(props, real_topic, real_queue, self.levels, now_ms)
        else:
            to_topic, to_queue, to_props = real_topic, real_queue, delivered_properties(props)
        self.store.put_message(
            to_topic,
            to_queue,
            msg.body,
            to_props,
            flag=msg.flag,
            sys_flag=msg.sys_flag,
            born_timestamp=msg.born_timestamp,
            born_host=pack_host(msg.born_host),
            reconsume_times=msg.reconsume_times,
        )
