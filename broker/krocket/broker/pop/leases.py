"""Deliveries in flight (pure): who holds which message until when, built from the pop log's records, live and
at replay alike. A lease is keyed by (group, stored topic, queue, offset); the log offset of the checkpoint that
made it pins the pop log: the log is replayed at start from the oldest checkpoint a live lease still needs."""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

from .records import ACK, CHECKPOINT, REWIND, PopRecord

LeaseKey = tuple[str, str, int, int]  # group, stored topic, queue id, queue offset
QueueKey = tuple[str, str, int]


@dataclass(slots=True)
class Lease:
    group: str
    topic: str
    queue_id: int
    offset: int
    pop_ms: int
    invisible_ms: int
    attempt: int  # 1 for a first delivery
    log_offset: int  # the pop log offset of the checkpoint behind it
    first_pop_ms: int  # the pop time of the handle the client was given (a server renewal keeps it valid)
    client_id: str = ""
    auto_renew: bool = False
    due_ms: int = 0

    @property
    def key(self) -> LeaseKey:
        return (self.group, self.topic, self.queue_id, self.offset)

    def matches(self, pop_ms: int) -> bool:
        return pop_ms in (self.pop_ms, self.first_pop_ms)


@dataclass(frozen=True, slots=True)
class OffsetChange:
    """What a record does to the group's pop offset of a queue: ``at_least`` raises it, otherwise it is set."""

    group: str
    topic: str
    queue_id: int
    offset: int
    at_least: bool


class PopLeases:
    def __init__(self) -> None:
        self._leases: dict[LeaseKey, Lease] = {}
        self._per_queue: dict[QueueKey, int] = defaultdict(int)
        self._log_refs: dict[int, int] = defaultdict(int)
        self._due: list[tuple[int, int, LeaseKey, int]] = []
        self._seq = 0
        self._attempts: dict[LeaseKey, int] = {}  # FIFO redeliveries in place: the attempt of the next pop

    def __len__(self) -> int:
        return len(self._leases)

    # -- records ---------------------------------------------------------------------------------------------
    def apply(self, record: PopRecord, log_offset: int) -> OffsetChange | None:
        """Apply one pop log record (stored at ``log_offset``); the pop offset change it implies, if any."""
        g, t, q = record.group, record.topic, record.queue_id
        if record.kind == CHECKPOINT:
            for offset, attempt in zip(record.offsets, record.attempts, strict=True):
                self._add(
                    Lease(
                        g,
                        t,
                        q,
                        offset,
                        record.pop_ms,
                        record.invisible_ms,
                        attempt,
                        log_offset,
                        record.first_pop_ms or record.pop_ms,
                        record.client_id,
                        record.auto_renew,
                    )
                )
            return OffsetChange(g, t, q, max(record.offsets) + 1, True) if record.offsets else None
        if record.kind == ACK:
            for offset in record.offsets:
                self.settle((g, t, q, offset), record.pop_ms)
            return None
        assert record.kind == REWIND
        start = min(record.offsets)
        for offset, attempt in zip(record.offsets, record.attempts, strict=False):
            self._attempts[(g, t, q, offset)] = attempt
        for lease in [lease for key, lease in self._leases.items() if key[:3] == (g, t, q) and key[3] >= start]:
            self._remove(lease)
        return OffsetChange(g, t, q, start, False)

    # -- leases ----------------------------------------------------------------------------------------------
    def _add(self, lease: Lease) -> None:
        old = self._leases.get(lease.key)
        if old is not None:
            self._remove(old)
        lease.due_ms = lease.pop_ms + lease.invisible_ms
        self._leases[lease.key] = lease
        self._per_queue[lease.key[:3]] += 1
        self._log_refs[lease.log_offset] += 1
        self._push(lease)

    def _push(self, lease: Lease) -> None:
        self._seq += 1
        heapq.heappush(self._due, (lease.due_ms, self._seq, lease.key, lease.pop_ms))

    def _remove(self, lease: Lease) -> None:
        del self._leases[lease.key]
        queue = lease.key[:3]
        self._per_queue[queue] -= 1
        if self._per_queue[queue] <= 0:
            del self._per_queue[queue]
        self._log_refs[lease.log_offset] -= 1
        if self._log_refs[lease.log_offset] <= 0:
            del self._log_refs[lease.log_offset]

    def redelivery_attempt(self, key: LeaseKey, default: int) -> int:
        """The delivery attempt a pop of ``key`` makes: one more than a rewound delivery's, else ``default``."""
        return self._attempts.pop(key, default)

    def get(self, key: LeaseKey) -> Lease | None:
        return self._leases.get(key)

    def find(self, key: LeaseKey, pop_ms: int) -> Lease | None:
        """The lease of that delivery (a handle's pop time), or None when it is settled or superseded."""
        lease = self._leases.get(key)
        return lease if lease is not None and lease.matches(pop_ms) else None

    def settle(self, key: LeaseKey, pop_ms: int) -> Lease | None:
        lease = self.find(key, pop_ms)
        if lease is not None:
            self._remove(lease)
        return lease

    def release_soon(self, lease: Lease, due_ms: int) -> None:
        """Make the lease due earlier (its client is gone); in memory only: a replay keeps the longer time."""
        if due_ms < lease.due_ms:
            lease.due_ms = due_ms
            lease.auto_renew = False
            self._push(lease)

    def due(self, now_ms: int, limit: int) -> list[Lease]:
        """Leases whose invisible time has passed, oldest first (at most ``limit``); they stay until settled."""
        out: list[Lease] = []
        seen: set[LeaseKey] = set()
        while self._due and self._due[0][0] <= now_ms and len(out) < limit:
            due_ms, _, key, pop_ms = heapq.heappop(self._due)
            lease = self._leases.get(key)
            if lease is None or lease.pop_ms != pop_ms or lease.due_ms != due_ms or key in seen:
                continue
            seen.add(key)
            out.append(lease)
        return out

    def retry_later(self, lease: Lease, due_ms: int) -> None:
        """A due lease whose redelivery failed (a full disk, say): try again at ``due_ms``."""
        lease.due_ms = due_ms
        self._push(lease)

    def busy(self, group: str, topic: str, queue_id: int) -> bool:
        return self._per_queue.get((group, topic, queue_id), 0) > 0

    def in_queue(self, group: str, topic: str, queue_id: int) -> list[Lease]:
        return sorted(
            (lease for key, lease in self._leases.items() if key[:3] == (group, topic, queue_id)),
            key=lambda lease: lease.offset,
        )

    def of_client(self, client_id: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.client_id == client_id]

    def renewable(self, before_ms: int) -> list[Lease]:
        """Auto-renewed leases due before ``before_ms``."""
        return [lease for lease in self._leases.values() if lease.auto_renew and lease.due_ms < before_ms]

    def replay_from(self, log_end: int) -> int:
        """Where a replay of the pop log must start: the oldest checkpoint still behind a lease, or the end."""
        return min(self._log_refs, default=log_end)

    def in_flight(self, group: str | None = None) -> int:
        if group is None:
            return len(self._leases)
        return sum(1 for key in self._leases if key[0] == group)
