"""``krocket producer connections GROUP`` (mqadmin's producerConnection)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any

from krocket.cli.admin_commands import _namesrv_arg, _print, _with_admin
from krocket.cli.exit_codes import EXIT_OK, exits_1_on_failure


def register(sub: Any) -> None:
    producer = sub.add_parser("producer", help="producer group information")
    verbs = producer.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser(
        "connections",
        help="the clients of a producer group, as each master sees them from their heartbeats",
        epilog="exit codes: 0 listed; 1 no client of the group is online (or no name server answers)",
    )
    _namesrv_arg(p)
    p.add_argument("group")
    p.set_defaults(func=producer_connections)


@exits_1_on_failure
def producer_connections(args: argparse.Namespace) -> int:
    from krocket.client.admin_inspect import producer_connections as fetch

    rows = asyncio.run(_with_admin(args, lambda a: fetch(a, args.group)))
    lines = [f"{'BROKER':12} {'CLIENT_ID':40} {'ADDRESS':22} {'LANGUAGE':8} {'VERSION':>7}  LAST_UPDATE"]
    for r in rows:
        last = dt.datetime.fromtimestamp(int(r.get("lastUpdateTimestamp", 0)) / 1000, dt.UTC)
        lines.append(
            f"{r['brokerName']:12} {r['clientId']:40} {r['clientAddr']:22} {r['language']:8} {r['version']:>7}  "
            f"{last.isoformat(timespec='seconds')}"
        )
    _print(args, {"group": args.group, "connectionSet": rows}, lines)
    return EXIT_OK
