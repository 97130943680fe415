"""``python -m krocket.namesrv``: run one name server (used by tests and containers).

``--ports-file PATH`` writes ``{"port": ..., "http_port": ...}`` once both are bound, so a caller that
asked for port 0 learns the chosen ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from krocket.common import ports
from krocket.common.errors import ConfigError
from krocket.namesrv.server import SCAN_INTERVAL_SECONDS, NameServer, run_namesrv


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m krocket.namesrv", description="Run a krocket name server.")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
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
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def _write_ports(path: str, server: NameServer) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"host": server.host, "port": server.port, "http_port": server.http_port}))
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> None:
    """Run until SIGTERM/SIGINT. Raises ``ConfigError`` when a port cannot be bound."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ports_file = args.ports_file

    def on_started(server: NameServer) -> None:
        if ports_file:
            _write_ports(ports_file, server)

    try:
        asyncio.run(
            run_namesrv(args.host, args.port, args.http_port, args.data_dir, args.scan_interval, on_started=on_started)
        )
    except OSError as exc:
        raise ConfigError(
            f"name server cannot start on {args.host} (ports {args.port}, {args.http_port}): {exc}"
        ) from None


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        logging.getLogger("krocket.namesrv").error("%s", exc)
        sys.exit(2)
