"""The broker process: store, remoting server, HTTP app, name server registration, housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from krocket.broker.acl import own_traffic_signer
from krocket.broker.acl.http_guard import HttpGuard, read_token_file
from krocket.broker.config import BrokerConfig
from krocket.broker.consumer_manager import ConsumerManager
from krocket.broker.fastpath import FastSendPath, fast_path_enabled
from krocket.broker.grpc.server import GrpcServer
from krocket.broker.ha.master import HAMaster
from krocket.broker.ha.metadata_sync import MetadataSync
from krocket.broker.ha.slave import HASlave
from krocket.broker.http import BrokerState, make_app
from krocket.broker.long_polling import LongPolling
from krocket.broker.metrics import register_broker_metrics
from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.pop.service import PopService
from krocket.broker.processors import REQUESTS, SEND_LATENCY, BrokerHandler, make_handler
from krocket.broker.registration import NameServerRegistration
from krocket.broker.schedule.delivery import ScheduleDelivery, install_due_times
from krocket.broker.service import BrokerService
from krocket.broker.store import MessageStore, StoreConfig
from krocket.broker.topic_manager import TopicManager
from krocket.broker.transaction import TransactionService, run_checks
from krocket.common.acl import AclFile
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import ConfigError, KrocketError
from krocket.common.headers import NotifyConsumerIdsChangedHeader
from krocket.common.message_id import pack_host
from krocket.common.metrics import Metrics
from krocket.common.remoting import Connection, ConnectionPool, RemotingCommand, RemotingServer

log = logging.getLogger(__name__)


def advertised_host(config: BrokerConfig) -> str:
    if config.broker_i_p1:
        return config.broker_i_p1
    if config.listen_host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return config.listen_host


class RemotingFrontEnd:
    """The remoting server's handler and before-reply hook. The server listens before the store opens (the
    store's host field needs the bound port): until ``serve`` brings the store and the processors, every
    request is answered SYSTEM_BUSY."""

    __slots__ = ("_fast", "_serving")

    def __init__(self) -> None:
        self._serving: tuple[MessageStore, BrokerHandler] | None = None
        self._fast: FastSendPath | None = None

    def serve(self, store: MessageStore, handler: BrokerHandler, fast: FastSendPath | None = None) -> None:
        self._serving = (store, handler)
        self._fast = fast

    @property
    def fast_send_path(self) -> FastSendPath | None:
        return self._fast

    def fast_path(self, conn: Connection, buf: bytearray) -> int:
        """The connections' per-read hook: the send fast path once serving (and when it is on)."""
        fast = self._fast
        return fast(conn, buf) if fast is not None else 0

    def handle(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand | Awaitable[RemotingCommand] | None:
        serving = self._serving
        if serving is None:
            return cmd.response(ResponseCode.SYSTEM_BUSY, "the broker is still starting")
        store, handler = serving
        store.hold_commit()  # before_reply commits right after this batch of requests
        return handler(conn, cmd)

    def before_reply(self) -> None:
        if self._serving is not None:
            self._serving[0].commit()  # buffered appends into the files before any ack leaves


@dataclass(slots=True)
class RunningParts:
    """What ``Broker.start`` builds once the loop runs and the remoting port is bound, set in one piece.
    A master has ``ha_master``; a slave has ``ha_slave`` and ``metadata_sync``."""

    remoting: RemotingServer
    store: MessageStore
    service: BrokerService
    registration: NameServerRegistration
    ha_master: HAMaster | None
    ha_slave: HASlave | None
    metadata_sync: MetadataSync | None


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
        self.topics.broker_permission = config.broker_permission
        self.offsets = ConsumerOffsetManager(root / "config")
        self.consumers = ConsumerManager(self._notify_consumer_ids_changed)
        self.front_end = RemotingFrontEnd()
        # The ACL's rules (re-read when the file changes); a bad file at start is a ConfigError naming the field.
        self.acl = AclFile(config.acl_config_file) if config.acl_enable else None
        sign = own_traffic_signer(self.acl) if self.acl is not None else None
        self._sign_own_requests = sign
        token_file = config.http_admin_token_file
        self._http_admin_token = read_token_file(token_file) if self.acl is not None and token_file else None
        self.running: RunningParts | None = None  # set by start()
        self.http_state: BrokerState | None = None  # set by start(), with the registration it shows
        self._http_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = config.listen_port
        self.http_port = config.http_port
        self.ha_port = config.ha_listen_port
        self.grpc: GrpcServer | None = None  # the 5.x gRPC port, when served
        self.grpc_port = 0
        self.schedule_delivery: ScheduleDelivery | None = None  # the master's delivery of delayed messages

    def _topics_changed(self) -> None:
        if self.running is not None:
            self.running.registration.trigger()

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

        tls = config.tls_server_settings()
        server_tls, client_tls = tls.context(), config.tls_client_context()
        front_end = self.front_end
        remoting = RemotingServer(
            front_end.handle,
            config.listen_host,
            config.listen_port,
            on_connect=lambda c: c.on_close(self.consumers.connection_closed),
            before_reply=front_end.before_reply,
            tls_mode=tls.mode,
            ssl_context=server_tls,
            limits=config.connection_limits(),
            fast_path=front_end.fast_path if self.acl is None and fast_path_enabled() else None,
        )
        self.port = await remoting.start()
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
            disk_free_reserve_bytes=config.disk_free_reserve_bytes,
            commitlog_roll_interval_ms=config.commit_log_roll_interval_mills,
            retention_interval_s=config.clean_resource_interval / 1000.0,
            index_hash_slots=config.max_hash_slot_num,
            index_max_entries=config.max_index_num,
            max_message_bytes=config.max_message_size,
            store_host=pack_host((host if host[0].isdigit() else "127.0.0.1", self.port)),
        )
        store = MessageStore(store_config)
        install_due_times(store, config.delay_levels())  # before open: recovery computes the same due times
        await asyncio.get_running_loop().run_in_executor(None, store.open)
        service = BrokerService(config, store, self.topics, self.offsets, self.consumers, self.polling)
        store.on_dispatched(service.on_dispatched)
        handler = make_handler(service, self.metrics, self.acl)
        fast: FastSendPath | None = None
        if remoting.fast_path is not None:
            requests = self.metrics.counter(REQUESTS, "")  # make_handler's family
            send_latency = self.metrics.histogram(SEND_LATENCY, "")
            fast = FastSendPath(
                service, remoting.limits.max_pending_frame_bytes, requests.values, send_latency=send_latency
            )
            log.info("send fast path: %s", fast.implementation)
        else:
            log.info("send fast path: off (%s)", "ACL is on" if self.acl is not None else "KROCKET_FAST_PATH=0")
        front_end.serve(store, handler, fast)
        store.start_background(asyncio.get_running_loop())
        if not config.is_slave:  # slaves replicate the waiting messages; only the master delivers them
            self.schedule_delivery = ScheduleDelivery(store, service.delay_levels, config.store_dir / "config")
            self.schedule_delivery.start()

        ha_port = config.ha_listen_port
        ha_master: HAMaster | None = None
        if not config.is_slave:
            ha_master = HAMaster(
                store,
                config.ha_bind_host,
                config.ha_listen_port,
                config.slave_timeout_mills / 1000.0,
                tls_mode=tls.mode,
                ssl_context=server_tls,
            )
            ha_port = await ha_master.start()
            store.on_dispatched(ha_master.on_new_data)
            service.ha_master = ha_master
            service.transactions = TransactionService(config, store, self.topics, self.offsets, self.consumers)
            service.transactions.ensure_topics()
            service.pop = PopService(service, config.store_dir / "config")
            service.pop.start()
        self.ha_port = ha_port
        registration = NameServerRegistration(
            config, self.topics, broker_addr, f"{host}:{ha_port}", sign=self._sign_own_requests
        )
        self.http_state = BrokerState(registration, self.replication)
        service.publish_routes = lambda: self._publish_routes(registration)
        ha_slave: HASlave | None = None
        metadata_sync: MetadataSync | None = None
        if config.is_slave:
            ha_slave = HASlave(
                store,
                lambda: registration.master_ha_addr,
                sync_flush=config.flush_disk_type == "SYNC_FLUSH",
                ssl_context=client_tls,
                broker_id=config.broker_id,
            )
            ha_slave.start()
            metadata_sync = MetadataSync(
                self.topics,
                self.offsets,
                lambda: registration.master_addr,
                config.metadata_sync_period_mills / 1000.0,
                sign=self._sign_own_requests,
                ssl_context=client_tls,
                groups=service.groups,
                delay_offsets_dir=config.store_dir / "config",
            )
            metadata_sync.start()
        self.running = RunningParts(remoting, store, service, registration, ha_master, ha_slave, metadata_sync)
        self._register_metrics(self.running)
        guard = HttpGuard(self.acl, self._http_admin_token) if self.acl is not None else None
        app = make_app(service, self.metrics, self.http_state, guard)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(
            self._http_runner, config.http_bind_host, config.http_port, ssl_context=config.http_ssl_context()
        )
        await site.start()
        self.http_port = int(self._http_runner.addresses[0][1])
        registration.http_url = f"{'https' if config.http_tls_enable else 'http'}://{host}:{self.http_port}"
        await self._start_grpc(service, registration, host)
        self.http_state.serving = True
        registration.start()
        if self.acl is not None:
            self.acl.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(
            loop.create_task(self._every(config.flush_consumer_offset_interval / 1000.0, _metadata_persist(service)))
        )
        self._tasks.append(
            loop.create_task(
                self._every(10.0, lambda: self.consumers.scan_expired(config.channel_expired_timeout / 1000.0))
            )
        )
        if service.transactions is not None:
            self._tasks.append(loop.create_task(run_checks(service.transactions, self._send_oneway)))
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

    async def _start_grpc(self, service: BrokerService, registration: NameServerRegistration, host: str) -> None:
        """The 5.x gRPC port (grpcListenPort; 0: not served), advertised to the name servers with the host the
        remoting address gives."""
        config = self.config
        if not config.grpc_listen_port:
            return
        pool = ConnectionPool(ssl_context=config.tls_client_context())
        pool.request_hook = self._sign_own_requests
        acl_file = self.acl
        self.grpc = GrpcServer(service, pool, (lambda: acl_file.rules) if acl_file is not None else None)
        self.grpc_port = await self.grpc.start()
        registration.grpc_addr = f"{host}:{self.grpc_port}"
        log.info(
            "gRPC (RocketMQ 5.x clients) on %s:%d%s",
            config.grpc_bind_host,
            self.grpc_port,
            " (TLS)" if config.grpc_tls_enable else "",
        )

    def _register_metrics(self, running: RunningParts) -> None:
        register_broker_metrics(
            self.metrics,
            running.service,
            self.polling,
            self.front_end.fast_send_path,
            running.ha_master,
            running.ha_slave,
        )

    @staticmethod
    async def _publish_routes(registration: NameServerRegistration) -> None:
        try:
            await asyncio.wait_for(registration.register_once(), 3.0)
        except (TimeoutError, KrocketError) as exc:
            log.warning("could not publish the new topic's route at once: %s", exc)

    def replication(self) -> dict[str, Any]:
        running = self.running
        if running is not None and running.ha_master is not None:
            return {"role": "master", "slaves": running.ha_master.status()}
        if running is not None and running.ha_slave is not None:
            return {"role": "slave", **running.ha_slave.status()}
        return {}

    @staticmethod
    async def _every(period: float, fn: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                fn()
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    async def stop(self) -> None:
        if self.http_state is not None:
            self.http_state.serving = False
        log.info("broker %s stopping", self.config.broker_name)
        if self.acl is not None:
            await self.acl.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = self.running
        if running is not None:
            await running.registration.stop()
            if running.ha_slave is not None:
                await running.ha_slave.stop()
            if running.metadata_sync is not None:
                await running.metadata_sync.stop()
            if running.ha_master is not None:
                await running.ha_master.stop()
        self.polling.wake_all()
        if self.grpc is not None:
            await self.grpc.stop()
        if running is not None:
            await running.remoting.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if running is not None and running.service.pop is not None:
            await running.service.pop.stop()  # writes the offsets, then the pop log's replay offset
        self.offsets.persist()
        self.offsets.close()
        self.topics.close()  # a compaction in flight finishes; the journals hold every change anyway
        if self.schedule_delivery is not None:
            await self.schedule_delivery.stop()
        if running is not None:
            await running.store.stop_background()
            running.store.close()
            if self.schedule_delivery is not None:
                self.schedule_delivery.persist_all()  # once the close flushed every re-put
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
            ports = {
                "port": broker.port,
                "http_port": broker.http_port,
                "ha_port": broker.ha_port,
                "grpc_port": broker.grpc_port,
            }
            tmp.write_text(json.dumps(ports))
            os.replace(tmp, target)
        await stop.wait()
    finally:
        await broker.stop()


def _metadata_persist(service: BrokerService) -> Callable[[], None]:
    """The periodic write of consumer offsets, and of subscription groups a full disk refused before."""

    def persist() -> None:
        if service.pop is not None:
            service.pop.persist()  # the offsets, then the pop log's replay offset that relies on them
        else:
            service.offsets.persist()
        service.groups.persist_if_unsaved()

    return persist
