"""Parked replies: SYNC_FLUSH and SYNC_MASTER acknowledgements without a task, future or timer per request.

A send whose ack must wait for the disk (SYNC_FLUSH) or for a slave (SYNC_MASTER) is stored as usual, its reply
is encoded at once, and the encoded frames are *parked* here with the commit log offset the ack needs. The group
commit releases every parked reply its fdatasync covers, and a slave's ack every reply it covers; each release
writes once per connection (``Connection.write_raw``). One timer, set for the earliest deadline, answers what
waited too long: FLUSH_DISK_TIMEOUT after ``syncFlushTimeout``, FLUSH_SLAVE_TIMEOUT after ``slaveTimeoutMills``
(each parked frame decoded, its code and remark changed, encoded again; ext fields and opaque kept), as the
task-per-request path answers. Durability is unchanged: no reply leaves before what it acknowledges is where its
mode says (on disk, and/or on a slave).

API (``BrokerService.parking``; the fast path glue parks through it):

- ``park(conn, data, end_offset)``: ``data`` is one or more whole encoded reply frames for ``conn`` (length prefix
  included; the fast path parks one chunk per read). ``end_offset`` is the commit log offset just past the last
  record they acknowledge. The caller must commit its appends (``MessageStore.commit``) before it yields to the
  event loop (the broker's ``before_reply`` does, once per read); ``park`` never writes anything itself, so
  calling it before that commit is safe. ``park`` takes ``data`` over: do not change it afterwards. Parks come in
  commit log order; an ``end_offset`` below the last parked one (a send that waited for its new topic's route)
  waits for the last one instead, which is never early.
- ``BrokerService.must_wait``: True when sends must park (SYNC_FLUSH, or SYNC_MASTER with replication); else
  the reply goes out right after the commit as usual.
- ``flushed(offset)``: the flusher calls it after every round (``MessageStore.on_flushed``).
- ``acked(offset)``: the HA master calls it when a slave confirms ``offset`` (``HAMaster.add_ack_listener``).
- ``replicate_to(slaves)``: SYNC_MASTER; from then on a reply leaves only once a slave has its bytes too (after
  the flush, under SYNC_FLUSH). A reply whose turn comes while no slave is in sync is answered
  SLAVE_NOT_AVAILABLE (the message is stored on the master only), as RocketMQ does.

Order: released replies of one connection leave in the order they were parked (each stage is one queue in commit
log order); an answer that is not SUCCESS (a timeout, SLAVE_NOT_AVAILABLE) may pass replies still waiting, which
RocketMQ's clients allow (replies are matched by opaque). A closed connection's parked replies are dropped.

Bound: a connection with more than ``max_parked_bytes`` parked stops being read (``Connection.hold_reading``) until
the releases bring it under half of that. Parked replies are not tasks, so the transport's ``maxRequestsInFlight``
does not count them; this cap bounds them instead (1 MiB: about 4000 replies, as many as 4096 tasks in flight).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from krocket.common.codes import ResponseCode
from krocket.common.remoting import Connection
from krocket.common.remoting.command import decode_frame, encode_parts

DEFAULT_MAX_PARKED_BYTES = 1024 * 1024  # per connection; over it the connection is not read until half is released
_MIN_SWEEP_DELAY_S = 0.001
_LENGTH = struct.Struct(">i")

SLAVE_NOT_AVAILABLE_REMARK = "no slave is connected and in sync; the message is stored on the master only"


class SlaveAcks(Protocol):
    """What parking reads of replication (``krocket.broker.ha.master.HAMaster``)."""

    def acked_offset(self) -> int:
        """The highest commit log offset a connected slave has confirmed; -1 without one."""
        ...

    def has_in_sync_slave(self) -> bool: ...


class _Peer:
    """One connection's share of the parked replies."""

    __slots__ = ("conn", "held", "parked")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.parked = 0  # bytes parked
        self.held = False  # reading held back for it


# (end offset, peer, frames, since): since is when the entry entered its stage (time.monotonic()).
_Entry = tuple[int, _Peer, bytes | bytearray, float]


def rewrite_replies(data: bytes | bytearray, code: int, remark: str) -> bytes:
    """The encoded reply frames ``data`` with ``code`` and ``remark`` in place of theirs (all else kept)."""
    view = memoryview(data)
    parts: list[bytes] = []
    pos, size = 0, len(data)
    while pos + 4 <= size:
        (length,) = _LENGTH.unpack_from(view, pos)
        cmd = decode_frame(view[pos + 4 : pos + 4 + length])
        cmd.code = code
        cmd.remark = remark
        head, body = encode_parts(cmd)
        parts.append(head)
        if body:
            parts.append(body)
        pos += 4 + length
    return b"".join(parts)


class ReplyParking:
    """Parked replies of one broker. ``sync_flush``: entries wait for ``flushed`` first; ``request_flush`` asks the
    group commit for a round (called on every park; cheap when one is already due)."""

    def __init__(
        self,
        sync_flush: bool,
        flush_timeout_s: float,
        slave_timeout_s: float,
        request_flush: Callable[[], None],
        max_parked_bytes: int = DEFAULT_MAX_PARKED_BYTES,
    ) -> None:
        self.sync_flush = sync_flush
        self.flush_timeout_s = flush_timeout_s
        self.slave_timeout_s = slave_timeout_s
        self._request_flush = request_flush
        self.max_parked_bytes = max_parked_bytes
        self._slaves: SlaveAcks | None = None
        self._flushing: deque[_Entry] = deque()  # waiting for the disk, in end offset order
        self._replicating: deque[_Entry] = deque()  # waiting for a slave, in end offset order
        self._soon: list[_Entry] = []  # answerable now, written on the next loop turn (after the commit)
        self._soon_handle: asyncio.Handle | None = None
        self._peers: dict[Connection, _Peer] = {}
        self._last_end = -1
        self._sweep_at: float | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.written = 0  # entries written (each one park's frames), whatever their answer
        self.timed_out = 0  # of them: answered FLUSH_DISK_TIMEOUT / FLUSH_SLAVE_TIMEOUT
        self.refused = 0  # of them: answered SLAVE_NOT_AVAILABLE

    def replicate_to(self, slaves: SlaveAcks | None) -> None:
        """SYNC_MASTER: replies wait for a slave's ack too (``None``: they do not)."""
        self._slaves = slaves

    # -- state ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._flushing) + len(self._replicating) + len(self._soon)

    def parked_bytes(self, conn: Connection) -> int:
        peer = self._peers.get(conn)
        return peer.parked if peer is not None else 0

    def stats(self) -> dict[str, int]:
        return {
            "parked_flush": len(self._flushing),
            "parked_replication": len(self._replicating),
            "written": self.written,
            "timed_out": self.timed_out,
            "refused": self.refused,
        }

    # -- parking -------------------------------------------------------------------------------------
    def park(self, conn: Connection, data: bytes | bytearray, end_offset: int) -> None:
        peer = self._peers.get(conn)
        if peer is None and not conn.is_open:
            return  # closed already: its replies would be dropped, and its close callbacks have run
        if peer is None:
            peer = self._peers[conn] = _Peer(conn)
            conn.on_close(self._closed)
        peer.parked += len(data)
        if peer.parked > self.max_parked_bytes and not peer.held:
            peer.held = True
            conn.hold_reading(True)
        if end_offset < self._last_end:
            end_offset = self._last_end  # later than needed, never earlier: parks stay in offset order
        else:
            self._last_end = end_offset
        now = time.monotonic()
        if self.sync_flush:
            self._flushing.append((end_offset, peer, data, now))
            self._request_flush()
            self._arm(now + self.flush_timeout_s)
        elif self._slaves is not None:
            self._replicate([(end_offset, peer, data, now)], now)
        else:
            self._answer_soon([(end_offset, peer, data, now)])

    # -- releases ------------------------------------------------------------------------------------
    def flushed(self, offset: int) -> None:
        """The commit log is on disk up to ``offset``: what waited for that moves on."""
        queue = self._flushing
        if not queue or queue[0][0] > offset:
            return
        ready = []
        while queue and queue[0][0] <= offset:
            ready.append(queue.popleft())
        if self._slaves is not None:
            ready = self._replicate(ready, time.monotonic())
        self._deliver(ready)

    def acked(self, offset: int) -> None:
        """A slave has the commit log up to ``offset``."""
        queue = self._replicating
        if not queue or queue[0][0] > offset:
            return
        ready = []
        while queue and queue[0][0] <= offset:
            ready.append(queue.popleft())
        self._deliver(ready)

    def _replicate(self, entries: list[_Entry], now: float) -> list[_Entry]:
        """Entries that have what the disk needs; returns those a slave already has (or that are refused
        SLAVE_NOT_AVAILABLE), the rest wait for an ack. Called from ``park`` (ASYNC_FLUSH), answers go out on
        the next loop turn, so after the caller's commit."""
        slaves = self._slaves
        assert slaves is not None
        acked = slaves.acked_offset()
        done: list[_Entry] = []
        if entries[-1][0] <= acked:
            done = entries
        else:
            in_sync = slaves.has_in_sync_slave()
            waiting = self._replicating
            for entry in entries:
                end, peer, data, _ = entry
                if end <= acked:
                    done.append(entry)
                elif not in_sync:
                    self.refused += 1
                    refused = rewrite_replies(data, ResponseCode.SLAVE_NOT_AVAILABLE, SLAVE_NOT_AVAILABLE_REMARK)
                    done.append((end, peer, refused, now))
                else:
                    waiting.append((end, peer, data, now))
            if waiting:
                self._arm(now + self.slave_timeout_s)
        if done and not self.sync_flush:
            self._answer_soon(done)
            return []
        return done

    def _answer_soon(self, entries: list[_Entry]) -> None:
        self._soon.extend(entries)
        if self._soon_handle is None:
            self._soon_handle = asyncio.get_running_loop().call_soon(self._write_soon)

    def _write_soon(self) -> None:
        self._soon_handle = None
        entries, self._soon = self._soon, []
        self._deliver(entries)

    def _deliver(self, entries: list[_Entry]) -> None:
        """Write the entries, one write per connection, in their order."""
        if not entries:
            return
        self.written += len(entries)
        if len(entries) == 1:
            _, peer, data, _ = entries[0]
            self._write(peer, data, len(data))
            return
        by_peer: dict[_Peer, list[bytes | bytearray]] = {}
        for _, peer, data, _ in entries:
            chunks = by_peer.get(peer)
            if chunks is None:
                by_peer[peer] = [data]
            else:
                chunks.append(data)
        for peer, chunks in by_peer.items():
            if len(chunks) == 1:
                self._write(peer, chunks[0], len(chunks[0]))
            else:
                joined = b"".join(chunks)
                self._write(peer, joined, len(joined))

    def _write(self, peer: _Peer, data: bytes | bytearray, size: int) -> None:
        peer.parked -= size
        if peer.held and peer.parked <= self.max_parked_bytes // 2:
            peer.held = False
            peer.conn.hold_reading(False)
        peer.conn.write_raw(data)

    # -- timeouts ------------------------------------------------------------------------------------
    def _arm(self, deadline: float) -> None:
        """One timer for the earliest deadline of what is parked."""
        if self._sweep_at is not None and self._sweep_at <= deadline:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = deadline
        loop = asyncio.get_running_loop()
        delay = max(deadline - time.monotonic(), _MIN_SWEEP_DELAY_S)
        self._sweeper = loop.call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Answer what waited past its timeout; set the timer for the next deadline."""
        self._sweeper = None
        self._sweep_at = None
        now = time.monotonic()
        expired: list[_Entry] = []  # those waiting for a slave were parked before those waiting for the disk
        flushing, replicating = self._flushing, self._replicating
        limit = now - self.slave_timeout_s
        while replicating and replicating[0][3] <= limit:
            end, peer, data, since = replicating.popleft()
            remark = f"no slave confirmed offset {end} within {self.slave_timeout_s:.1f}s"
            expired.append((end, peer, rewrite_replies(data, ResponseCode.FLUSH_SLAVE_TIMEOUT, remark), since))
        limit = now - self.flush_timeout_s
        while flushing and flushing[0][3] <= limit:
            end, peer, data, since = flushing.popleft()
            remark = f"flushing the commit log up to offset {end} took over {self.flush_timeout_s} s"
            expired.append((end, peer, rewrite_replies(data, ResponseCode.FLUSH_DISK_TIMEOUT, remark), since))
        if expired:
            self.timed_out += len(expired)
            self._deliver(expired)
        deadlines = []
        if flushing:
            deadlines.append(flushing[0][3] + self.flush_timeout_s)
        if replicating:
            deadlines.append(replicating[0][3] + self.slave_timeout_s)
        if deadlines:
            self._arm(min(deadlines))

    # -- connections ---------------------------------------------------------------------------------
    def _closed(self, conn: Connection) -> None:
        peer = self._peers.pop(conn, None)
        if peer is None or peer.parked <= 0:
            return
        self._flushing = deque(e for e in self._flushing if e[1] is not peer)
        self._replicating = deque(e for e in self._replicating if e[1] is not peer)
        self._soon = [e for e in self._soon if e[1] is not peer]
        peer.parked = 0

    def close(self) -> None:
        """Drop everything parked and the timers (the broker is stopping)."""
        for handle in (self._sweeper, self._soon_handle):
            if handle is not None:
                handle.cancel()
        self._sweeper = self._soon_handle = None
        self._sweep_at = None
        self._flushing.clear()
        self._replicating.clear()
        self._soon.clear()
        self._peers.clear()
