"""Queue locks of orderly consumers (LOCK_BATCH_MQ 41, UNLOCK_BATCH_MQ 42), RocketMQ's rules.

A lock on a message queue belongs to one client id of one consumer group. It lives ``max_live_ms`` (RocketMQ's
``rocketmq.broker.rebalance.lockMaxLiveTime``, 60 s) from its last grant or renewal; a lock that is still alive
and held by another client is not granted, an expired one is taken over. Only the holder unlocks.
Pure logic with an injectable clock; the processors in ``krocket.broker.processors.locks`` are thin over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from krocket.common.lock_body import LockedQueue

LOCK_MAX_LIVE_MS = 60_000


@dataclass
class _Lock:
    client_id: str
    last_update_ms: int


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class RebalanceLockManager:
    def __init__(self, max_live_ms: int = LOCK_MAX_LIVE_MS, clock_ms: Callable[[], int] = _monotonic_ms) -> None:
        self.max_live_ms = max_live_ms
        self._clock_ms = clock_ms
        self._locks: dict[str, dict[LockedQueue, _Lock]] = {}
        self._last_purge_ms = clock_ms()

    def _alive(self, lock: _Lock, now: int) -> bool:
        return now - lock.last_update_ms <= self.max_live_ms

    def try_lock_batch(self, group: str, client_id: str, queues: Iterable[LockedQueue]) -> list[LockedQueue]:
        """Grants or renews each queue free, expired or already ``client_id``'s; the granted ones, in order."""
        now = self._clock_ms()
        if now - self._last_purge_ms > self.max_live_ms:
            self.purge_expired()
        table = self._locks.setdefault(group, {})
        granted: list[LockedQueue] = []
        for mq in queues:
            lock = table.get(mq)
            if lock is None or lock.client_id == client_id or not self._alive(lock, now):
                table[mq] = _Lock(client_id, now)
                granted.append(mq)
        return granted

    def unlock_batch(self, group: str, client_id: str, queues: Iterable[LockedQueue]) -> list[LockedQueue]:
        """Releases the queues ``client_id`` holds; a lock of another client stays. The released ones."""
        table = self._locks.get(group)
        if table is None:
            return []
        released: list[LockedQueue] = []
        for mq in queues:
            lock = table.get(mq)
            if lock is not None and lock.client_id == client_id:
                del table[mq]
                released.append(mq)
        if not table:
            del self._locks[group]
        return released

    def holder(self, group: str, mq: LockedQueue) -> str | None:
        """The client id holding a live lock on ``mq`` for ``group``, else None."""
        lock = self._locks.get(group, {}).get(mq)
        if lock is None or not self._alive(lock, self._clock_ms()):
            return None
        return lock.client_id

    def purge_expired(self) -> int:
        """Drops expired locks (bounded memory with clients that vanish); how many were dropped."""
        now = self._last_purge_ms = self._clock_ms()
        dropped = 0
        for group in list(self._locks):
            table = self._locks[group]
            for mq in [mq for mq, lock in table.items() if not self._alive(lock, now)]:
                del table[mq]
                dropped += 1
            if not table:
                del self._locks[group]
        return dropped
