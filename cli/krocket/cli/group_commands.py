"""Subscription group and consumer tooling verbs: ``krocket group create|update|delete|list``,
``krocket consumer connections|stats|reset`` and ``krocket message show|query|by-offset``. Every ``--json`` is in
RocketMQ's camelCase, with the brokerName next to each queueId."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any

from krocket.cli.admin_commands import _namesrv_arg, _print, _with_admin
from krocket.cli.arg_types import int_in_range
from krocket.cli.exit_codes import exits_1_on_failure
from krocket.common.errors import ConfigError
from krocket.common.headers.groups import RESET_TO_LAST
from krocket.common.message import MessageExt
from krocket.common.subscription_group import SubscriptionGroupConfig


def register(sub: Any) -> None:
    group = sub.add_parser("group", help="create, update, delete or list subscription groups")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in ("create", "update"):
        p = verbs.add_parser(verb, help=f"{verb} a subscription group on every master of a cluster")
        _namesrv_arg(p)
        p.add_argument("group")
        p.add_argument("--retry-max-times", type=int, default=16, help="retries before the dead letter queue")
        p.add_argument("--retry-queue-nums", type=int, default=1, help="queues of %%RETRY%%<group> (default 1)")
        p.add_argument("--disable-consume", action="store_true", help="consumeEnable=false: pulls are refused")
        p.add_argument("--disable-broadcast", action="store_true", help="consumeBroadcastEnable=false")
        p.add_argument(
            "--orderly",
            "--fifo",
            action="store_true",
            help="consumeMessageOrderly=true: an orderly group (4.x), a FIFO group for 5.x consumers",
        )
        p.add_argument("--cluster", "-c", default=None, help="cluster name (default: every cluster)")
        p.add_argument("--broker", "-b", action="append", default=None, help="only this broker group (repeatable)")
        p.set_defaults(func=group_upsert)
    p = verbs.add_parser("delete", help="delete a subscription group from the masters")
    _namesrv_arg(p)
    p.add_argument("group")
    p.add_argument("--cluster", "-c", default=None)
    p.set_defaults(func=group_delete)
    p = verbs.add_parser("list", help="list subscription groups of every master")
    _namesrv_arg(p)
    p.add_argument("--cluster", "-c", default=None)
    p.set_defaults(func=group_list)

    message = sub.add_parser("message", help="show a message by id, or query messages by key")
    mverbs = message.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = mverbs.add_parser("show", help="a message by its offset message id, or by its unique id with --topic")
    _namesrv_arg(p)
    p.add_argument("msg_id")
    p.add_argument("--topic", "-t", default=None, help="the message's topic: then MSG_ID may be its unique id too")
    p.set_defaults(func=message_show)
    p = mverbs.add_parser("query", help="messages of a topic by key")
    _namesrv_arg(p)
    p.add_argument("--topic", "-t", required=True)
    p.add_argument("--key", "-k", required=True)
    p.add_argument(
        "--max", type=int_in_range(1, 64), default=32, help="at most this many per broker, 1-64 (default 32)"
    )
    p.set_defaults(func=message_query)
    p = mverbs.add_parser("by-offset", help="the message at a queue offset (queryMsgByOffset)")
    _namesrv_arg(p)
    p.add_argument("--topic", "-t", required=True)
    p.add_argument("--broker", "-b", required=True, help="the broker group (brokerName) of the queue")
    p.add_argument("--queue", "-q", type=int_in_range(0, 1023), required=True, help="the queue id")
    p.add_argument("--offset", "-o", type=int_in_range(0), required=True, help="the queue offset")
    p.set_defaults(func=message_by_offset)


def register_consumer_verbs(verbs: Any) -> None:
    """Verbs under ``krocket consumer`` (admin_commands makes that parser)."""
    p = verbs.add_parser("connections", help="the clients of a consumer group and their subscriptions")
    _namesrv_arg(p)
    p.add_argument("group")
    p.set_defaults(func=consumer_connections)
    p = verbs.add_parser("stats", help="consume stats of a group: offsets, lag, last consumed store time")
    _namesrv_arg(p)
    p.add_argument("group")
    p.add_argument("--topic", default=None)
    p.set_defaults(func=consumer_stats)
    p = verbs.add_parser("reset", help="reset a group's offsets on a topic to first, last or a time")
    _namesrv_arg(p)
    p.add_argument("group")
    p.add_argument("--topic", "-t", required=True)
    p.add_argument(
        "--to",
        required=True,
        help="first, last, a time in ms since the epoch, or an ISO time (2026-01-02T03:04:05, UTC unless given)",
    )
    p.add_argument("--no-force", action="store_true", help="only move queues back, never forward")
    p.set_defaults(func=consumer_reset)


def parse_reset_target(value: str) -> int:
    """``first`` -> 0, ``last`` -> -1, digits -> ms since the epoch, else an ISO 8601 time (UTC when naive)."""
    text = value.strip().lower()
    if text == "first":
        return 0
    if text == "last":
        return RESET_TO_LAST
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"--to {value!r}: expected first, last, milliseconds since the epoch or an ISO time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _group_config(args: argparse.Namespace) -> SubscriptionGroupConfig:
    return SubscriptionGroupConfig(
        args.group,
        consume_enable=not args.disable_consume,
        consume_broadcast_enable=not args.disable_broadcast,
        consume_message_orderly=args.orderly,
        retry_queue_nums=args.retry_queue_nums,
        retry_max_times=args.retry_max_times,
    )


@exits_1_on_failure
def group_upsert(args: argparse.Namespace) -> int:
    config = _group_config(args)
    applied = asyncio.run(_with_admin(args, lambda a: a.create_group(config, args.cluster, args.broker)))
    _print(args, {"group": config.to_json(), "brokerNames": applied}, [f"group {args.group}: {', '.join(applied)}"])
    return 0


@exits_1_on_failure
def group_delete(args: argparse.Namespace) -> int:
    applied = asyncio.run(_with_admin(args, lambda a: a.delete_group(args.group, args.cluster)))
    _print(
        args,
        {"groupName": args.group, "deleted": True, "brokerNames": applied},
        [f"deleted {args.group} from {', '.join(applied)}"],
    )
    return 0


@exits_1_on_failure
def group_list(args: argparse.Namespace) -> int:
    per_broker = asyncio.run(_with_admin(args, lambda a: a.list_groups(args.cluster)))
    data = {b: {g: c.to_json() for g, c in groups.items()} for b, groups in per_broker.items()}
    lines = [f"{'BROKER':12} {'GROUP':32} {'CONSUME':>7} {'BROADCAST':>9} {'ORDERLY':>7} {'RETRY_MAX':>9}"]
    for broker, groups in per_broker.items():
        for name, c in groups.items():
            lines.append(
                f"{broker:12} {name:32} {_yes(c.consume_enable):>7} {_yes(c.consume_broadcast_enable):>9} "
                f"{_yes(c.consume_message_orderly):>7} {c.retry_max_times:>9}"
            )
    _print(args, data, lines)
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@exits_1_on_failure
def consumer_connections(args: argparse.Namespace) -> int:
    info = asyncio.run(_with_admin(args, lambda a: a.consumer_connections(args.group)))
    lines = [f"{'CLIENT_ID':40} {'ADDRESS':22} {'LANGUAGE':8} {'VERSION':>7}"]
    for c in info["connectionSet"]:
        lines.append(f"{c['clientId']:40} {c['clientAddr']:22} {c['language']:8} {c['version']:>7}")
    lines.append(
        f"consumeType {info.get('consumeType')}, messageModel {info.get('messageModel')}, "
        f"consumeFromWhere {info.get('consumeFromWhere')}"
    )
    for topic, sub in sorted((info.get("subscriptionTable") or {}).items()):
        lines.append(f"subscription {topic}: {sub.get('subString')}")
    _print(args, info, lines)
    return 0


@exits_1_on_failure
def consumer_stats(args: argparse.Namespace) -> int:
    rows = [_broker_named(r) for r in asyncio.run(_with_admin(args, lambda a: a.consume_stats(args.group, args.topic)))]
    lines = [f"{'TOPIC':20} {'BROKER':12} {'QID':>4} {'BROKER_OFFSET':>14} {'CONSUMER_OFFSET':>16} {'LAG':>8}  LAST"]
    for r in rows:
        last = _time(r["lastTimestamp"])
        lines.append(
            f"{r['topic']:20} {r['brokerName']:12} {r['queueId']:>4} {r['brokerOffset']:>14} "
            f"{r['consumerOffset']:>16} {r['lag']:>8}  {last}"
        )
    lines.append(f"total lag: {sum(r['lag'] for r in rows)}")
    _print(args, rows, lines)
    return 0


@exits_1_on_failure
def consumer_reset(args: argparse.Namespace) -> int:
    timestamp = parse_reset_target(args.to)
    table = asyncio.run(
        _with_admin(args, lambda a: a.reset_offset_by_time(args.group, args.topic, timestamp, force=not args.no_force))
    )
    rows = [
        {"topic": q.topic, "brokerName": q.broker_name, "queueId": q.queue_id, "offset": o} for q, o in table.items()
    ]
    lines = [f"{'TOPIC':20} {'BROKER':12} {'QID':>4} {'OFFSET':>12}"]
    lines += [f"{r['topic']:20} {r['brokerName']:12} {r['queueId']:>4} {r['offset']:>12}" for r in rows]
    _print(args, rows, lines)
    return 0


def _broker_named(row: dict[str, Any]) -> dict[str, Any]:
    """A row with ``brokerName`` (the key style of every --json) for the client's ``broker``."""
    out = {k: v for k, v in row.items() if k != "broker"}
    if "broker" in row:
        out = {"brokerName": row["broker"], **out}
    return out


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds") if ms > 0 else "-"


def _message_dict(m: MessageExt, broker_names: dict[str, str]) -> dict[str, Any]:
    return {
        "msgId": m.msg_id,
        "offsetMsgId": m.offset_msg_id,
        "topic": m.topic,
        "tags": m.tags,
        "keys": m.keys,
        "brokerName": broker_names.get(m.store_host),
        "storeHost": m.store_host,
        "queueId": m.queue_id,
        "queueOffset": m.queue_offset,
        "bornTimestamp": m.born_timestamp,
        "storeTimestamp": m.store_timestamp,
        "reconsumeTimes": m.reconsume_times,
        "properties": m.properties,
        "body": m.body.decode(errors="replace"),
    }


def _message_lines(m: dict[str, Any]) -> list[str]:
    return [f"{k:15} {v}" for k, v in m.items()]


async def _broker_names(admin: Any) -> dict[str, str]:
    """broker address -> broker name, of every broker the name servers know."""
    info = await admin.cluster_info()
    return {addr: name for name, b in info.brokers.items() for addr in b.broker_addrs.values()}


@exits_1_on_failure
def message_show(args: argparse.Namespace) -> int:
    async def run(admin: Any) -> dict[str, Any]:
        return _message_dict(await admin.view_message(args.msg_id, args.topic), await _broker_names(admin))

    message = asyncio.run(_with_admin(args, run))
    _print(args, message, _message_lines(message))
    return 0


@exits_1_on_failure
def message_by_offset(args: argparse.Namespace) -> int:
    from krocket.client.admin_inspect import message_by_offset as fetch

    async def run(admin: Any) -> dict[str, Any]:
        found = await fetch(admin, args.topic, args.broker, args.queue, args.offset)
        return _message_dict(found, await _broker_names(admin))

    message = asyncio.run(_with_admin(args, run))
    _print(args, message, _message_lines(message))
    return 0


@exits_1_on_failure
def message_query(args: argparse.Namespace) -> int:
    async def run(admin: Any) -> list[dict[str, Any]]:
        found = await admin.query_messages(args.topic, args.key, args.max)
        names = await _broker_names(admin)
        return [_message_dict(m, names) for m in found]

    messages = asyncio.run(_with_admin(args, run))
    lines: list[str] = []
    for m in messages:
        lines += [*_message_lines(m), ""]
    lines.append(f"{len(messages)} message(s) with key {args.key}")
    _print(args, messages, lines)
    return 0
