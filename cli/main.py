"""The ``krocket`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from krocket.cli import admin_commands, local_commands, message_commands, server_commands
from krocket.cli import bench as bench_commands
from krocket.common.errors import KrocketError

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server_commands.register(sub)
    local_commands.register(sub)
    admin_commands.register(sub)
    message_commands.register(sub)
    bench_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args) or 0)
    except KrocketError as exc:
        print(f"krocket: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
