"""The name server process: remoting server + aiohttp app + expiry scan on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from krocket.common import ports
from krocket.common.acl import AclFile
from krocket.common.remoting import Connection, RemotingServer
from krocket.common.remoting.limits import ConnectionLimits
from krocket.common.remoting.tls import TlsServerSettings
from krocket.namesrv.http import create_app
from krocket.namesrv.kvconfig import KVConfigStore
from krocket.namesrv.metrics import NamesrvMetrics
from krocket.namesrv.processor import NamesrvProcessor, connection_id
from krocket.namesrv.registry import BROKER_EXPIRY_SECONDS, BrokerLiveInfo, RouteRegistry

log = logging.getLogger(__name__)

SCAN_INTERVAL_SECONDS = 10.0


class NameServer:
    """Start with ``await start()``; ``port`` and ``http_port`` then hold the bound ports (0 = any free).

    ``host`` is the remoting port's bind address, ``http_host`` the HTTP port's (default: ``host``); the
    remoting port serves TLS as ``tls`` says, the HTTP port HTTPS when given ``http_ssl_context``."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = ports.NAMESRV_PORT,
        http_port: int = ports.NAMESRV_HTTP_PORT,
        data_dir: str | Path | None = None,
        scan_interval: float = SCAN_INTERVAL_SECONDS,
        expiry: float = BROKER_EXPIRY_SECONDS,
        http_host: str | None = None,
        tls: TlsServerSettings | None = None,
        http_ssl_context: ssl.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
        acl_file: str | Path | None = None,
    ) -> None:
        # With an ACL file (plain_acl.yml), writes need an admin's signed request (krocket.namesrv.processor).
        self.acl = AclFile(acl_file) if acl_file else None
        self.host = host
        self.http_host = http_host or host
        self.tls = tls or TlsServerSettings()
        self._http_ssl_context = http_ssl_context
        self.port = port
        self.http_port = http_port
        self.scan_interval = scan_interval
        self.registry = RouteRegistry(expiry=expiry)
        self.metrics = NamesrvMetrics()
        self.processor = NamesrvProcessor(self.registry, KVConfigStore.in_dir(data_dir), self.metrics, self.acl)
        # The broker's defaults (krocket.common.remoting.limits): connections, buffered bytes, timeouts.
        self._remoting = RemotingServer(
            self.processor,
            host,
            port,
            on_connect=self._on_connect,
            limits=limits,
            tls_mode=self.tls.mode,
            ssl_context=self.tls.context(),
        )
        self._runner: web.AppRunner | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._listening = False

    @property
    def ready(self) -> bool:
        return self._listening

    async def start(self) -> None:
        self.port = await self._remoting.start()
        self._listening = True
        try:
            self._runner = web.AppRunner(create_app(self.registry, self.metrics, lambda: self.ready), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(
                self._runner, self.http_host, self.http_port, reuse_address=True, ssl_context=self._http_ssl_context
            )
            await site.start()
            self.http_port = int(self._runner.addresses[0][1])
        except BaseException:
            await self.stop()
            raise
        self._scan_task = asyncio.get_running_loop().create_task(self._scan_loop(), name="namesrv-expiry")
        if self.acl is not None:
            self.acl.start()
        log.info(
            "name server listening: remoting %s:%d (TLS %s), %s %s:%d",
            self.host,
            self.port,
            self.tls.mode.value,
            "https" if self._http_ssl_context is not None else "http",
            self.http_host,
            self.http_port,
        )

    async def stop(self) -> None:
        self._listening = False
        if self.acl is not None:
            await self.acl.stop()
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
            self._scan_task = None
        await self._remoting.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("name server stopped")

    # -- liveness -----------------------------------------------------------------------------------------
    def _on_connect(self, conn: Connection) -> None:
        conn.on_close(self._on_close)

    def _on_close(self, conn: Connection) -> None:
        gone = self.registry.remove_by_connection(connection_id(conn))
        self.metrics.connection_removed_total += len(gone)
        for info in gone:
            log.info("broker removed, its connection closed: %s", _describe(info))

    def scan_expired(self) -> list[BrokerLiveInfo]:
        gone = self.registry.scan_expired()
        self.metrics.expired_total += len(gone)
        for info in gone:
            log.warning("broker expired, no registration for %.0fs: %s", self.registry.expiry, _describe(info))
        return gone

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            try:
                self.scan_expired()
            except Exception:  # keep scanning whatever happens
                log.exception("expiry scan failed")


def _describe(info: BrokerLiveInfo) -> str:
    return f"cluster={info.cluster} name={info.broker_name} id={info.broker_id} addr={info.addr}"


async def run_namesrv(
    host: str = "0.0.0.0",
    port: int = ports.NAMESRV_PORT,
    http_port: int = ports.NAMESRV_HTTP_PORT,
    data_dir: str | Path | None = None,
    scan_interval: float = SCAN_INTERVAL_SECONDS,
    on_started: Callable[[NameServer], None] | None = None,
    http_host: str | None = None,
    tls: TlsServerSettings | None = None,
    http_ssl_context: ssl.SSLContext | None = None,
    acl_file: str | Path | None = None,
    limits: ConnectionLimits | None = None,
) -> None:
    """Run a name server until SIGTERM or SIGINT, then stop it cleanly."""
    server = NameServer(
        host,
        port,
        http_port,
        data_dir,
        scan_interval,
        acl_file=acl_file,
        http_host=http_host,
        tls=tls,
        http_ssl_context=http_ssl_context,
        limits=limits,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    await server.start()
    try:
        if on_started is not None:
            on_started(server)
        await stop.wait()
        log.info("signal received, stopping")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()
