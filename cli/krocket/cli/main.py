"""The ``krocket`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from krocket.cli import (
    admin_commands,
    broker_commands,
    dlq_commands,
    group_commands,
    local_commands,
    message_commands,
    producer_commands,
    server_commands,
    stats_commands,
)
from krocket.cli import bench as bench_commands
from krocket.common.errors import ConfigError, KrocketError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="krocket",
        description="krocket: a RocketMQ-compatible message queue. Run a local cluster with `krocket local up`.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level of servers and commands (default INFO)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default=os.environ.get("KROCKET_LOOP", "asyncio"),
        help="event loop of servers and commands; uvloop needs the 'fast' extra "
        "(default $KROCKET_LOOP or asyncio; child processes inherit it)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server_commands.register(sub)
    local_commands.register(sub)
    admin_commands.register(sub)
    message_commands.register(sub)
    group_commands.register(sub)
    producer_commands.register(sub)
    stats_commands.register(sub)
    broker_commands.register(sub)
    dlq_commands.register(sub)
    bench_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        use_event_loop(args.loop)
        return int(args.func(args) or 0)
    except KrocketError as exc:
        print(f"krocket: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def use_event_loop(name: str) -> None:
    """Select the event loop for this process and, through KROCKET_LOOP, for the processes it starts."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("--loop uvloop needs the uvloop package: pip install 'krocket[fast]'") from None
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    os.environ["KROCKET_LOOP"] = name


if __name__ == "__main__":
    sys.exit(main())
