"""``krocket namesrv``, ``krocket broker`` and ``krocket operator``: the long-running servers."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from krocket.cli.arg_types import broker_id, port_or_zero, positive_int
from krocket.common import ports
from krocket.common.errors import ConfigError
from krocket.common.remoting.idle_spin import (
    MAX_IDLE_SPIN_MICROS,
    check_loop_supports_spin,
    idle_spin_loop,
    idle_spin_micros_problem,
)
from krocket.namesrv import command as namesrv_command

log = logging.getLogger(__name__)


def idle_spin_micros_argument(text: str) -> int:
    """argparse type of ``--idle-spin-micros``: a whole number of microseconds, 0..MAX_IDLE_SPIN_MICROS."""
    problem = idle_spin_micros_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return int(text)


def register(sub: Any) -> None:
    ns = sub.add_parser("namesrv", help="run a name server")
    namesrv_command.add_arguments(ns)
    ns.set_defaults(func=run_namesrv)

    br = sub.add_parser("broker", help="run a broker (flags override the --config YAML file)")
    br.add_argument("--config", "-c", default=None, help="YAML file of broker settings (RocketMQ names)")
    br.add_argument(
        "--bind",
        "--host",
        dest="listenHost",
        default=None,
        help="address the remoting port binds (default 0.0.0.0: every interface; also the default of the others)",
    )
    br.add_argument("--ha-bind", dest="haListenHost", default=None, help="address the HA port binds (default --bind)")
    br.add_argument(
        "--http-bind", dest="httpListenHost", default=None, help="address the HTTP port binds (default --bind)"
    )
    br.add_argument(
        "--grpc-bind", dest="grpcListenHost", default=None, help="address the gRPC port binds (default --bind)"
    )
    br.add_argument(
        "--tls-mode",
        dest="tlsMode",
        choices=["disabled", "permissive", "enforcing"],
        default=None,
        help="TLS of the remoting and HA ports (default disabled; permissive: TLS and plain on one port)",
    )
    br.add_argument("--tls-cert", dest="tlsServerCertPath", default=None, help="PEM certificate chain of the broker")
    br.add_argument("--tls-key", dest="tlsServerKeyPath", default=None, help="PEM private key of the broker")
    br.add_argument(
        "--tls-trust-cert",
        dest="tlsServerTrustCertPath",
        default=None,
        help="CA of client certificates, required with --tls-need-client-auth",
    )
    br.add_argument(
        "--tls-need-client-auth", dest="tlsServerNeedClientAuth", action="store_const", const=True, default=None
    )
    br.add_argument(
        "--tls-enable",
        dest="tlsEnable",
        action="store_const",
        const=True,
        default=None,
        help="the broker's own connections (name servers, its master) use TLS",
    )
    br.add_argument("--tls-ca", dest="tlsClientTrustCertPath", default=None, help="CA those connections trust")
    br.add_argument(
        "--http-tls",
        dest="httpTlsEnable",
        action="store_const",
        const=True,
        default=None,
        help="serve HTTPS on the HTTP port with the --tls-cert/--tls-key certificate",
    )
    br.add_argument(
        "--grpc-tls",
        dest="grpcTlsEnable",
        action="store_const",
        const=True,
        default=None,
        help="serve TLS only on the gRPC port (5.x clients) with the --tls-cert/--tls-key certificate",
    )
    br.add_argument(
        "--listen-port",
        dest="listenPort",
        type=port_or_zero,
        default=None,
        help=f"remoting port (default {ports.BROKER_PORT})",
    )
    br.add_argument(
        "--http-port",
        dest="httpPort",
        type=port_or_zero,
        default=None,
        help=f"HTTP port (default {ports.BROKER_HTTP_PORT})",
    )
    br.add_argument(
        "--ha-port",
        dest="haListenPort",
        type=port_or_zero,
        default=None,
        help=f"HA port (default {ports.BROKER_HA_PORT})",
    )
    br.add_argument(
        "--grpc-port",
        dest="grpcListenPort",
        type=port_or_zero,
        default=None,
        help=f"gRPC port for RocketMQ 5.x clients (grpcListenPort; default {ports.BROKER_GRPC_PORT}; 0: not served)",
    )
    br.add_argument("--namesrv", dest="namesrvAddr", default=None, help="name servers host:port[;host:port]")
    br.add_argument("--cluster", dest="brokerClusterName", default=None, help="cluster name (default DefaultCluster)")
    br.add_argument("--broker-name", dest="brokerName", default=None, help="broker group name (default broker-a)")
    br.add_argument("--broker-id", dest="brokerId", type=broker_id, default=None, help="0 = master, >0 = slave")
    br.add_argument("--role", dest="brokerRole", choices=["ASYNC_MASTER", "SYNC_MASTER", "SLAVE"], default=None)
    br.add_argument("--flush", dest="flushDiskType", choices=["ASYNC_FLUSH", "SYNC_FLUSH"], default=None)
    br.add_argument("--store-dir", dest="storePathRootDir", default=None, help="data directory (default ./store)")
    br.add_argument(
        "--advertise-host",
        dest="brokerIP1",
        default=None,
        help="host clients and name servers use to reach this broker",
    )
    br.add_argument(
        "--segment-bytes",
        dest="mappedFileSizeCommitLog",
        type=positive_int,
        default=None,
        help="commit log segment size in bytes (default 1 GiB)",
    )
    auto = br.add_mutually_exclusive_group()
    auto.add_argument(
        "--auto-create-topic",
        dest="autoCreateTopicEnable",
        action="store_const",
        const=True,
        default=None,
        help="create unknown topics on first send (RocketMQ's TBW102 way)",
    )
    auto.add_argument("--no-auto-create-topic", dest="autoCreateTopicEnable", action="store_const", const=False)
    br.add_argument(
        "--acl",
        dest="aclConfigFile",
        default=None,
        metavar="FILE",
        help="plain_acl.yml: turns ACL on (aclEnable) and checks every request against that file",
    )
    br.add_argument(
        "--idle-spin-micros",
        dest="idleSpinMicros",
        type=idle_spin_micros_argument,
        default=None,
        metavar="N",
        help="after each I/O event, poll without blocking for up to N us before blocking (idleSpinMicros; "
        f"default 0 = off, at most {MAX_IDLE_SPIN_MICROS}): lower one-at-a-time latency for CPU; asyncio loop only",
    )
    br.add_argument("--ports-file", default=None, help="write the bound ports as JSON to this file")
    br.set_defaults(func=run_broker)

    op = sub.add_parser("operator", help="run the Kubernetes operator (needs the 'operator' extra)")
    op.add_argument("--namespace", "-n", action="append", default=None, help="namespace to watch (repeatable)")
    op.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    op.add_argument(
        "--liveness-port", type=port_or_zero, default=8080, help="kopf liveness endpoint port (default 8080)"
    )
    op.add_argument("--peering", default=None, help="kopf peering object name for leader election")
    op.add_argument(
        "--metrics-port",
        type=port_or_zero,
        default=8081,
        help="operator Prometheus metrics on this port, path /metrics (default 8081; 0: off)",
    )
    op.set_defaults(func=run_operator)


def run_namesrv(args: argparse.Namespace) -> int:
    namesrv_command.run(args)
    return 0


BROKER_FLAGS = (
    "listenHost",
    "listenPort",
    "httpPort",
    "haListenPort",
    "grpcListenPort",
    "namesrvAddr",
    "brokerClusterName",
    "brokerName",
    "brokerId",
    "brokerRole",
    "flushDiskType",
    "storePathRootDir",
    "brokerIP1",
    "mappedFileSizeCommitLog",
    "autoCreateTopicEnable",
    "haListenHost",
    "httpListenHost",
    "grpcListenHost",
    "tlsMode",
    "tlsServerCertPath",
    "tlsServerKeyPath",
    "tlsServerTrustCertPath",
    "tlsServerNeedClientAuth",
    "tlsEnable",
    "tlsClientTrustCertPath",
    "httpTlsEnable",
    "grpcTlsEnable",
    "aclConfigFile",
    "idleSpinMicros",
)


def run_broker(args: argparse.Namespace) -> int:
    from krocket.broker.config import load_broker_config
    from krocket.broker.server import run_broker as serve

    overrides = {name: getattr(args, name) for name in BROKER_FLAGS if getattr(args, name) is not None}
    if args.aclConfigFile is not None:
        overrides["aclEnable"] = True
    config = load_broker_config(args.config, overrides)
    try:
        with _broker_runner(config.idle_spin_micros) as runner:
            runner.run(serve(config, args.ports_file))
    except OSError as exc:
        raise ConfigError(f"broker cannot start: {exc}") from None
    return 0


def _broker_runner(idle_spin_micros: int) -> asyncio.Runner:
    """The broker's event loop runner: the process's loop policy, or with ``idleSpinMicros`` > 0 an asyncio loop
    whose selector spins that long after each event (refused under uvloop, which has no hook for it)."""
    if not idle_spin_micros:
        return asyncio.Runner()
    check_loop_supports_spin(idle_spin_micros)
    log.info(
        "idle spin on: the event loop polls without blocking for up to %d us after each I/O event "
        "(idleSpinMicros; costs CPU while traffic flows, none when idle)",
        idle_spin_micros,
    )
    return asyncio.Runner(loop_factory=lambda: idle_spin_loop(idle_spin_micros))


def run_operator(args: argparse.Namespace) -> int:
    try:
        from krocket.operator.main import run
    except ImportError as exc:
        raise ConfigError(f"the operator needs the 'operator' extra (pip install 'krocket[operator]'): {exc}") from None
    try:
        run(
            namespaces=args.namespace,
            cluster_wide=args.all_namespaces,
            liveness_port=args.liveness_port,
            peering=args.peering,
            metrics_port=args.metrics_port,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0
