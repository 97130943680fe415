"""Broker settings, with RocketMQ's names (camelCase in YAML, snake_case here)."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krocket.broker.schedule.levels import DEFAULT_DELAY_LEVELS, DelayLevels
from krocket.common import ports
from krocket.common.codes import BROKER_PERMISSION_CHOICES, BROKER_PERMISSIONS, PERM_READ_WRITE
from krocket.common.config import build_config, env_layer, load_yaml
from krocket.common.errors import ConfigError, MessageIllegalError
from krocket.common.remoting import limits
from krocket.common.remoting.idle_spin import check_idle_spin_micros
from krocket.common.remoting.limits import ConnectionLimits
from krocket.common.remoting.tls import TlsServerSettings, client_settings_context, https_context, server_settings
from krocket.common.topic import validate_broker_name

log = logging.getLogger(__name__)

FLUSH_MODES = ("ASYNC_FLUSH", "SYNC_FLUSH")
ROLES = ("ASYNC_MASTER", "SYNC_MASTER", "SLAVE")

# KROCKET_<NAME> environment variables the broker reads (the operator sets these in pods).
ENV_SETTINGS = {
    "BROKER_ID": "brokerId",
    "ADVERTISE_HOST": "brokerIP1",
    "NAMESRV_ADDR": "namesrvAddr",
    "BROKER_NAME": "brokerName",
    "CLUSTER_NAME": "brokerClusterName",
    "STORE_DIR": "storePathRootDir",
}


@dataclass
class BrokerConfig:
    broker_cluster_name: str = "DefaultCluster"
    broker_name: str = "broker-a"
    broker_id: int = 0
    broker_role: str = "ASYNC_MASTER"
    namesrv_addr: str = ""
    listen_host: str = "0.0.0.0"
    listen_port: int = ports.BROKER_PORT
    ha_listen_port: int = ports.BROKER_HA_PORT
    http_port: int = ports.BROKER_HTTP_PORT
    # RocketMQ 5.x gRPC (krocket.broker.grpc): MessagingService on this port (0: not served), bound on
    # grpcListenHost (default listenHost); routes give clients brokerIP1 (or listenHost) with this port.
    grpc_listen_port: int = ports.BROKER_GRPC_PORT
    grpc_listen_host: str = ""
    # Bind addresses: listenHost for the remoting port (0.0.0.0 in pods, where the operator needs it; `krocket
    # local up` binds 127.0.0.1), the HA and HTTP ports bind haListenHost / httpListenHost (default: listenHost).
    ha_listen_host: str = ""
    http_listen_host: str = ""
    # TLS (krocket.common.remoting.tls), RocketMQ's names: the remoting and HA ports serve in tlsMode (disabled,
    # permissive: TLS and plain on one port, enforcing: TLS only) with this certificate and key; client
    # certificates are required and checked against tlsServerTrustCertPath when tlsServerNeedClientAuth is true.
    tls_mode: str = "disabled"
    tls_server_cert_path: str = ""
    tls_server_key_path: str = ""
    tls_server_trust_cert_path: str = ""
    tls_server_need_client_auth: bool = False
    # The broker's own connections out (name servers, its master's remoting and HA ports) use TLS when tlsEnable.
    tls_enable: bool = False
    tls_client_trust_cert_path: str = ""
    tls_client_cert_path: str = ""
    tls_client_key_path: str = ""
    http_tls_enable: bool = False  # the HTTP port serves HTTPS with tlsServerCertPath / tlsServerKeyPath
    # The gRPC port serves TLS only (grpcio cannot serve TLS and plaintext on one port) with the same certificate;
    # with tlsServerNeedClientAuth it requires client certificates chaining to tlsServerTrustCertPath.
    grpc_tls_enable: bool = False
    broker_i_p1: str = ""  # advertised host; RocketMQ calls it brokerIP1
    store_path_root_dir: str = "./store"
    flush_disk_type: str = "ASYNC_FLUSH"
    mapped_file_size_commit_log: int = 1024 * 1024 * 1024
    auto_create_topic_enable: bool = False
    auto_create_subscription_group: bool = True  # a heartbeat or pull of an unknown group creates it
    default_topic_queue_nums: int = 8
    max_message_size: int = 4 * 1024 * 1024
    file_reserved_time: float = 72  # hours a commit log segment is kept after its last write (fractions allowed)
    disk_max_used_space_ratio: int = 75
    disk_space_warning_level_ratio: int = 90
    # Disk full (store/disk_space.py): writes are refused while fewer bytes than this are free (at most 10 % of
    # the volume is kept); segments roll by time too, so retention can free a small volume (0: by size only).
    disk_free_reserve_bytes: int = 64 * 1024 * 1024
    commit_log_roll_interval_mills: int = 3_600_000
    clean_resource_interval: int = 10_000  # ms between retention rounds (RocketMQ's name)
    max_hash_slot_num: int = 500_000  # index file hash slots (RocketMQ's name; its default is 5 million)
    max_index_num: int = 2_000_000  # entries per index file (RocketMQ's name; its default is 20 million)
    register_name_server_period: int = 30_000
    long_polling_enable: bool = True
    short_polling_time_mills: int = 1000
    channel_expired_timeout: int = 120_000
    flush_consumer_offset_interval: int = 5000
    sync_flush_timeout: int = 5000
    sync_flush_inline_bytes: int = 64 * 1024  # krocket: smaller SYNC_FLUSH rounds fdatasync on the loop thread
    ha_master_address: str = ""  # a slave's master HA address; by default learned from the name servers
    slave_timeout_mills: int = 3000  # SYNC_MASTER: wait this long for a slave before FLUSH_SLAVE_TIMEOUT
    access_message_in_memory_max_ratio: int = 40  # % of RAM: reads further behind are sent to a slave
    metadata_sync_period_mills: int = 10_000
    # Delay levels (krocket.broker.schedule): the delay of level 1, 2, ... (units ms, s, m, h, d).
    message_delay_level: str = DEFAULT_DELAY_LEVELS
    # Transactions (krocket.broker.transaction): a half message older than transactionTimeOut (ms) with no outcome
    # is checked with its producer every transactionCheckInterval (ms), at most transactionCheckMax times.
    transaction_time_out: int = 6000
    transaction_check_interval: int = 60_000
    transaction_check_max: int = 15
    # Remoting resource limits (krocket.common.remoting.limits): connections, buffered incomplete-frame bytes
    # per connection and for the whole server, and how long a connection may hold an incomplete frame or idle.
    max_connections: int = limits.DEFAULT_MAX_CONNECTIONS
    max_pending_frame_bytes: int = limits.DEFAULT_MAX_PENDING_FRAME_BYTES
    server_buffer_budget_bytes: int = limits.DEFAULT_BUFFER_BUDGET_BYTES
    incomplete_frame_timeout_mills: int = int(limits.DEFAULT_INCOMPLETE_FRAME_TIMEOUT_S * 1000)
    # RocketMQ: serverChannelMaxIdleTimeSeconds
    channel_idle_timeout_mills: int = int(limits.DEFAULT_IDLE_TIMEOUT_S * 1000)
    # RocketMQ's brokerPermission: what the whole broker allows on top of each topic's perm (6 read+write, 4 read
    # only: sends are refused and the name servers route producers elsewhere, 2 write only). Changed at run time by
    # wipe-write-perm / add-write-perm, the operator's drains and master restarts; not persisted.
    broker_permission: int = PERM_READ_WRITE
    acl_enable: bool = False  # RocketMQ 4.x ACL: check every request against aclConfigFile (plain_acl.yml)
    acl_config_file: str = ""
    http_admin_token_file: str = ""  # with the ACL on: a bearer token for HTTP admin writes
    # Low-latency idle strategy (krocket.common.remoting.idle_spin): after an I/O event the event loop polls
    # without blocking for up to this many microseconds before it blocks (0: off; costs CPU, asyncio loop only).
    idle_spin_micros: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_slave(self) -> bool:
        return self.broker_id != 0 or self.broker_role == "SLAVE"

    @property
    def ha_bind_host(self) -> str:
        return self.ha_listen_host or self.listen_host

    @property
    def http_bind_host(self) -> str:
        return self.http_listen_host or self.listen_host

    @property
    def grpc_bind_host(self) -> str:
        return self.grpc_listen_host or self.listen_host

    def tls_server_settings(self) -> TlsServerSettings:
        """The remoting and HA ports' TLS settings; ``ConfigError`` names a wrong key."""
        return server_settings(
            self.tls_mode,
            self.tls_server_cert_path,
            self.tls_server_key_path,
            self.tls_server_trust_cert_path,
            self.tls_server_need_client_auth,
        )

    def tls_client_context(self) -> ssl.SSLContext | None:
        """The client context of the broker's own connections out, None unless tlsEnable."""
        return client_settings_context(
            self.tls_enable, self.tls_client_trust_cert_path, self.tls_client_cert_path, self.tls_client_key_path
        )

    def grpc_tls_settings(self) -> TlsServerSettings | None:
        """The gRPC port's TLS (TLS only, the remoting port's certificate), None unless grpcTlsEnable."""
        if not self.grpc_tls_enable:
            return None
        return server_settings(
            "enforcing",
            self.tls_server_cert_path,
            self.tls_server_key_path,
            self.tls_server_trust_cert_path,
            self.tls_server_need_client_auth,
        )

    def http_ssl_context(self) -> ssl.SSLContext | None:
        """The HTTP port's server context, None unless httpTlsEnable (it needs the server certificate and key)."""
        return https_context(self.tls_server_cert_path, self.tls_server_key_path) if self.http_tls_enable else None

    def validate(self) -> None:
        if self.flush_disk_type not in FLUSH_MODES:
            raise ConfigError(f"flushDiskType must be one of {', '.join(FLUSH_MODES)}, got {self.flush_disk_type!r}")
        if self.broker_role not in ROLES:
            raise ConfigError(f"brokerRole must be one of {', '.join(ROLES)}, got {self.broker_role!r}")
        if self.broker_permission not in BROKER_PERMISSIONS:
            raise ConfigError(f"brokerPermission must be {BROKER_PERMISSION_CHOICES}, got {self.broker_permission}")
        if self.broker_id < 0:
            raise ConfigError(f"brokerId must be 0 (master) or a positive slave id, got {self.broker_id}")
        for name in ("listen_port", "ha_listen_port", "http_port", "grpc_listen_port"):
            port = getattr(self, name)
            if not 0 <= port < 65536:
                raise ConfigError(f"{name} must be a TCP port (0 picks a free one), got {port}")
        for key, name in (("brokerName", self.broker_name), ("brokerClusterName", self.broker_cluster_name)):
            try:
                validate_broker_name(key, name)
            except MessageIllegalError as exc:
                raise ConfigError(exc.message) from None
        if self.mapped_file_size_commit_log < 64 * 1024:
            raise ConfigError("mappedFileSizeCommitLog must be at least 64 KiB")
        if not 1 <= self.disk_space_warning_level_ratio <= 99:
            raise ConfigError("diskSpaceWarningLevelRatio must be a percentage between 1 and 99")
        if self.file_reserved_time < 0 or self.disk_free_reserve_bytes < 0 or self.commit_log_roll_interval_mills < 0:
            raise ConfigError("fileReservedTime, diskFreeReserveBytes and commitLogRollIntervalMills must be 0 or more")
        if self.clean_resource_interval <= 0 or self.max_hash_slot_num <= 0 or self.max_index_num <= 0:
            raise ConfigError("cleanResourceInterval, maxHashSlotNum and maxIndexNum must be positive")
        if self.sync_flush_inline_bytes < 0:
            raise ConfigError(f"syncFlushInlineBytes must be 0 or more, got {self.sync_flush_inline_bytes}")
        self.tls_server_settings().context()  # certificate files load, or a ConfigError naming the key
        self.tls_client_context()
        self.http_ssl_context()
        grpc_tls = self.grpc_tls_settings()
        if grpc_tls is not None:
            grpc_tls.context()
        if self.acl_enable and not self.acl_config_file:
            raise ConfigError("aclEnable is true but aclConfigFile is not set: name the plain_acl.yml to use")
        self.connection_limits()
        self.delay_levels()
        if self.sync_flush_timeout <= 0:
            raise ConfigError(f"syncFlushTimeout must be a positive number of ms, got {self.sync_flush_timeout}")
        check_idle_spin_micros(self.idle_spin_micros)

    def delay_levels(self) -> DelayLevels:
        """messageDelayLevel parsed; ``ConfigError`` naming the bad delay."""
        return DelayLevels.parse(self.message_delay_level)

    def connection_limits(self) -> ConnectionLimits:
        """The remoting server's limits; ``ConfigError`` when one is not positive."""
        return ConnectionLimits.from_settings(
            [
                ("maxConnections", self.max_connections),
                ("maxPendingFrameBytes", self.max_pending_frame_bytes),
                ("serverBufferBudgetBytes", self.server_buffer_budget_bytes),
                ("incompleteFrameTimeoutMills", self.incomplete_frame_timeout_mills),
                ("channelIdleTimeoutMills", self.channel_idle_timeout_mills),
            ]
        )

    @property
    def store_dir(self) -> Path:
        return Path(self.store_path_root_dir)


def load_broker_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> BrokerConfig:
    """File < ``KROCKET_*`` environment < explicit overrides (CLI flags)."""
    file_layer = load_yaml(path) if path else {}
    env = env_layer("KROCKET_", ENV_SETTINGS)
    _check_broker_id_env()
    if "namesrvAddr" not in env and _env_namesrv():
        env["namesrvAddr"] = _env_namesrv()
    config = build_config(BrokerConfig, file_layer, env, overrides or {})
    config.validate()
    if config.extra:
        log.warning("settings krocket does not use (kept, ignored): %s", ", ".join(sorted(config.extra)))
    return config


def _check_broker_id_env() -> None:
    """``KROCKET_BROKER_ID`` set but empty or not a number is a start error, never brokerId 0 (a second master).

    In a pod the operator fills it from the ``apps.kubernetes.io/pod-index`` label (Kubernetes 1.28+); with no
    such label the variable is empty.
    """
    import os

    raw = os.environ.get("KROCKET_BROKER_ID")
    if raw is None:
        return
    if not raw.strip():
        raise ConfigError(
            "KROCKET_BROKER_ID is set but empty (in a pod: the apps.kubernetes.io/pod-index label is missing, "
            "which Kubernetes 1.28+ sets); refusing to start as brokerId 0, which would be a second master"
        )
    if not raw.strip().isdigit():
        raise ConfigError(f"KROCKET_BROKER_ID must be a whole number >= 0 (0: master), got {raw!r}")


def _env_namesrv() -> str:
    import os

    return os.environ.get("NAMESRV_ADDR", "")
