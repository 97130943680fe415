"""``MessageStore``: the store facade the broker uses (RocketMQ's ``DefaultMessageStore``).

Single-threaded by design: every method is called from one thread (the broker's event loop thread);
only ``fdatasync`` calls run in worker threads, on duplicated descriptors.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from krocket.common.errors import MessageIllegalError, ServiceNotAvailableError
from krocket.common.message import (
    BLANK_MAGIC,
    MAGIC_V1,
    PROPERTY_KEYS,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    decode_properties,
    offset_msg_id,
    tags_code,
)

from .checkpoint import AbortMarker, StoreCheckpoint, StoreLock
from .commitlog import (
    BLANK_MIN_BYTES,
    RECORD,
    RECORD_MIN_BYTES,
    TOTAL_MAGIC,
    BadRecord,
    CommitLog,
    RecordMeta,
    parse_record,
)
from .config import StoreConfig
from .consume_queue import ConsumeQueueTable
from .flush import FlushService, fdatasync_all
from .index_service import IndexService
from .recovery import Recovery, RecoveryReport
from .retention import RetentionService, UsageFn

log = logging.getLogger(__name__)

I16 = struct.Struct(">h")
TRANSACTION_TYPE_MASK = 0xC
TRANSACTION_PREPARED = 0x4
TRANSACTION_ROLLBACK = 0xC
MAX_PROPERTIES_BYTES = 32767
DEFAULT_MAX_BYTES = 1024 * 1024
FILTER_SCAN_ENTRIES = 800  # entries scanned per pull when a tag filter skips some (RocketMQ: 16000 bytes)

DispatchListener = Callable[[str, int, int, int], None]  # topic, queue id, max offset after, tags code


def _collect_index_entries(out: list[tuple[str, int]], topic: str, properties: dict[str, str], phy: int) -> None:
    """The index keys of one message (each of its KEYS and its UNIQ_KEY, as ``topic#key``) into ``out``."""
    keys = properties.get(PROPERTY_KEYS)
    if keys:
        for key in keys.split(" "):
            if key:
                out.append((f"{topic}#{key}", phy))
    uniq = properties.get(PROPERTY_UNIQ_KEY)
    if uniq:
        out.append((f"{topic}#{uniq}", phy))


class GetStatus(enum.Enum):
    FOUND = "FOUND"
    NO_MATCHED_MESSAGE = "NO_MATCHED_MESSAGE"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_FOUND_NULL = "OFFSET_FOUND_NULL"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"


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


@dataclass(slots=True)
class GetResult:
    status: GetStatus
    body: bytes
    count: int
    next_begin_offset: int
    min_offset: int
    max_offset: int


class MessageStore:
    def __init__(self, config: StoreConfig, usage_fn: UsageFn | None = None) -> None:
        self.config = config
        root = config.root
        self.commitlog = CommitLog(config)
        self.queues = ConsumeQueueTable(
            config.consume_queue_dir, config.consume_queue_entries_per_file, config.consume_queue_pending_entries
        )
        self.index = IndexService(
            config.index_dir, config.index_hash_slots, config.index_max_entries, config.index_pending_entries
        )
        self.checkpoint = StoreCheckpoint(root / "checkpoint")
        self.abort_marker = AbortMarker(root / "abort")
        self.lock = StoreLock(root / "lock")
        self.retention = RetentionService(config, self.commitlog, self.queues, self.index, usage_fn)
        self.flusher = FlushService(config, self.commitlog, self._prepare_logics_flush, self.retention.run_once)
        self.recovery_report: RecoveryReport | None = None
        self._listeners: list[DispatchListener] = []
        self._topic_prefix: dict[str, bytes] = {}
        self._tags_codes: dict[str, int] = {}
        self._store_host = config.store_host
        self._max_body = config.max_message_bytes
        self._index_enabled = config.message_index_enable
        self._disk_check_interval = config.disk_check_interval_s
        self._disk_checked_at = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_scheduled = False
        self._commit_held = False
        self._last_store_ts = 0
        self._reput_tail = bytearray()  # bytes of a record that ``append_raw`` has only part of
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
            recovery = Recovery(self.config, self.commitlog, self.queues, self._redispatch)
            self.recovery_report = recovery.run(clean_stop, ckpt if self.checkpoint.valid else None)
            self.commitlog.reload_positions()
            self.commitlog.flushed = self.commitlog.wrote
            self._opened = True
            self.flush()
        except BaseException:
            self._release_files()
            self.lock.release()
            raise
        return self

    def close(self) -> None:
        """Flush everything, write the checkpoint, remove the abort marker and unlock."""
        if not self._opened:
            return
        if self.flusher.running:
            log.warning("closing the store with its background tasks running; call stop_background first")
            self.flusher.cancel()
        self.flush()
        self._opened = False
        self._loop = None
        self.flusher.shutdown()
        self.commitlog.close()
        self.queues.close()
        self.index.close()
        self.checkpoint.close()
        self.abort_marker.remove()
        self.lock.release()

    def abandon(self) -> None:
        """Drop everything without flushing or checkpointing, as a killed process would (fault tests)."""
        self.flusher.cancel()
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

    async def stop_background(self) -> None:
        await self.flusher.stop()
        self._loop = None
        self.commitlog.commit()

    # -- flushing --------------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write buffered appends into the files (page cache); after this a killed process loses nothing."""
        self._commit_scheduled = self._commit_held = False
        self.commitlog.commit()

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
        ts = self._last_store_ts
        fds = self.queues.sync_fds() + self.index.sync_fds()
        data = self.checkpoint.data
        physic_offset = self.commitlog.flushed
        ckpt = self.checkpoint
        if not fds and data.logics_offset == dispatched and data.physic_offset == physic_offset:
            return fds, lambda: None  # idle: nothing new to record

        def finish() -> None:
            data.physic_offset = physic_offset
            data.logics_offset = data.index_offset = dispatched
            if ts:
                data.physic_msg_timestamp = data.logics_msg_timestamp = data.index_msg_timestamp = ts
            if ckpt.fd >= 0:
                ckpt.write(sync=True)

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

    def _schedule_commit(self) -> None:
        loop = self._loop
        if loop is not None and not self._commit_scheduled:
            self._commit_scheduled = True
            if not self._commit_held:
                loop.call_soon(self.commit)

    # -- writing ---------------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if not self._opened:
            raise ServiceNotAvailableError("the message store is not open")
        now = time.monotonic()
        if now - self._disk_checked_at >= self._disk_check_interval or self._disk_check_interval <= 0:
            self._disk_checked_at = now
            ratio = self.retention.used_ratio(fresh=True)
            if ratio > self.config.disk_warning_ratio:
                self._disk_checked_at = float("-inf")  # look again on the next put
                raise ServiceNotAvailableError(
                    f"disk full: {ratio:.1%} of the disk holding {self.config.root} is used, over "
                    f"disk_warning_ratio {self.config.disk_warning_ratio:.0%}; writes are refused until "
                    f"retention frees space"
                )

    def _prefix(self, topic: str) -> bytes:
        prefix = self._topic_prefix.get(topic)
        if prefix is None:
            raw = topic.encode()
            if not raw or len(raw) > 255:
                raise MessageIllegalError(f"topic {topic!r} must be 1 to 255 bytes long")
            prefix = self._topic_prefix[topic] = bytes((len(raw),)) + raw
        return prefix

    def _tags_code(self, tags: str | None) -> int:
        if not tags:
            return 0
        code = self._tags_codes.get(tags)
        if code is None:
            if len(self._tags_codes) > 4096:
                self._tags_codes.clear()
            code = self._tags_codes[tags] = tags_code(tags)
        return code

    def _index_keys(self, topic: str, properties: dict[str, str], phy: int, ts: int) -> None:
        entries: list[tuple[str, int]] = []
        _collect_index_entries(entries, topic, properties, phy)
        if entries:
            self.index.put_many(entries, ts)

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
        now_mono = time.monotonic()
        if not self._opened or now_mono - self._disk_checked_at >= self._disk_check_interval:
            self._check_writable()
        if len(body) > self._max_body:
            raise MessageIllegalError(f"message body is {len(body)} bytes; at most {self._max_body} allowed")
        prefix = self._topic_prefix.get(topic) or self._prefix(topic)
        props = "".join([f"{k}\x01{v}\x02" for k, v in properties.items()]).encode() if properties else b""
        if len(props) > MAX_PROPERTIES_BYTES:
            raise MessageIllegalError(f"message properties are {len(props)} bytes; at most 32767 allowed")
        store_host = self._store_host
        if len(born_host) != 8:
            born_host = store_host
        total = 90 + len(body) + len(prefix) + len(props)
        commitlog = self.commitlog
        phy = commitlog.wrote if total + BLANK_MIN_BYTES <= commitlog._tail_room else commitlog.reserve(total)
        now = int(time.time() * 1000)
        tx = sys_flag & TRANSACTION_TYPE_MASK
        if tx != TRANSACTION_PREPARED and tx != TRANSACTION_ROLLBACK:
            cq = self.queues.queues.get((topic, queue_id)) or self.queues.get_or_create(topic, queue_id)
            qoff = cq.max_offset
        else:
            cq = None
            qoff = 0
        buf = commitlog._buf
        buf += RECORD.pack(
            total,
            MAGIC_V1,
            zlib.crc32(body) & 0x7FFFFFFF,
            queue_id,
            flag,
            qoff,
            phy,
            sys_flag,
            born_timestamp or now,
            born_host,
            now,
            store_host,
            reconsume_times,
            0,
            len(body),
        )
        buf += body
        buf += prefix
        buf += I16.pack(len(props))
        buf += props
        commitlog.wrote = phy + total
        commitlog._tail_room -= total
        if len(buf) >= commitlog._commit_limit:
            commitlog.commit()
        self._last_store_ts = now
        tcode = 0
        if cq is not None:
            tags = properties.get(PROPERTY_TAGS)
            if tags:
                tcode = self._tags_codes.get(tags) or self._tags_code(tags)
            cq.append(phy, total, tcode)
        if self._index_enabled and properties:
            self._index_keys(topic, properties, phy, now)
        self._schedule_commit()
        if cq is not None and self._listeners:
            for cb in self._listeners:
                cb(topic, queue_id, qoff + 1, tcode)
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
        self._check_writable()
        if not items:
            return []
        prefix = self._prefix(topic)
        store_host = self._store_host
        if len(born_host) != 8:
            born_host = store_host
        fixed = 90 + len(prefix)
        encoded: list[tuple[int, bytes, bytes, dict[str, str], int]] = []
        if raw_properties is not None and len(raw_properties) != len(items):
            raise ValueError("raw_properties must have one entry per item")
        max_body = self._max_body
        for pos, (body, properties, flag) in enumerate(items):
            if len(body) > max_body:
                raise MessageIllegalError(f"message body is {len(body)} bytes; at most {max_body} allowed")
            if raw_properties is not None:
                props = raw_properties[pos]
            else:
                props = "".join([f"{k}\x01{v}\x02" for k, v in properties.items()]).encode() if properties else b""
            if len(props) > MAX_PROPERTIES_BYTES:
                raise MessageIllegalError(f"message properties are {len(props)} bytes; at most 32767 allowed")
            encoded.append((fixed + len(body) + len(props), body, props, properties, flag))
        commitlog = self.commitlog
        limit = commitlog.segment_bytes - BLANK_MIN_BYTES
        cq = self.queues.get_or_create(topic, queue_id)
        index = self._index_enabled
        listeners = self._listeners
        pack = RECORD.pack
        results: list[PutResult] = []
        index_entries: list[tuple[str, int]] = []
        tcodes: set[int] = set()
        tags_codes = self._tags_codes
        crc32 = zlib.crc32
        i16 = I16.pack
        cq_append = cq.append
        i, n = 0, len(encoded)
        while i < n:
            j, run = i, 0  # the longest run from i that fits one segment
            while j < n and run + encoded[j][0] <= limit:
                run += encoded[j][0]
                j += 1
            if j == i:
                commitlog.reserve(encoded[i][0])  # raises: the record fits no segment
            phy = commitlog.reserve(run)
            now = int(time.time() * 1000)
            born = born_timestamp or now
            out = bytearray()
            for total, body, props, properties, flag in encoded[i:j]:
                qoff = cq.max_offset
                out += pack(
                    total,
                    MAGIC_V1,
                    crc32(body) & 0x7FFFFFFF,
                    queue_id,
                    flag,
                    qoff,
                    phy,
                    sys_flag,
                    born,
                    born_host,
                    now,
                    store_host,
                    0,
                    0,
                    len(body),
                )
                out += body
                out += prefix
                out += i16(len(props))
                out += props
                tcode = 0
                if properties:
                    tags = properties.get(PROPERTY_TAGS)
                    if tags:
                        tcode = tags_codes.get(tags) or self._tags_code(tags)
                    if index:
                        _collect_index_entries(index_entries, topic, properties, phy)
                cq_append(phy, total, tcode)
                tcodes.add(tcode)
                results.append(PutResult(phy, qoff, total, now, store_host))
                phy += total
            commitlog.append(out)
            if index_entries:
                self.index.put_many(index_entries, now)
                index_entries.clear()
            self._last_store_ts = now
            i = j
        self._schedule_commit()
        end = cq.max_offset
        for cb in listeners:
            for tcode in tcodes:
                cb(topic, queue_id, end, tcode)
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
        metas = self._parse_raw(at_offset, data)
        commitlog.append_raw(data)
        for meta in metas:
            self._redispatch(meta, True, True, notify=True)
        return commitlog.wrote

    def _parse_raw(self, at_offset: int, data: bytes) -> list[RecordMeta]:
        """Validate whole records in (carried tail + data); keeps an incomplete last record as the tail."""
        seg_bytes = self.commitlog.segment_bytes
        buf = bytes(self._reput_tail) + data if self._reput_tail else data
        base = at_offset - len(self._reput_tail)
        metas: list[RecordMeta] = []
        pos = 0
        n = len(buf)
        while n - pos >= BLANK_MIN_BYTES:
            phy = base + pos
            total, magic = TOTAL_MAGIC.unpack_from(buf, pos)
            if magic == BLANK_MAGIC:
                if total != seg_bytes - phy % seg_bytes:
                    raise MessageIllegalError(
                        f"raw data has a BLANK record at {phy} that does not end a "
                        f"segment of {seg_bytes} bytes (segment sizes differ?)"
                    )
                if n - pos < total:
                    break
                pos += total
                continue
            if total < RECORD_MIN_BYTES:
                raise MessageIllegalError(f"raw data has an impossible record size {total} at {phy}")
            if n - pos < total:
                break
            try:
                metas.append(parse_record(buf, pos, phy, False))
            except BadRecord as exc:
                raise MessageIllegalError(f"raw data is not valid commit log records: {exc}") from None
            pos += total
        self._reput_tail = bytearray(buf[pos:])
        return metas

    def _redispatch(self, meta: RecordMeta, force_cq: bool, index: bool, notify: bool = False) -> None:
        """Dispatch a record that is already in the commit log (recovery and replication)."""
        tx = meta.sys_flag & TRANSACTION_TYPE_MASK
        props: dict[str, str] | None = None
        tcode = 0
        cq = None
        if tx != TRANSACTION_PREPARED and tx != TRANSACTION_ROLLBACK:
            cq = self.queues.get(meta.topic, meta.queue_id)
            # Queues are created only for records past the checkpoint, so a deleted topic stays deleted.
            if cq is None and force_cq:
                cq = self.queues.get_or_create(meta.topic, meta.queue_id)
            if cq is not None and (force_cq or meta.queue_offset >= cq.max_offset):
                props = decode_properties(meta.properties)
                tcode = self._tags_code(props.get(PROPERTY_TAGS))
                cq.put_at(meta.queue_offset, meta.phy, meta.size, tcode)
            else:
                cq = None
        if index and self._index_enabled:
            if props is None:
                props = decode_properties(meta.properties)
            self._index_keys(meta.topic, props, meta.phy, meta.store_timestamp)
        self._last_store_ts = max(self._last_store_ts, meta.store_timestamp)
        if notify and cq is not None:
            for cb in self._listeners:
                cb(meta.topic, meta.queue_id, cq.max_offset, tcode)

    def on_dispatched(self, callback: DispatchListener) -> None:
        """Call ``callback(topic, queue_id, max_offset, tags_code)`` after each message reaches its queue."""
        self._listeners.append(callback)

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
        cq = self.queues.get(topic, queue_id)
        if cq is None or cq.max_offset == 0:
            return GetResult(GetStatus.NO_MESSAGE_IN_QUEUE, b"", 0, 0, 0, 0)
        lo, hi = cq.min_offset, cq.max_offset
        if offset < lo:
            return GetResult(GetStatus.OFFSET_TOO_SMALL, b"", 0, lo, lo, hi)
        if offset == hi:
            return GetResult(GetStatus.OFFSET_OVERFLOW_ONE, b"", 0, offset, lo, hi)
        if offset > hi:
            return GetResult(GetStatus.OFFSET_OVERFLOW_BADLY, b"", 0, hi, lo, hi)
        scan = max(max_msgs, FILTER_SCAN_ENTRIES) if tag_codes is not None else max_msgs
        min_phy = self.commitlog.min_offset
        picks: list[tuple[int, int, int]] = []  # queue offset, commit log offset, size
        next_q = offset
        total = 0
        filtered = found_null = 0
        for q, phy, size, tags in cq.iter_entries(offset, scan):
            if len(picks) >= max_msgs or (picks and total + size > max_bytes):
                break
            next_q = q + 1
            if phy < min_phy or size <= 0:
                found_null += 1
                continue
            if tag_codes is not None and tags not in tag_codes:
                filtered += 1
                continue
            picks.append((q, phy, size))
            total += size
        body, count, short_at = self._read_runs(picks)
        if short_at is not None:
            next_q = short_at
        if count:
            status = GetStatus.FOUND
        elif filtered:
            status = GetStatus.NO_MATCHED_MESSAGE
        else:
            status = GetStatus.OFFSET_FOUND_NULL
        return GetResult(status, body, count, next_q, lo, hi)

    def _read_runs(self, picks: list[tuple[int, int, int]]) -> tuple[bytes, int, int | None]:
        """Read the picked records, one pread per run of adjacent records."""
        if not picks:
            return b"", 0, None
        parts: list[bytes] = []
        count = 0
        i, n = 0, len(picks)
        read = self.commitlog.read
        while i < n:
            start = picks[i][1]
            end = start + picks[i][2]
            j = i + 1
            while j < n and picks[j][1] == end:
                end += picks[j][2]
                j += 1
            data = read(start, end - start)
            if len(data) < end - start:
                # Keep only the whole records that came back.
                got = 0
                while i < j and got + picks[i][2] <= len(data):
                    got += picks[i][2]
                    i += 1
                    count += 1
                parts.append(data[:got])
                return b"".join(parts), count, picks[i][0] if i < n else None
            parts.append(data)
            count += j - i
            i = j
        return (parts[0] if len(parts) == 1 else b"".join(parts)), count, None

    def max_offset(self, topic: str, queue_id: int) -> int:
        cq = self.queues.get(topic, queue_id)
        return cq.max_offset if cq is not None else 0

    def min_offset(self, topic: str, queue_id: int) -> int:
        cq = self.queues.get(topic, queue_id)
        return cq.min_offset if cq is not None else 0

    def offset_by_time(self, topic: str, queue_id: int, ts_ms: int) -> int:
        """The first queue offset whose message was stored at or after ``ts_ms`` (``max_offset`` if none)."""
        cq = self.queues.get(topic, queue_id)
        if cq is None:
            return 0
        lo, hi = cq.min_offset, cq.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            e = cq.entry(mid)
            ts = self.commitlog.store_timestamp_at(e[0]) if e is not None else -1
            if ts >= ts_ms:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def earliest_store_time(self, topic: str, queue_id: int) -> int:
        """Store timestamp of the oldest message still in the queue, or -1."""
        cq = self.queues.get(topic, queue_id)
        if cq is None or cq.min_offset >= cq.max_offset:
            return -1
        e = cq.entry(cq.min_offset)
        return self.commitlog.store_timestamp_at(e[0]) if e is not None else -1

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
        """Records of ``topic`` whose KEYS or unique key is ``key``, stored in [begin_ts, end_ts], newest
        first. Every index hit is checked against the record it points at."""
        out: list[bytes] = []
        for phy in self.index.query(f"{topic}#{key}", max_num * 2, begin_ts, end_ts):
            rec = self.commitlog.read_record(phy)
            if rec is None:
                continue
            try:
                meta = parse_record(rec, 0, phy, False)
            except BadRecord:
                continue
            if meta.topic != topic or not begin_ts <= meta.store_timestamp <= end_ts:
                continue
            props = decode_properties(meta.properties)
            if props.get(PROPERTY_UNIQ_KEY) != key and key not in props.get(PROPERTY_KEYS, "").split(" "):
                continue
            out.append(rec)
            if len(out) >= max_num:
                break
        return out

    # -- topics ----------------------------------------------------------------------------------------
    def delete_topic(self, topic: str) -> int:
        """Drop the consume queues of ``topic``; returns how many were dropped.

        A checkpoint is written at once, so recovery does not rebuild the queues from older records.
        """
        dropped = self.queues.delete_topic(topic)
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
        return self.retention.is_disk_full()

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
        }
