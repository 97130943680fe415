"""``MessageStore``: the store facade the broker uses (RocketMQ's ``DefaultMessageStore``).

Single-threaded by design: every method is called from one thread (the broker's event loop thread);
only ``fdatasync`` calls run in worker threads, on duplicated descriptors.

A full disk is the ``disk_space`` guard's business: puts are refused ("disk full") before ENOSPC can reach
the commit log, and an ENOSPC elsewhere refuses writes until space frees, while reads keep working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from krocket.common.errors import MessageIllegalError, ServiceNotAvailableError
from krocket.common.message import MAX_PROPERTIES_BYTES, encode_properties
from krocket.common.message_id import HOST_BYTES, offset_msg_id
from krocket.common.record import (
    BLANK_MIN_BYTES,
    RecordError,
    record_size,
    topic_prefix,
)

from .checkpoint import AbortMarker, StoreCheckpoint, StoreLock
from .commitlog import CommitLog, RunItem
from .config import StoreConfig
from .consume_queue import ConsumeQueueTable
from .disk_space import LOGICS_BYTES_PER_PUT, DiskFullError, DiskSpace, is_disk_full_error
from .dispatch import Dispatcher, DispatchListener
from .flush import FlushService, fdatasync_all
from .index_service import IndexService
from .reader import DEFAULT_MAX_BYTES, GetResult, GetStatus, MessageReader
from .recovery import Recovery, RecoveryReport
from .replica_records import ReplicaRecordSplitter
from .retention import RetentionService, UsageFn

log = logging.getLogger(__name__)

__all__ = ["GetResult", "GetStatus", "MessageStore", "PutResult"]


@dataclass(slots=True)
class PutResult:
    commit_log_offset: int
    queue_offset: int
    wrote_bytes: int
    store_timestamp: int
    store_host: bytes

    @property
    def end_offset(self) -> int:
        """The commit log offset just past the record: what ``wait_flushed`` takes."""
        return self.commit_log_offset + self.wrote_bytes

    @property
    def msg_id(self) -> str:
        """The offset message id (store host + commit log offset, 32 upper-case hex characters)."""
        return offset_msg_id(self.store_host, self.commit_log_offset)


class MessageStore:
    def __init__(self, config: StoreConfig, usage_fn: UsageFn | None = None) -> None:
        self.config = config
        root = config.root
        self.space = DiskSpace(
            root,
            config.disk_free_reserve_bytes,
            config.disk_warning_ratio,
            config.disk_check_interval_s,
            # A given usage function (tests) decides the used ratio; by default the guard's own statvfs does.
            ratio_fn=(lambda: self.retention.usage_fn(root)) if usage_fn is not None else None,
        )
        full = self.space.report_failure
        self.commitlog = CommitLog(config, self.space)
        self.queues = ConsumeQueueTable(
            config.consume_queue_dir, config.consume_queue_entries_per_file, config.consume_queue_pending_entries, full
        )
        self.index = IndexService(
            config.index_dir, config.index_hash_slots, config.index_max_entries, config.index_pending_entries, full
        )
        self.checkpoint = StoreCheckpoint(root / "checkpoint")
        self.abort_marker = AbortMarker(root / "abort")
        self.lock = StoreLock(root / "lock")
        self.retention = RetentionService(config, self.commitlog, self.queues, self.index, usage_fn, self.space)
        self.flusher = FlushService(config, self.commitlog, self._prepare_logics_flush)
        self.dispatcher = Dispatcher(self.queues, self.index, config.message_index_enable)
        self.reader = MessageReader(self.commitlog, self.queues, self.index)
        self.recovery_report: RecoveryReport | None = None
        self._topic_prefix: dict[str, bytes] = {}
        self._store_host = config.store_host
        self._max_body = config.max_message_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_scheduled = False
        self._commit_held = False
        self._replica_records = ReplicaRecordSplitter(config.commitlog_segment_bytes)
        self._opened = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> MessageStore:
        """Lock the store, load it and recover (synchronous; call before serving)."""
        root = self.config.root
        root.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            clean_stop = not self.abort_marker.exists()
            ckpt = self.checkpoint.load()
            self.commitlog.load()
            self.queues.load()
            self.index.load(clean_stop)
            self.abort_marker.create()
            recovery = Recovery(self.config, self.commitlog, self.queues, self.dispatcher.redispatch)
            self.recovery_report = recovery.run(clean_stop, ckpt if self.checkpoint.valid else None)
            self.commitlog.reload_positions()
            self.commitlog.flushed = self.commitlog.wrote
            self._opened = True
            self.flush()
            self.space.sample()  # a full disk refuses writes from the first put on, and says so now
        except BaseException:
            self._release_files()
            self.lock.release()
            raise
        return self

    def close(self) -> None:
        """Flush everything, write the checkpoint, remove the abort marker and unlock."""
        if not self._opened:
            return
        if self.flusher.running or self.retention.running:
            log.warning("closing the store with its background tasks running; call stop_background first")
            self.flusher.cancel()
            self.retention.cancel()
        self.flush()
        self._opened = False
        self._loop = None
        self.flusher.shutdown()
        self.commitlog.close()
        self.queues.close()
        complete = self.queues.all_written() and self.index.all_written() and not self.commitlog.stuck
        self.index.close()
        self.checkpoint.close()
        if complete:
            self.abort_marker.remove()
        else:
            log.warning("a full disk kept consume queue or index entries in memory; the next start recovers them")
        self.lock.release()

    def abandon(self) -> None:
        """Drop everything without flushing or checkpointing, as a killed process would (fault tests)."""
        self.flusher.cancel()
        self.retention.cancel()
        self.flusher.shutdown()
        self._opened = False
        self._release_files()
        self.lock.release()

    def _release_files(self) -> None:
        self.commitlog.abandon()
        self.queues.abandon()
        self.index.abandon()
        self.checkpoint.close()

    def __enter__(self) -> MessageStore:
        return self if self._opened else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_background(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the flush and retention tasks on ``loop`` (default: the running loop); from then on
        buffered appends are also written out once per loop iteration."""
        self._loop = loop or asyncio.get_running_loop()
        self.flusher.start(self._loop)
        self.retention.start(self._loop)

    async def stop_background(self) -> None:
        await self.retention.stop()
        await self.flusher.stop()
        self._loop = None
        self.commitlog.commit()

    # -- flushing --------------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write buffered appends into the files (page cache); after this a killed process loses nothing.
        Runs before acknowledgements leave: raises ``DiskFullError`` when a full disk kept records it has
        not raised for before out of the files (they must not be acknowledged)."""
        self._commit_scheduled = self._commit_held = False
        self.commitlog.commit_for_ack()

    def hold_commit(self) -> None:
        """The caller commits before it yields to the event loop (the broker does after each batch of
        requests): puts until then schedule no commit of their own, which saves a loop iteration each."""
        self._commit_held = True

    def flush(self) -> None:
        """Blocking: commit log, consume queues, index and checkpoint, all on disk."""
        target, fds = self.commitlog.sync_targets()
        fdatasync_all(fds)
        self.commitlog.mark_flushed(target)
        fds, finish = self._prepare_logics_flush()
        fdatasync_all(fds)
        finish()

    def _prepare_logics_flush(self) -> tuple[list[int], Callable[[], None]]:
        """Write out consume queue and index buffers; the checkpoint follows once they are synced."""
        dispatched = self.commitlog.wrote
        ts = self.dispatcher.last_store_timestamp
        fds = self.queues.sync_fds() + self.index.sync_fds()
        # Entries a full disk keeps in memory are not claimed: recovery after a crash rebuilds them.
        logics_written = self.queues.all_written() and self.index.all_written()
        data = self.checkpoint.data
        physic_offset = self.commitlog.flushed
        ckpt = self.checkpoint
        if not fds and data.physic_offset == physic_offset and (data.logics_offset == dispatched or not logics_written):
            return fds, lambda: None  # idle: nothing new to record
        space = self.space

        def finish() -> None:
            data.physic_offset = physic_offset
            if logics_written:
                data.logics_offset = data.index_offset = dispatched
                if ts:
                    data.logics_msg_timestamp = data.index_msg_timestamp = ts
            if ts:
                data.physic_msg_timestamp = ts
            if ckpt.fd >= 0:
                try:
                    ckpt.write(sync=True)
                except OSError as exc:
                    if not is_disk_full_error(exc):
                        raise
                    space.report_failure("the checkpoint", exc)

        return fds, finish

    @property
    def flushed_offset(self) -> int:
        return self.commitlog.flushed

    async def wait_flushed(self, end_offset: int) -> None:
        """SYNC_FLUSH: resolve once an fdatasync covering ``end_offset`` is done (group commit); raises
        ``FlushDiskTimeoutError`` after ``sync_flush_timeout_s``. ASYNC_FLUSH: returns at once."""
        if not self.config.sync_flush:
            return
        await self.flusher.wait_flushed(end_offset)

    def on_flushed(self, listener: Callable[[int], None]) -> None:
        """``listener(flushed_offset)`` after every commit log flush round (parked replies)."""
        self.flusher.add_flushed_listener(listener)

    def request_flush(self) -> None:
        """SYNC_FLUSH: ask the group commit for a round soon (a no-op until ``start_background``)."""
        self.flusher.request_flush()

    def _schedule_commit(self) -> None:
        loop = self._loop
        if loop is not None and not self._commit_scheduled:
            self._commit_scheduled = True
            if not self._commit_held:
                loop.call_soon(self.commit)

    @property
    def is_open(self) -> bool:
        return self._opened

    # -- writing ---------------------------------------------------------------------------------------
    def check_writable(self, cost: int = LOGICS_BYTES_PER_PUT) -> None:
        """Raise ``ServiceNotAvailableError`` (``DiskFullError`` for a full disk) unless a write of about
        ``cost`` bytes outside reserved commit log segments can be taken now; charges them."""
        if not self._opened:
            raise ServiceNotAvailableError("the message store is not open")
        if self.commitlog.stuck:
            self._refuse_while_stuck()
        self.space.admit(cost)

    def _refuse_while_stuck(self) -> None:
        """Records a full disk kept out of the commit log go first: no new ones behind them until then."""
        self.commitlog.commit()
        if self.commitlog.stuck:
            raise DiskFullError("disk full: records wait in memory for room in the commit log; writes are refused")

    def _prefix(self, topic: str) -> bytes:
        prefix = self._topic_prefix.get(topic)
        if prefix is None:
            try:
                prefix = self._topic_prefix[topic] = topic_prefix(topic)
            except RecordError as exc:
                raise MessageIllegalError(str(exc)) from None
        return prefix

    def put_message(
        self,
        topic: str,
        queue_id: int,
        body: bytes,
        properties: dict[str, str],
        flag: int = 0,
        sys_flag: int = 0,
        born_timestamp: int = 0,
        born_host: bytes = b"",
        reconsume_times: int = 0,
    ) -> PutResult:
        """Append one message and dispatch it to its consume queue and the index (the hot path: kept flat)."""
        if not self._opened:
            raise ServiceNotAvailableError("the message store is not open")
        if len(body) > self._max_body:
            raise MessageIllegalError(f"message body is {len(body)} bytes; at most {self._max_body} allowed")
        prefix = self._topic_prefix.get(topic) or self._prefix(topic)
        props = encode_properties(properties)
        if len(props) > MAX_PROPERTIES_BYTES:
            raise MessageIllegalError(
                f"message properties are {len(props)} bytes; at most {MAX_PROPERTIES_BYTES} allowed"
            )
        store_host = self._store_host
        if len(born_host) != HOST_BYTES:
            born_host = store_host
        total = record_size(len(body), len(prefix) - 1, len(props))
        commitlog = self.commitlog
        if commitlog.stuck:
            self._refuse_while_stuck()
        self.space.admit(LOGICS_BYTES_PER_PUT if commitlog.tail_reserved else LOGICS_BYTES_PER_PUT + total)
        dispatcher = self.dispatcher
        cq = dispatcher.queue_for(topic, queue_id, sys_flag)
        qoff = cq.max_offset if cq is not None else 0
        now = int(time.time() * 1000)
        phy = commitlog.append_message(
            total,
            queue_id,
            flag,
            qoff,
            sys_flag,
            born_timestamp or now,
            born_host,
            now,
            store_host,
            reconsume_times,
            body,
            prefix,
            props,
        )
        tcode = dispatcher.dispatch(cq, topic, phy, total, properties, now)
        self._schedule_commit()
        if cq is not None and dispatcher.listeners:
            dispatcher.notify(topic, queue_id, qoff + 1, tcode)
        return PutResult(phy, qoff, total, now, store_host)

    def put_messages(
        self,
        topic: str,
        queue_id: int,
        items: list[tuple[bytes, dict[str, str], int]],
        sys_flag: int = 0,
        born_timestamp: int = 0,
        born_host: bytes = b"",
        raw_properties: Sequence[bytes] | None = None,
    ) -> list[PutResult]:
        """Append a batch of (body, properties, flag) to one queue with consecutive queue offsets, as one
        contiguous write; a batch larger than what a segment has left is split at record boundaries.
        ``raw_properties``, when given, are the items' properties as the producer encoded them (one per item):
        they are stored as they are, as RocketMQ does with a batch, instead of encoding ``properties`` again.
        Dispatch listeners hear once per batch and tags code, with the queue's end after the batch."""
        self.check_writable(LOGICS_BYTES_PER_PUT * max(len(items), 1))
        if not items:
            return []
        prefix = self._prefix(topic)
        store_host = self._store_host
        if len(born_host) != HOST_BYTES:
            born_host = store_host
        if raw_properties is not None and len(raw_properties) != len(items):
            raise ValueError("raw_properties must have one entry per item")
        encoded: list[RunItem] = []
        max_body = self._max_body
        topic_len = len(prefix) - 1
        for pos, (body, properties, flag) in enumerate(items):
            if len(body) > max_body:
                raise MessageIllegalError(f"message body is {len(body)} bytes; at most {max_body} allowed")
            props = raw_properties[pos] if raw_properties is not None else encode_properties(properties)
            if len(props) > MAX_PROPERTIES_BYTES:
                raise MessageIllegalError(
                    f"message properties are {len(props)} bytes; at most {MAX_PROPERTIES_BYTES} allowed"
                )
            encoded.append((record_size(len(body), topic_len, len(props)), body, props, flag))
        commitlog = self.commitlog
        batch_bytes = sum(item[0] for item in encoded)
        if not commitlog.tail_reserved:
            self.space.admit(batch_bytes)
        if batch_bytes + BLANK_MIN_BYTES > commitlog.tail_room:  # it rolls: no half-stored batch on a full disk
            self.space.ensure_room(commitlog.segment_bytes, "a new commit log segment")
        dispatcher = self.dispatcher
        limit = commitlog.segment_bytes - BLANK_MIN_BYTES
        cq = self.queues.get_or_create(topic, queue_id)
        results: list[PutResult] = []
        tcodes: set[int] = set()
        i, n = 0, len(encoded)
        while i < n:
            j, run = i, 0  # the longest run from i that fits one segment
            while j < n and run + encoded[j][0] <= limit:
                run += encoded[j][0]
                j += 1
            if j == i:
                commitlog.reserve(encoded[i][0])  # raises: the record fits no segment
            now = int(time.time() * 1000)
            qoff = cq.max_offset
            sizes = [item[0] for item in encoded[i:j]]
            phy = commitlog.append_run(
                encoded[i:j], queue_id, qoff, sys_flag, born_timestamp or now, born_host, now, store_host, prefix
            )
            tcodes |= dispatcher.dispatch_run(cq, topic, phy, sizes, [item[1] for item in items[i:j]], now)
            for size in sizes:
                results.append(PutResult(phy, qoff, size, now, store_host))
                phy += size
                qoff += 1
            i = j
        self._schedule_commit()
        end = cq.max_offset
        for tcode in tcodes:
            dispatcher.notify(topic, queue_id, end, tcode)
        return results

    def append_raw(self, data: bytes, at_offset: int) -> int:
        """Append commit log bytes copied from a master unchanged, then dispatch the whole records they
        complete. ``at_offset`` must equal ``max_phy_offset``. Returns the new ``max_phy_offset``."""
        if not self._opened:
            raise ServiceNotAvailableError("the message store is not open")
        commitlog = self.commitlog
        if commitlog.wrote == 0 and not commitlog.files.segments and at_offset:
            if at_offset % commitlog.segment_bytes:
                raise MessageIllegalError(f"an empty store can only start at a segment boundary, not {at_offset}")
            commitlog.wrote = commitlog.committed = commitlog.flushed = at_offset
        if at_offset != commitlog.wrote:
            raise MessageIllegalError(f"raw append at {at_offset}, but the commit log ends at {commitlog.wrote}")
        # A full disk refuses before anything is split or written, so the master's retry finds the log as it was.
        self.check_writable(LOGICS_BYTES_PER_PUT if commitlog.tail_reserved else LOGICS_BYTES_PER_PUT + len(data))
        if len(data) > commitlog.tail_room:
            segments = -(-(len(data) - commitlog.tail_room) // commitlog.segment_bytes)
            self.space.ensure_room(segments * commitlog.segment_bytes, "new commit log segments")
        metas = self._replica_records.split(at_offset, data)
        commitlog.append_raw(data)
        redispatch = self.dispatcher.redispatch
        for meta in metas:
            redispatch(meta, True, True, notify=True)
        return commitlog.wrote

    def on_dispatched(self, callback: DispatchListener) -> None:
        """Call ``callback(topic, queue_id, max_offset, tags_code)`` after each message reaches its queue."""
        self.dispatcher.listeners.append(callback)

    # -- reading ---------------------------------------------------------------------------------------
    def get_messages(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        max_msgs: int = 32,
        max_bytes: int = DEFAULT_MAX_BYTES,
        tag_codes: set[int] | None = None,
    ) -> GetResult:
        """Records of a queue from ``offset``, concatenated exactly as stored (a PULL response body)."""
        return self.reader.get_messages(topic, queue_id, offset, max_msgs, max_bytes, tag_codes)

    def max_offset(self, topic: str, queue_id: int) -> int:
        return self.reader.max_offset(topic, queue_id)

    def min_offset(self, topic: str, queue_id: int) -> int:
        return self.reader.min_offset(topic, queue_id)

    def offset_by_time(self, topic: str, queue_id: int, ts_ms: int) -> int:
        """The first queue offset whose message was stored at or after ``ts_ms`` (``max_offset`` if none)."""
        return self.reader.offset_by_time(topic, queue_id, ts_ms)

    def earliest_store_time(self, topic: str, queue_id: int) -> int:
        """Store timestamp of the oldest message still in the queue, or -1."""
        return self.reader.earliest_store_time(topic, queue_id)

    @property
    def max_phy_offset(self) -> int:
        return self.commitlog.max_offset

    @property
    def min_phy_offset(self) -> int:
        return self.commitlog.min_offset

    def read_record(self, phy_offset: int) -> bytes | None:
        return self.commitlog.read_record(phy_offset)

    def read_raw(self, phy_offset: int, max_bytes: int) -> bytes:
        """Commit log bytes from ``phy_offset`` (within one segment): what a master streams to a slave."""
        return self.commitlog.read(phy_offset, max_bytes)

    def query_by_key(
        self, topic: str, key: str, max_num: int = 32, begin_ts: int = 0, end_ts: int = 2**63 - 1
    ) -> list[bytes]:
        """Records of ``topic`` whose KEYS or unique key is ``key``, stored in [begin_ts, end_ts], newest first."""
        return self.reader.query_by_key(topic, key, max_num, begin_ts, end_ts)

    # -- topics ----------------------------------------------------------------------------------------
    def delete_topic(self, topic: str) -> int:
        """Drop the consume queues of ``topic``; returns how many were dropped.

        A checkpoint is written at once, so recovery does not rebuild the queues from older records.
        """
        return self.delete_topics([topic])

    def delete_topics(self, topics: list[str]) -> int:
        """Drop the consume queues of every one of ``topics`` (one checkpoint for all); how many were dropped."""
        dropped = self.queues.delete_topics(topics)
        if not dropped:
            return 0
        fds, finish = self._prepare_logics_flush()
        fdatasync_all(fds)
        finish()
        return dropped

    def topics_with_queues(self) -> dict[str, list[int]]:
        return self.queues.topics()

    def queue_ids(self, topic: str) -> list[int]:
        return self.queues.topics().get(topic, [])

    # -- disk ------------------------------------------------------------------------------------------
    def is_disk_full(self) -> bool:
        return self.space.full or self.retention.is_disk_full()

    def run_retention(self, now: float | None = None) -> int:
        """One retention round (the background task runs it every ``retention_interval_s``)."""
        return self.retention.run_once(now)

    def stats(self) -> dict[str, int | float]:
        return {
            "max_phy_offset": self.commitlog.max_offset,
            "min_phy_offset": self.commitlog.min_offset,
            "flushed_offset": self.commitlog.flushed,
            "committed_offset": self.commitlog.committed,
            "disk_used_ratio": self.retention.used_ratio(),
            "commitlog_segments": self.commitlog.segment_count(),
            "consume_queues": len(self.queues.queues),
            "index_files": len(self.index.files),
            "sync_flush_rounds": self.flusher.sync_rounds,
            "commitlog_stuck": int(self.commitlog.stuck),
            **self.space.stats(),
        }
