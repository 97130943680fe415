"""The slave side of replication: follow the master's commit log from our own end, append it unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from krocket.broker.ha.protocol import FRAME_HEADER, HEARTBEAT_S, MAX_FRAME_BYTES, REPORT, hello
from krocket.broker.store import MessageStore
from krocket.common.errors import KrocketError, ServiceNotAvailableError

log = logging.getLogger(__name__)

PAUSED_RETRY_S = 5.0  # a slave whose disk is full tries again this often


class LogMismatchError(KrocketError):
    """The master's log does not continue ours: we never truncate data we may have served."""


class HASlave:
    def __init__(
        self,
        store: MessageStore,
        master_ha_addr: Callable[[], str | None],
        sync_flush: bool = False,
        backoff_max_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        broker_id: int | None = None,
    ) -> None:
        self._store = store
        self._broker_id = broker_id  # said in the hello, so the master's metrics name this slave by it
        self._ssl_context = ssl_context  # connect to the master's HA port over TLS with this client context
        self._master_ha_addr = master_ha_addr
        self._sync_flush = sync_flush
        self._backoff_max_s = backoff_max_s
        self._task: asyncio.Task[None] | None = None
        self.connected_to: str | None = None
        self.master_offset = -1  # the master's end as last seen in a frame
        self.last_frame_at = 0.0
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            addr = self._master_ha_addr()
            if not addr:
                await asyncio.sleep(1.0)
                continue
            try:
                await self._follow(addr)
                backoff = 0.5
            except LogMismatchError as exc:
                self.last_error = str(exc)
                log.error("replication from %s stopped: %s", addr, exc)
                backoff = self._backoff_max_s
            except ServiceNotAvailableError as exc:
                if self.last_error != exc.message:
                    log.warning(
                        "replication from %s paused: %s; retrying every %.0f s", addr, exc.message, PAUSED_RETRY_S
                    )
                self.last_error = exc.message
                backoff = PAUSED_RETRY_S
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                if self.connected_to:
                    log.warning("lost the master %s: %s", addr, exc or type(exc).__name__)
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected_to = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max_s)

    async def _follow(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        tls = self._ssl_context
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=tls, server_hostname=host if tls is not None else None), 3.0
        )
        try:
            offset = self._store.max_phy_offset
            writer.write(REPORT.pack(offset))
            if self._broker_id is not None:
                writer.write(REPORT.pack(hello(self._broker_id)))
            await writer.drain()
            self.connected_to = addr
            self.last_error = None
            log.info("replicating from master %s, starting at commit log offset %d", addr, offset)
            last_report = time.monotonic()
            while True:
                header = await asyncio.wait_for(reader.readexactly(FRAME_HEADER.size), HEARTBEAT_S * 3)
                frame_offset, size = FRAME_HEADER.unpack(header)
                self.last_frame_at = time.monotonic()
                if size < 0 or size > MAX_FRAME_BYTES:
                    raise LogMismatchError(f"master sent a frame of {size} bytes")
                if size == 0:
                    self.master_offset = max(self.master_offset, frame_offset)
                    if time.monotonic() - last_report > HEARTBEAT_S:
                        writer.write(REPORT.pack(self._store.max_phy_offset))
                        last_report = time.monotonic()
                    continue
                data = await reader.readexactly(size)
                ours = self._store.max_phy_offset
                if frame_offset != ours:
                    raise LogMismatchError(
                        f"master sent bytes for offset {frame_offset} but our commit log ends at {ours}; "
                        "refusing to truncate: wipe this slave's store to copy the master from scratch"
                    )
                try:
                    new_end = self._store.append_raw(data, frame_offset)
                except ServiceNotAvailableError:
                    raise  # our disk is full: nothing was written; follow again once it frees
                except KrocketError as exc:
                    raise LogMismatchError(f"master's bytes at {frame_offset} do not parse as records: {exc}") from None
                self.master_offset = max(self.master_offset, new_end)
                if self._sync_flush:
                    await self._store.wait_flushed(new_end)
                writer.write(REPORT.pack(new_end))
                last_report = time.monotonic()
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    def status(self) -> dict[str, Any]:
        return {
            "master": self.connected_to,
            "offset": self._store.max_phy_offset,
            "lagBytes": max(self.master_offset - self._store.max_phy_offset, 0) if self.master_offset >= 0 else None,
            "lastError": self.last_error,
        }
