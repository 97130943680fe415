"""Store settings (RocketMQ's ``MessageStoreConfig`` names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from krocket.common.errors import ConfigError

FlushMode = Literal["ASYNC_FLUSH", "SYNC_FLUSH"]

GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024


@dataclass(slots=True)
class StoreConfig:
    root_dir: str | Path
    commitlog_segment_bytes: int = GIB
    consume_queue_entries_per_file: int = 300_000
    flush_mode: FlushMode = "ASYNC_FLUSH"
    flush_interval_ms: int = 500
    # Consume queues, index and checkpoint are flushed on their own, slower, cadence.
    flush_logics_interval_ms: int = 1000
    sync_flush_timeout_s: float = 5.0
    # SYNC_FLUSH: a group commit round with at most this many bytes to sync runs its fdatasync on the event
    # loop thread (a small write syncs in ~0.1 ms, less than the hand-off to a worker thread and back costs);
    # larger rounds go to the worker thread so the loop keeps serving meanwhile. 0: always the worker.
    sync_flush_inline_bytes: int = 64 * 1024
    file_reserved_hours: float = 72.0
    disk_max_used_ratio: float = 0.75
    disk_warning_ratio: float = 0.90
    # How often the disk usage is sampled on the put path; 0 samples on every put.
    disk_check_interval_s: float = 1.0
    # Free bytes kept for consume queues, index, checkpoint and config files: writes are refused once the
    # disk has less free (at most 10 % of the volume is kept). Commit log segments are reserved whole.
    disk_free_reserve_bytes: int = 64 * MIB
    # A commit log segment older than this (since its first record) is sealed at the next put and a new
    # one started, so retention can delete old data without waiting for the segment to fill; 0: size only.
    commitlog_roll_interval_ms: int = 3_600_000
    retention_interval_s: float = 10.0
    # At most this many commit log segments are deleted per retention round.
    delete_segments_batch_max: int = 10
    max_message_bytes: int = 4 * MIB
    check_crc_on_recover: bool = True
    # How many trailing segments a recovery after a clean stop re-validates.
    recover_segments_after_clean_stop: int = 3
    store_host: bytes = b"\x7f\x00\x00\x01\x00\x00\x2a\x9f"  # 127.0.0.1:10911
    # Appends are gathered in user space and written out (pwrite) once this many bytes are pending,
    # when a read needs them, on flush, and once per event loop iteration when a loop is attached.
    commit_buffer_bytes: int = 256 * 1024
    # Pending consume queue entries per queue before they are written out.
    consume_queue_pending_entries: int = 256
    index_hash_slots: int = 500_000
    index_max_entries: int = 2_000_000
    # Pending index entries before they are written out.
    index_pending_entries: int = 4096
    message_index_enable: bool = True

    def __post_init__(self) -> None:
        self.root_dir = Path(self.root_dir)
        if self.flush_mode not in ("ASYNC_FLUSH", "SYNC_FLUSH"):
            raise ConfigError(f"flush_mode must be ASYNC_FLUSH or SYNC_FLUSH, not {self.flush_mode!r}")
        if self.sync_flush_inline_bytes < 0:
            raise ConfigError("sync_flush_inline_bytes must be 0 or more")
        if self.commitlog_segment_bytes < 64 * 1024:
            raise ConfigError("commitlog_segment_bytes must be at least 64 KiB")
        if self.consume_queue_entries_per_file < 1:
            raise ConfigError("consume_queue_entries_per_file must be positive")
        if len(self.store_host) != 8:
            raise ConfigError("store_host must be 8 bytes: IPv4 address and big-endian port")
        if not 0 < self.disk_max_used_ratio <= self.disk_warning_ratio <= 1:
            raise ConfigError("need 0 < disk_max_used_ratio <= disk_warning_ratio <= 1")
        if self.disk_free_reserve_bytes < 0 or self.commitlog_roll_interval_ms < 0:
            raise ConfigError("disk_free_reserve_bytes and commitlog_roll_interval_ms must be 0 or more")
        if self.index_hash_slots < 1 or self.index_max_entries < 1:
            raise ConfigError("index_hash_slots and index_max_entries must be positive")

    @property
    def root(self) -> Path:
        return Path(self.root_dir)

    @property
    def commitlog_dir(self) -> Path:
        return self.root / "commitlog"

    @property
    def consume_queue_dir(self) -> Path:
        return self.root / "consumequeue"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def sync_flush(self) -> bool:
        return self.flush_mode == "SYNC_FLUSH"
