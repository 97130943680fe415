"""``krocket topic status``: each queue of a topic on every broker (min and max offsets, last update time)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from krocket.cli.exit_codes import EXIT_OK, exits_1_on_failure


def register(verbs: Any, namesrv_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds ``topic status`` to the ``topic`` verbs (mqadmin's topicStatus)."""
    p = verbs.add_parser("status", help="per broker and queue: min and max offset and the last message's store time")
    namesrv_arg(p)
    p.add_argument("topic")
    p.set_defaults(func=topic_status)


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds") if ms > 0 else "-"


@exits_1_on_failure
def topic_status(args: argparse.Namespace) -> int:
    from krocket.cli.admin_commands import _print, _with_admin
    from krocket.client.admin_inspect import topic_status as fetch

    rows = [r.as_dict() for r in asyncio.run(_with_admin(args, lambda a: fetch(a, args.topic)))]
    lines = [f"{'BROKER':12} {'QID':>4} {'MIN_OFFSET':>12} {'MAX_OFFSET':>12}  LAST_UPDATE"]
    lines += [
        f"{r['brokerName']:12} {r['queueId']:>4} {r['minOffset']:>12} {r['maxOffset']:>12}  "
        f"{_time(r['lastUpdateTimestamp'])}"
        for r in rows
    ]
    lines.append(f"{sum(r['maxOffset'] - r['minOffset'] for r in rows)} message(s) in {len(rows)} queue(s)")
    _print(args, {"topic": args.topic, "queues": rows}, lines)
    return EXIT_OK
