"""Admin verbs: ``krocket topic ...``, ``krocket cluster list``, ``krocket consumer progress`` (and the consumer
verbs of group_commands)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from krocket.cli.acl_options import add_credential_arguments, credential_kwargs
from krocket.cli.arg_types import queue_count
from krocket.cli.exit_codes import (
    EXIT_BROKER_UNREACHABLE,
    EXIT_ERROR,
    EXIT_GROUP_UNKNOWN,
    EXIT_OK,
    EXIT_USAGE,
    exits_1_on_failure,
    fail,
)
from krocket.cli.tls_options import add_tls_arguments, tls_kwargs
from krocket.cli.topic_file import TopicDefaults, read_topic_file, topic_configs, topic_names
from krocket.common.addresses import namesrv_from_env
from krocket.common.errors import ConfigError
from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE, TOPIC_MESSAGE_TYPES
from krocket.common.topic import check_queue_nums, is_system_topic


def _namesrv_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namesrv", default=None, help="name servers host:port[;host:port] (default $NAMESRV_ADDR)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_tls_arguments(parser)
    add_credential_arguments(parser)


TOPIC_UPSERT_EPILOG = """\
rules: 1 <= write queues <= read queues <= 1024 (the broker's own check). System topics (TBW102,
SCHEDULE_TOPIC_XXXX, RMQ_SYS_*, %RETRY%*, %DLQ%*, ...) need --force.

safe drain (fewer queues without losing messages):
  krocket topic update T -r 8 -w 4     # producers stop writing queues 4-7
  krocket consumer progress GROUP      # wait until their lag is 0 for every group
  krocket topic update T -r 4 -w 4     # now allowed: the removed queues hold nothing unconsumed
`update` (and `create` of an existing topic) refuses fewer read queues while the removed ones hold
unconsumed messages (exit 1), unless --allow-shrink.

exit codes: 0 done; 1 refused or failed (one line says why); 2 bad arguments
"""

PROGRESS_EPILOG = f"""\
exit codes:
  {EXIT_OK}  every broker answered (a total lag of 0 means the group is caught up)
  {EXIT_ERROR}  failed (no name server answers, no such topic)
  {EXIT_USAGE}  bad arguments
  {EXIT_GROUP_UNKNOWN}  no broker knows the group (no committed offsets, no subscription group)
  {EXIT_BROKER_UNREACHABLE}  some broker has no master online or did not answer: its queues are missing and the
     total lag is a lower bound (the brokers are named on stderr)
"""


def _force_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="also act on a system topic (TBW102, SCHEDULE_TOPIC_XXXX, %%RETRY%%...)"
    )


def _from_file_arg(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "--from-file",
        "-f",
        metavar="FILE",
        default=None,
        help=f"{verb} every topic of a YAML/JSON file (a list of names or of {{name, readQueues, writeQueues, perm, "
        "messageType}} objects; the flags give the defaults), many per request",
    )


def _one_topic_or_file(args: argparse.Namespace) -> None:
    if (args.topic is None) == (args.from_file is None):
        raise ConfigError(f"topic {args.verb}: give a topic name or --from-file FILE (one of them)")


def _bulk_progress(verb: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        print(f"{verb}: {done}/{total} topics", file=sys.stderr, flush=True)

    return show


def _refuse_system_topic(args: argparse.Namespace) -> None:
    if is_system_topic(args.topic) and not args.force:
        raise ConfigError(f"{args.topic} is a system topic the brokers rely on; pass --force to {args.verb} it")


def register(sub: Any) -> None:
    topic = sub.add_parser("topic", help="create, update, list, route or delete topics")
    verbs = topic.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in ("create", "update"):
        p = verbs.add_parser(
            verb,
            help=f"{verb} a topic on every master of a cluster",
            epilog=TOPIC_UPSERT_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _namesrv_arg(p)
        p.add_argument("topic", nargs="?", help="the topic (or --from-file)")
        _from_file_arg(p, verb)
        p.add_argument(
            "--read-queues", "-r", type=queue_count, default=8, help="read queues per broker, 1-1024 (default 8)"
        )
        p.add_argument(
            "--write-queues",
            "-w",
            type=queue_count,
            default=None,
            help="write queues, 1 to --read-queues (default = read)",
        )
        p.add_argument("--perm", "-p", type=int, choices=[2, 4, 6], default=6, help="2=W, 4=R, 6=RW (default 6)")
        p.add_argument("--cluster", "-c", default=None, help="cluster name (default: every cluster)")
        p.add_argument("--broker", "-b", action="append", default=None, help="only this broker group (repeatable)")
        p.add_argument(
            "--message-type",
            choices=TOPIC_MESSAGE_TYPES,
            default=None,
            help="the 5.x message types the topic takes (attribute message.type): NORMAL, FIFO, DELAY, "
            "TRANSACTION or MIXED (all of them); RocketMQ 5.x clients' sends of another type are refused "
            "(default: create NORMAL, update keeps the topic's)",
        )
        _force_arg(p)
        p.add_argument(
            "--allow-shrink",
            action="store_true",
            help="lower --read-queues of an existing topic even where the removed queues hold unconsumed messages "
            "(they become unreadable)",
        )
        p.set_defaults(func=topic_upsert)
    p = verbs.add_parser("list", help="list topics")
    _namesrv_arg(p)
    p.set_defaults(func=topic_list)
    p = verbs.add_parser("route", help="show a topic's route")
    _namesrv_arg(p)
    p.add_argument("topic")
    p.set_defaults(func=topic_route)
    p = verbs.add_parser("delete", help="delete a topic from brokers and name servers")
    _namesrv_arg(p)
    p.add_argument("topic", nargs="?", help="the topic (or --from-file)")
    _from_file_arg(p, "delete")
    _force_arg(p)
    p.set_defaults(func=topic_delete)

    from krocket.cli import cluster_commands, topic_status  # verbs of their own modules

    topic_status.register(verbs, _namesrv_arg)
    cluster_commands.register(sub, _namesrv_arg)

    consumer = sub.add_parser("consumer", help="consumer group information")
    gverbs = consumer.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = gverbs.add_parser(
        "progress",
        help="offsets and lag of a consumer group",
        epilog=PROGRESS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _namesrv_arg(p)
    p.add_argument("group")
    p.add_argument("--topic", default=None)
    p.set_defaults(func=consumer_progress)
    from krocket.cli import group_commands  # it builds on this module's helpers

    group_commands.register_consumer_verbs(gverbs)


async def _with_admin(args: argparse.Namespace, fn: Any) -> Any:
    from krocket.client import Admin

    admin = Admin(namesrv_from_env(args.namesrv), **tls_kwargs(args), **credential_kwargs(args))
    await admin.start()
    try:
        return await fn(admin)
    finally:
        await admin.shutdown()


def _print(args: argparse.Namespace, data: Any, table: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(table))


@exits_1_on_failure
def topic_upsert(args: argparse.Namespace) -> int:
    _one_topic_or_file(args)
    if args.from_file is not None:
        return _topics_upsert_from_file(args)
    write = args.write_queues if args.write_queues is not None else args.read_queues
    _refuse_system_topic(args)
    check_queue_nums(args.read_queues, write)

    async def run(admin: Any) -> list[str]:
        options = {
            "read_queues": args.read_queues,
            "write_queues": write,
            "perm": args.perm,
            "cluster": args.cluster,
            "broker_names": args.broker,
            "attributes": {MESSAGE_TYPE_ATTRIBUTE: args.message_type} if args.message_type else None,
        }
        # create of an existing topic is an update too (the broker upserts): the same shrink check for both
        return list(await admin.update_topic(args.topic, allow_shrink=args.allow_shrink, **options))

    names = asyncio.run(_with_admin(args, run))
    _print(
        args,
        {
            "topic": args.topic,
            "readQueueNums": args.read_queues,
            "writeQueueNums": write,
            "brokerNames": names,
            **({"messageType": args.message_type} if args.message_type else {}),
        },
        [
            f"{args.verb}d topic {args.topic} ({args.read_queues} read / {write} write queues) on "
            f"{', '.join(names) or 'the selected brokers'}"
        ],
    )
    return EXIT_OK


@exits_1_on_failure
def _topics_upsert_from_file(args: argparse.Namespace) -> int:
    defaults = TopicDefaults(args.read_queues, args.write_queues, args.perm, args.message_type)
    configs = topic_configs(read_topic_file(args.from_file), args.from_file, defaults, args.force)

    async def run(admin: Any) -> list[str]:
        return list(
            await admin.create_topics(
                configs, args.cluster, args.broker, args.allow_shrink, progress=_bulk_progress(f"topic {args.verb}")
            )
        )

    names = asyncio.run(_with_admin(args, run))
    _print(
        args,
        {"topics": len(configs), "brokerNames": names, "file": args.from_file},
        [f"{args.verb}d {len(configs)} topics from {args.from_file} on {', '.join(names)}"],
    )
    return EXIT_OK


def topic_list(args: argparse.Namespace) -> int:
    topics = asyncio.run(_with_admin(args, lambda a: a.list_topics()))
    _print(args, sorted(topics), sorted(topics))
    return EXIT_OK


@exits_1_on_failure
def topic_route(args: argparse.Namespace) -> int:
    route = asyncio.run(_with_admin(args, lambda a: a.topic_route(args.topic)))
    data = route.to_json() if hasattr(route, "to_json") else route
    lines = [f"{'BROKER':12} {'READ':>5} {'WRITE':>5} {'PERM':>4}  ADDRESSES"]
    addrs = {b["brokerName"]: b["brokerAddrs"] for b in data["brokerDatas"]}
    for q in data["queueDatas"]:
        lines.append(
            f"{q['brokerName']:12} {q['readQueueNums']:>5} {q['writeQueueNums']:>5} {q['perm']:>4}  "
            f"{', '.join(f'{k}={v}' for k, v in addrs.get(q['brokerName'], {}).items())}"
        )
    _print(args, data, lines)
    return EXIT_OK


@exits_1_on_failure
def topic_delete(args: argparse.Namespace) -> int:
    _one_topic_or_file(args)
    if args.from_file is not None:
        names = topic_names(read_topic_file(args.from_file), args.from_file, args.force)
        gone = asyncio.run(_with_admin(args, lambda a: a.delete_topics(names, progress=_bulk_progress("topic delete"))))
        _print(
            args,
            {"deleted": gone, "missing": [n for n in names if n not in set(gone)]},
            [f"deleted {len(gone)} of the {len(names)} topics of {args.from_file}"],
        )
        return EXIT_OK
    _refuse_system_topic(args)
    asyncio.run(_with_admin(args, lambda a: a.delete_topic(args.topic)))
    _print(args, {"topic": args.topic, "deleted": True}, [f"deleted topic {args.topic}"])
    return EXIT_OK


@exits_1_on_failure
def consumer_progress(args: argparse.Namespace) -> int:
    progress = asyncio.run(_with_admin(args, lambda a: a.group_progress(args.group, args.topic)))
    if not progress.known and not progress.unreachable:
        return fail(f"consumer group {args.group} is unknown to every broker", EXIT_GROUP_UNKNOWN)
    rows = [r.as_dict() for r in progress.rows]
    lines = [f"{'TOPIC':20} {'BROKER':12} {'QID':>4} {'BROKER_OFFSET':>14} {'CONSUMER_OFFSET':>16} {'LAG':>10}"]
    for r in rows:
        lines.append(
            f"{r['topic']:20} {r['brokerName']:12} {r['queueId']:>4} {r['brokerOffset']:>14} "
            f"{r['consumerOffset']:>16} {r['lag']:>10}"
        )
    total = sum(r["lag"] for r in rows)
    lines.append(f"total lag: {'at least ' if progress.unreachable else ''}{total}")
    data = {"group": args.group, "queues": rows, "totalLag": total, "unreachableBrokers": progress.unreachable}
    _print(args, data, lines)
    if progress.unreachable:
        gone = "; ".join(f"{name}: {why}" for name, why in sorted(progress.unreachable.items()))
        return fail(f"incomplete: broker(s) did not answer, their queues are missing ({gone})", EXIT_BROKER_UNREACHABLE)
    return EXIT_OK
