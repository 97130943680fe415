"""``krocket stats [--topic T] [--group G]`` (mqadmin's statsAll): per topic and broker the messages in, per
consumer group, topic and broker the messages out and the lag, from each master's traffic counters."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from krocket.cli.admin_commands import _namesrv_arg, _print, _with_admin
from krocket.cli.exit_codes import EXIT_OK, exits_1_on_failure

STATS_EPILOG = """\
IN_TPS and OUT_TPS: messages per second over the last minute; IN_TOTAL and OUT_TOTAL: messages since each broker
started (the brokers keep no per-day count); LAG: messages the group has not consumed, over the queues it
committed offsets of. Rows per broker; the totals line sums them.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stats",
        help="traffic per topic and consumer group: TPS in and out, totals, lag (statsAll)",
        epilog=STATS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _namesrv_arg(p)
    p.add_argument("--topic", "-t", default=None, help="only this topic")
    p.add_argument("--group", "-g", default=None, help="only this consumer group")
    p.set_defaults(func=stats)


def select_rows(
    per_broker: list[dict[str, Any]], topic: str | None, group: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Topic rows and group rows of every broker, each with its brokerName, filtered by topic and group (a group
    filter keeps only the topics that group reads)."""
    topics: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for body in per_broker:
        name = body.get("brokerName", "?")
        groups += [
            {**g, "brokerName": name}
            for g in body.get("groups") or []
            if (topic is None or g["topic"] == topic) and (group is None or g["group"] == group)
        ]
        topics += [{**t, "brokerName": name} for t in body.get("topics") or [] if topic is None or t["topic"] == topic]
    if group is not None:
        read = {g["topic"] for g in groups}
        topics = [t for t in topics if t["topic"] in read]
    topics.sort(key=lambda t: (t["topic"], t["brokerName"]))
    groups.sort(key=lambda g: (g["group"], g["topic"], g["brokerName"]))
    return topics, groups


@exits_1_on_failure
def stats(args: argparse.Namespace) -> int:
    from krocket.client.admin_inspect import broker_traffic

    per_broker = asyncio.run(_with_admin(args, broker_traffic))
    topics, groups = select_rows(per_broker, args.topic, args.group)
    lines = [f"{'TOPIC':32} {'BROKER':12} {'IN_TPS':>9} {'IN_TOTAL':>10}"]
    lines += [f"{t['topic']:32} {t['brokerName']:12} {t['inTps']:>9.2f} {t['inMsgTotal']:>10}" for t in topics]
    lines.append("")
    lines.append(f"{'GROUP':28} {'TOPIC':32} {'BROKER':12} {'OUT_TPS':>9} {'OUT_TOTAL':>10} {'LAG':>10}")
    lines += [
        f"{g['group']:28} {g['topic']:32} {g['brokerName']:12} {g['outTps']:>9.2f} {g['outMsgTotal']:>10} "
        f"{g['lag']:>10}"
        for g in groups
    ]
    totals = {
        "inTps": round(sum(t["inTps"] for t in topics), 2),
        "inMsgTotal": sum(t["inMsgTotal"] for t in topics),
        "outTps": round(sum(g["outTps"] for g in groups), 2),
        "outMsgTotal": sum(g["outMsgTotal"] for g in groups),
        "lag": sum(g["lag"] for g in groups),
    }
    lines.append(
        f"total: in {totals['inTps']:.2f}/s ({totals['inMsgTotal']}), out {totals['outTps']:.2f}/s "
        f"({totals['outMsgTotal']}), lag {totals['lag']}"
    )
    _print(args, {"topics": topics, "groups": groups, "total": totals}, lines)
    return EXIT_OK
