"""Running one name server from a command line: ``python -m krocket.namesrv`` and ``krocket namesrv``.

``--ports-file PATH`` writes ``{"port": ..., "http_port": ...}`` once both are bound, so a caller that
asked for port 0 learns the chosen ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from krocket.common import ports
from krocket.common.errors import ConfigError
from krocket.common.remoting.limits import ConnectionLimits
from krocket.common.remoting.tls import https_context, server_settings
from krocket.namesrv.server import SCAN_INTERVAL_SECONDS, NameServer, run_namesrv


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The name server's options, shared by ``python -m krocket.namesrv`` and ``krocket namesrv``."""
    p.add_argument(
        "--bind",
        "--host",
        dest="host",
        default="0.0.0.0",
        help="address the remoting port binds (default 0.0.0.0: every interface; 127.0.0.1 for this machine only)",
    )
    p.add_argument("--http-bind", default=None, help="address the HTTP port binds (default: the --bind address)")
    add_tls_arguments(p)
    p.add_argument(
        "--port",
        "--listen-port",
        dest="port",
        type=int,
        default=ports.NAMESRV_PORT,
        help=f"remoting port (default {ports.NAMESRV_PORT}; 0 = any free port)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=ports.NAMESRV_HTTP_PORT,
        help=f"HTTP port (default {ports.NAMESRV_HTTP_PORT}; 0 = any free port)",
    )
    p.add_argument("--data-dir", default=None, help="directory for kvConfig.json (default: in memory only)")
    p.add_argument(
        "--scan-interval",
        type=float,
        default=SCAN_INTERVAL_SECONDS,
        help="seconds between broker expiry scans (default 10)",
    )
    p.add_argument("--ports-file", default=None, help="write the bound ports as JSON to this file")
    p.add_argument(
        "--acl",
        default=None,
        metavar="FILE",
        help="plain_acl.yml: registrations, topic deletions and KV writes then need an admin's signed request",
    )
    _add_limit_arguments(p)


def _add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """The remoting limits, the broker's defaults (its maxConnections, maxPendingFrameBytes, ... settings)."""
    d = ConnectionLimits()
    limits = p.add_argument_group("remoting limits")
    limits.add_argument("--max-connections", type=int, default=d.max_connections, help="(default %(default)s)")
    limits.add_argument(
        "--max-pending-frame-bytes", type=int, default=d.max_pending_frame_bytes, help="largest frame (%(default)s)"
    )
    limits.add_argument(
        "--buffer-budget-bytes",
        type=int,
        default=d.buffer_budget_bytes,
        help="incomplete-frame bytes all connections may buffer together (default %(default)s)",
    )
    limits.add_argument(
        "--incomplete-frame-timeout-ms",
        type=int,
        default=int(d.incomplete_frame_timeout_s * 1000),
        help="close a connection holding an incomplete frame this long (default %(default)s)",
    )
    limits.add_argument(
        "--channel-idle-timeout-ms",
        type=int,
        default=int(d.idle_timeout_s * 1000),
        help="close a connection idle this long (default %(default)s)",
    )


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    """The limits of ``_add_limit_arguments``; ``ConfigError`` when one is not positive."""
    return ConnectionLimits.from_settings(
        [
            ("--max-connections", args.max_connections),
            ("--max-pending-frame-bytes", args.max_pending_frame_bytes),
            ("--buffer-budget-bytes", args.buffer_budget_bytes),
            ("--incomplete-frame-timeout-ms", args.incomplete_frame_timeout_ms),
            ("--channel-idle-timeout-ms", args.channel_idle_timeout_ms),
        ]
    )


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    """TLS of the remoting port (``krocket.common.remoting.tls``) and of the HTTP port."""
    p.add_argument(
        "--tls-mode",
        default="disabled",
        help="remoting TLS: disabled (default), permissive (TLS and plain on one port) or enforcing (TLS only)",
    )
    p.add_argument("--tls-cert", default="", help="PEM certificate chain of the server (tlsServerCertPath)")
    p.add_argument("--tls-key", default="", help="PEM private key of the server (tlsServerKeyPath)")
    p.add_argument(
        "--tls-trust-cert",
        default="",
        help="CA that client certificates must chain to, with --tls-need-client-auth (tlsServerTrustCertPath)",
    )
    p.add_argument("--tls-need-client-auth", action="store_true", help="require client certificates")
    p.add_argument("--http-tls", action="store_true", help="serve HTTPS on the HTTP port with --tls-cert/--tls-key")


def network_options(args: argparse.Namespace) -> dict[str, Any]:
    """``run_namesrv``'s bind and TLS keywords from the options of ``add_arguments``; ``ConfigError`` names
    a wrong TLS setting."""
    tls = server_settings(args.tls_mode, args.tls_cert, args.tls_key, args.tls_trust_cert, args.tls_need_client_auth)
    tls.context()  # the files load, or a ConfigError now rather than at start
    return {
        "http_host": args.http_bind,
        "tls": tls,
        "http_ssl_context": https_context(args.tls_cert, args.tls_key) if args.http_tls else None,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m krocket.namesrv", description="Run a krocket name server.")
    add_arguments(p)
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def _write_ports(path: str, server: NameServer) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"host": server.host, "port": server.port, "http_port": server.http_port}))
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args)


def run(args: argparse.Namespace) -> None:
    """Run with the options of ``add_arguments`` until SIGTERM/SIGINT. Raises ``ConfigError`` when a port
    cannot be bound."""
    ports_file = args.ports_file
    network = network_options(args)

    def on_started(server: NameServer) -> None:
        if ports_file:
            _write_ports(ports_file, server)

    try:
        asyncio.run(
            run_namesrv(
                args.host,
                args.port,
                args.http_port,
                args.data_dir,
                args.scan_interval,
                on_started=on_started,
                acl_file=getattr(args, "acl", None),
                limits=connection_limits(args),
                **network,
            )
        )
    except OSError as exc:
        raise ConfigError(
            f"name server cannot start on {args.host} (ports {args.port}, {args.http_port}): {exc}"
        ) from None
