"""The broker process: store, remoting server, HTTP app, name server registration, housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from krocket.broker.config import BrokerConfig
from krocket.broker.consumer_manager import ConsumerManager
from krocket.broker.ha.master import HAMaster
from krocket.broker.ha.metadata_sync import MetadataSync
from krocket.broker.ha.slave import HASlave
from krocket.broker.http import make_app
from krocket.broker.long_polling import LongPolling
from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.processors import make_handler
from krocket.broker.registration import NameServerRegistration
from krocket.broker.service import BrokerService
from krocket.broker.store.config import StoreConfig
from krocket.broker.store.message_store import MessageStore
from krocket.broker.topic_manager import TopicManager
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import ConfigError, KrocketError
from krocket.common.headers import NotifyConsumerIdsChangedHeader
from krocket.common.message_id import pack_host
from krocket.common.metrics import Metrics
from krocket.common.remoting import Connection, RemotingCommand, RemotingServer

log = logging.getLogger(__name__)


def advertised_host(config: BrokerConfig) -> str:
    if config.broker_i_p1:
        return config.broker_i_p1
    if config.listen_host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return config.listen_host


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        root = config.store_dir
        try:
            (root / "config").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create store directory {root}: {exc.strerror}") from None
        self.polling = LongPolling()
        self.topics = TopicManager(
            root / "config",
            config.auto_create_topic_enable,
            config.default_topic_queue_nums,
            on_change=self._topics_changed,
        )
        self.offsets = ConsumerOffsetManager(root / "config")
        self.consumers = ConsumerManager(self._notify_consumer_ids_changed)
        self.store: MessageStore | None = None
        self.service: BrokerService | None = None
        self.remoting: RemotingServer | None = None
        self.registration: NameServerRegistration | None = None
        self.ha_master: HAMaster | None = None
        self.ha_slave: HASlave | None = None
        self.metadata_sync: MetadataSync | None = None
        self._http_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.state: dict[str, Any] = {"serving": False}
        self.port = config.listen_port
        self.http_port = config.http_port
        self.ha_port = config.ha_listen_port

    def _topics_changed(self) -> None:
        if self.registration is not None:
            self.registration.trigger()

    def _notify_consumer_ids_changed(self, group: str, connections: list[Connection]) -> None:
        for conn in connections:
            if conn.is_open:
                fields = NotifyConsumerIdsChangedHeader(group).to_fields()
                cmd = RemotingCommand(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, ext_fields=fields)
                asyncio.get_running_loop().create_task(self._send_oneway(conn, cmd))

    @staticmethod
    async def _send_oneway(conn: Connection, cmd: RemotingCommand) -> None:
        with contextlib.suppress(KrocketError):
            await conn.oneway(cmd)

    async def start(self) -> None:
        config = self.config
        self.topics.load()
        self.offsets.load()
        host = advertised_host(config)

        handler_ref: dict[str, Any] = {}

        def handle(conn: Connection, cmd: RemotingCommand) -> Any:
            handler = handler_ref.get("h")
            if handler is None:
                return cmd.response(ResponseCode.SYSTEM_BUSY, "the broker is still starting")
            if self.store is not None:
                self.store.hold_commit()  # before_reply commits right after this batch of requests
            return handler(conn, cmd)

        def before_reply() -> None:
            if self.store is not None:
                self.store.commit()  # buffered appends into the files before any ack leaves

        self.remoting = RemotingServer(
            handle,
            config.listen_host,
            config.listen_port,
            on_connect=lambda c: c.on_close(self.consumers.connection_closed),
            before_reply=before_reply,
        )
        self.port = await self.remoting.start()
        broker_addr = f"{host}:{self.port}"
        store_config = StoreConfig(
            root_dir=str(config.store_dir),
            commitlog_segment_bytes=config.mapped_file_size_commit_log,
            flush_mode="SYNC_FLUSH" if config.flush_disk_type == "SYNC_FLUSH" else "ASYNC_FLUSH",
            sync_flush_timeout_s=config.sync_flush_timeout / 1000.0,
            sync_flush_inline_bytes=config.sync_flush_inline_bytes,
            file_reserved_hours=config.file_reserved_time,
            disk_max_used_ratio=config.disk_max_used_space_ratio / 100.0,
            disk_warning_ratio=config.disk_space_warning_level_ratio / 100.0,
            max_message_bytes=config.max_message_size,
            store_host=pack_host((host if host[0].isdigit() else "127.0.0.1", self.port)),
        )
        self.store = MessageStore(store_config)
        await asyncio.get_running_loop().run_in_executor(None, self.store.open)
        self.service = BrokerService(config, self.store, self.topics, self.offsets, self.consumers, self.polling)
        self.store.on_dispatched(self.service.on_dispatched)
        handler_ref["h"] = make_handler(self.service, self.metrics)
        self.store.start_background(asyncio.get_running_loop())

        ha_port = config.ha_listen_port
        if not config.is_slave:
            self.ha_master = HAMaster(
                self.store, config.listen_host, config.ha_listen_port, config.slave_timeout_mills / 1000.0
            )
            ha_port = await self.ha_master.start()
            self.store.on_dispatched(self.ha_master.on_new_data)
            self.service.ha_master = self.ha_master
        self.ha_port = ha_port
        self.registration = NameServerRegistration(config, self.topics, broker_addr, f"{host}:{ha_port}")
        self.state["registration"] = self.registration
        self.state["broker"] = self
        self.service.publish_routes = self._publish_routes
        registration = self.registration
        if config.is_slave:
            self.ha_slave = HASlave(
                self.store, lambda: registration.master_ha_addr, sync_flush=config.flush_disk_type == "SYNC_FLUSH"
            )
            self.ha_slave.start()
            self.metadata_sync = MetadataSync(
                self.topics, self.offsets, lambda: registration.master_addr, config.metadata_sync_period_mills / 1000.0
            )
            self.metadata_sync.start()
        self._register_metrics()
        app = make_app(self.service, self.metrics, self.state)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, config.listen_host, config.http_port)
        await site.start()
        self.http_port = int(self._http_runner.addresses[0][1])
        self.state["serving"] = True
        self.registration.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(
            loop.create_task(self._every(config.flush_consumer_offset_interval / 1000.0, self.offsets.persist))
        )
        self._tasks.append(
            loop.create_task(
                self._every(10.0, lambda: self.consumers.scan_expired(config.channel_expired_timeout / 1000.0))
            )
        )
        log.info(
            "broker %s id %d (%s, %s) serving on %s, HTTP on %d, store %s, event loop %s",
            config.broker_name,
            config.broker_id,
            "SLAVE" if config.is_slave else config.broker_role,
            config.flush_disk_type,
            broker_addr,
            self.http_port,
            config.store_dir,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def _register_metrics(self) -> None:
        assert self.service is not None and self.store is not None
        service, store = self.service, self.store
        self.metrics.gauge_fn(
            "broker_messages_in_total", "Messages stored since start", lambda: float(service.sent_messages)
        )
        self.metrics.gauge_fn(
            "broker_messages_out_total", "Messages served to pulls since start", lambda: float(service.pulled_messages)
        )
        self.metrics.gauge_fn(
            "broker_commitlog_max_offset_bytes", "Commit log end offset", lambda: float(store.max_phy_offset)
        )
        self.metrics.gauge_fn("broker_topics", "Topics on this broker", lambda: float(len(self.topics.topics)))
        self.metrics.gauge_fn(
            "broker_suspended_pulls", "Pull requests held by long polling", lambda: float(self.polling.suspended())
        )
        self.metrics.gauge_fn(
            "broker_replication_lag_bytes",
            "Bytes a slave is behind its master (on a master: per slave; on a slave: its own)",
            self._replication_lag,
        )
        self.metrics.gauge_fn(
            "broker_consumer_lag_messages", "Messages not yet consumed, per group and topic", self._lag_by_group
        )

    async def _publish_routes(self) -> None:
        if self.registration is not None:
            try:
                await asyncio.wait_for(self.registration.register_once(), 3.0)
            except (TimeoutError, KrocketError) as exc:
                log.warning("could not publish the new topic's route at once: %s", exc)

    def replication(self) -> dict[str, Any]:
        if self.ha_master is not None:
            return {"role": "master", "slaves": self.ha_master.status()}
        if self.ha_slave is not None:
            return {"role": "slave", **self.ha_slave.status()}
        return {}

    def _replication_lag(self) -> dict[tuple[tuple[str, str], ...], float]:
        if self.ha_master is not None:
            return {(("slave", s["peer"]),): float(s["lagBytes"]) for s in self.ha_master.status()}
        if self.ha_slave is not None:
            lag = self.ha_slave.status()["lagBytes"]
            return {(("slave", "self"),): float(lag if lag is not None else -1)}
        return {}

    def _lag_by_group(self) -> dict[tuple[tuple[str, str], ...], float]:
        assert self.service is not None
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for group in self.offsets.all_groups():
            for row in self.service.consumer_progress(group):
                key = (("group", group), ("topic", row["topic"]))
                out[key] = out.get(key, 0.0) + row["lag"]
        return out

    @staticmethod
    async def _every(period: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                fn()
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    async def stop(self) -> None:
        self.state["serving"] = False
        log.info("broker %s stopping", self.config.broker_name)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.registration is not None:
            await self.registration.stop()
        if self.ha_slave is not None:
            await self.ha_slave.stop()
        if self.metadata_sync is not None:
            await self.metadata_sync.stop()
        if self.ha_master is not None:
            await self.ha_master.stop()
        self.polling.wake_all()
        if self.remoting is not None:
            await self.remoting.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        self.offsets.persist()
        if self.store is not None:
            await self.store.stop_background()
            self.store.close()
        log.info("broker %s stopped cleanly", self.config.broker_name)


async def run_broker(config: BrokerConfig, ports_file: str | None = None) -> None:
    """Run a broker until SIGTERM or SIGINT, then stop it cleanly."""
    broker = Broker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    try:
        if ports_file:
            target = Path(ports_file)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(json.dumps({"port": broker.port, "http_port": broker.http_port, "ha_port": broker.ha_port}))
            os.replace(tmp, target)
        await stop.wait()
    finally:
        await broker.stop()
