"""The master side of replication: one push loop per connected slave, and waiting for slave acks (a future per
waiter, ``wait_replicated``; or an ack listener, ``add_ack_listener``: the parked replies of SYNC_MASTER)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from krocket.broker.ha.protocol import FRAME_HEADER, HEARTBEAT_S, MAX_FRAME_BYTES, REPORT, hello_broker_id
from krocket.broker.store import MessageStore
from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.record import BLANK_MAGIC, MAGIC_V1, MAGIC_V2
from krocket.common.remoting.tls import PermissiveServer, TlsMode, start_server

log = logging.getLogger(__name__)

# A slave further behind than this is not "in sync" (RocketMQ's haMaxGapNotInSync).
MAX_GAP_NOT_IN_SYNC = 256 * 1024 * 1024


class SlaveNotAvailableError(KrocketError):
    code = ResponseCode.SLAVE_NOT_AVAILABLE


class FlushSlaveTimeoutError(KrocketError):
    code = ResponseCode.FLUSH_SLAVE_TIMEOUT


@dataclass
class SlaveLink:
    peer: str
    acked: int = -1  # the slave's reported commit log end
    broker_id: int | None = None  # from the slave's hello (None: a slave that sent none)
    connected_at: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)


class HAMaster:
    """Listens on ``host:port`` for slaves, in ``tls_mode`` with ``ssl_context`` (the broker's remoting ones)."""

    def __init__(
        self,
        store: MessageStore,
        host: str,
        port: int,
        sync_timeout_s: float = 3.0,
        tls_mode: TlsMode = TlsMode.DISABLED,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._store = store
        self.host = host
        self.port = port
        self._sync_timeout_s = sync_timeout_s
        self._tls_mode = tls_mode
        self._ssl_context = ssl_context
        self._server: asyncio.Server | PermissiveServer | None = None
        self.slaves: dict[int, SlaveLink] = {}
        self._wakeups: set[asyncio.Event] = set()  # one per push loop
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ack_listeners: list[Callable[[int], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await start_server(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(), self._serve),
            self.host,
            self.port,
            self._tls_mode,
            self._ssl_context,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(SlaveNotAvailableError("the master is stopping"))
        self._waiters.clear()

    def on_new_data(self, *_: object) -> None:
        """Store dispatch listener: wake the push loops."""
        for event in self._wakeups:
            event.set()

    # -- ack waiting (SYNC_MASTER) --------------------------------------------------------------------
    def in_sync_slaves(self) -> list[SlaveLink]:
        head = self._store.max_phy_offset
        return [s for s in self.slaves.values() if s.acked >= 0 and head - s.acked < MAX_GAP_NOT_IN_SYNC]

    def has_in_sync_slave(self) -> bool:
        return bool(self.in_sync_slaves())

    def acked_offset(self) -> int:
        """The highest commit log offset a connected slave has confirmed; -1 without a slave."""
        return max((s.acked for s in self.slaves.values()), default=-1)

    def add_ack_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(offset)`` whenever a slave confirms it has the commit log up to ``offset``."""
        self._ack_listeners.append(listener)

    async def wait_replicated(self, end_offset: int) -> None:
        """Return once a slave has ``end_offset``; raise SLAVE_NOT_AVAILABLE / FLUSH_SLAVE_TIMEOUT otherwise."""
        if not self.in_sync_slaves():
            raise SlaveNotAvailableError("no slave is connected and in sync; the message is stored on the master only")
        if max(s.acked for s in self.slaves.values()) >= end_offset:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (end_offset, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self._sync_timeout_s)
        except TimeoutError:
            raise FlushSlaveTimeoutError(
                f"no slave confirmed offset {end_offset} within {self._sync_timeout_s:.1f}s"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _acked(self, offset: int) -> None:
        for listener in self._ack_listeners:
            try:
                listener(offset)
            except Exception:  # one faulty listener must not stop the replication loop
                log.exception("ack listener failed")
        if not self._waiters:
            return
        for end, fut in self._waiters:
            if end <= offset and not fut.done():
                fut.set_result(None)

    # -- one slave connection ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        link = SlaveLink(f"{peer[0]}:{peer[1]}" if peer else "?")
        key = id(writer)
        pusher: asyncio.Task[None] | None = None
        try:
            first = REPORT.unpack(await reader.readexactly(REPORT.size))[0]
            problem = self._check_slave_offset(first)
            if problem:
                log.error("refusing slave %s: %s", link.peer, problem)
                return
            link.acked = first
            self.slaves[key] = link
            log.info(
                "slave %s connected at commit log offset %d (master at %d)",
                link.peer,
                first,
                self._store.max_phy_offset,
            )
            pusher = asyncio.get_running_loop().create_task(self._push(writer, first))
            while True:
                offset = REPORT.unpack(await reader.readexactly(REPORT.size))[0]
                link.last_report = time.monotonic()
                said_id = hello_broker_id(offset)
                if said_id is not None:
                    link.broker_id = said_id
                    log.info("slave %s is broker id %d", link.peer, said_id)
                elif offset > link.acked:
                    link.acked = offset
                    self._acked(offset)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if pusher is not None:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await pusher
            if self.slaves.pop(key, None) is not None:
                log.info("slave %s disconnected", link.peer)
            writer.close()
            self._tasks.discard(task)

    def _check_slave_offset(self, offset: int) -> str | None:
        head = self._store.max_phy_offset
        if offset > head:
            return (
                f"its commit log ends at {offset}, past the master's end {head}: the logs have diverged; "
                "wipe the slave's store or restore the master's data"
            )
        if offset < self._store.min_phy_offset:
            return (
                f"its commit log ends at {offset}, before the master's oldest data "
                f"({self._store.min_phy_offset}); wipe the slave's store so it copies from scratch"
            )
        if offset < head:
            start = self._store.read_raw(offset, 8)
            if len(start) == 8:
                magic = int.from_bytes(start[4:8], "big", signed=True)
                if magic not in (MAGIC_V1, MAGIC_V2, BLANK_MAGIC):
                    return f"offset {offset} is not a record boundary in the master's log: the logs have diverged"
        return None

    async def _push(self, writer: asyncio.StreamWriter, offset: int) -> None:
        wakeup = asyncio.Event()
        self._wakeups.add(wakeup)
        try:
            await self._push_loop(writer, offset, wakeup)
        finally:
            self._wakeups.discard(wakeup)

    async def _push_loop(self, writer: asyncio.StreamWriter, offset: int, wakeup: asyncio.Event) -> None:
        last_sent = time.monotonic()
        while True:
            head = self._store.max_phy_offset
            if offset < head:
                data = self._store.read_raw(offset, min(MAX_FRAME_BYTES, head - offset))
                if data:
                    writer.write(FRAME_HEADER.pack(offset, len(data)))
                    writer.write(data)
                    offset += len(data)
                    await writer.drain()
                    last_sent = time.monotonic()
                    continue
            if time.monotonic() - last_sent >= HEARTBEAT_S:
                writer.write(FRAME_HEADER.pack(offset, 0))
                await writer.drain()
                last_sent = time.monotonic()
            wakeup.clear()
            if self._store.max_phy_offset > offset:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), HEARTBEAT_S)

    def status(self) -> list[dict[str, Any]]:
        head = self._store.max_phy_offset
        now = time.monotonic()
        return [
            {
                "peer": s.peer,
                "brokerId": s.broker_id,
                "ackedOffset": s.acked,
                "lagBytes": max(head - s.acked, 0),
                "secondsSinceAck": round(now - s.last_report, 3),
            }
            for s in self.slaves.values()
        ]
