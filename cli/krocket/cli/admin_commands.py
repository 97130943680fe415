"""Admin verbs: ``krocket topic ...``, ``krocket cluster list``, ``krocket consumer progress`` (and the consumer
verbs of group_commands)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from krocket.cli.acl_options import add_credential_arguments, credential_kwargs
from krocket.cli.tls_options import add_tls_arguments, tls_kwargs
from krocket.common.addresses import namesrv_from_env


def _namesrv_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namesrv", default=None, help="name servers host:port[;host:port] (default $NAMESRV_ADDR)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_tls_arguments(parser)
    add_credential_arguments(parser)


def register(sub: Any) -> None:
    topic = sub.add_parser("topic", help="create, update, list, route or delete topics")
    verbs = topic.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in ("create", "update"):
        p = verbs.add_parser(verb, help=f"{verb} a topic on every master of a cluster")
        _namesrv_arg(p)
        p.add_argument("topic")
        p.add_argument("--read-queues", "-r", type=int, default=8, help="read queues per broker (default 8)")
        p.add_argument("--write-queues", "-w", type=int, default=None, help="write queues (default = read)")
        p.add_argument("--perm", "-p", type=int, choices=[2, 4, 6], default=6, help="2=W, 4=R, 6=RW (default 6)")
        p.add_argument("--cluster", "-c", default=None, help="cluster name (default: every cluster)")
        p.add_argument("--broker", "-b", action="append", default=None, help="only this broker group (repeatable)")
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
    p.add_argument("topic")
    p.set_defaults(func=topic_delete)

    from krocket.cli import cluster_commands, topic_status  # verbs of their own modules

    topic_status.register(verbs, _namesrv_arg)
    cluster_commands.register(sub, _namesrv_arg)

    consumer = sub.add_parser("consumer", help="consumer group information")
    gverbs = consumer.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = gverbs.add_parser("progress", help="offsets and lag of a consumer group")
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


def topic_upsert(args: argparse.Namespace) -> int:
    write = args.write_queues if args.write_queues is not None else args.read_queues

    async def run(admin: Any) -> Any:
        fn = admin.create_topic if args.verb == "create" else admin.update_topic
        return await fn(
            args.topic,
            read_queues=args.read_queues,
            write_queues=write,
            perm=args.perm,
            cluster=args.cluster,
            broker_names=args.broker,
        )

    brokers = asyncio.run(_with_admin(args, run))
    names = brokers if isinstance(brokers, list) else []
    _print(
        args,
        {"topic": args.topic, "brokers": names},
        [
            f"{args.verb}d topic {args.topic} ({args.read_queues} read / {write} write queues) on "
            f"{', '.join(map(str, names)) or 'the selected brokers'}"
        ],
    )
    return 0


def topic_list(args: argparse.Namespace) -> int:
    topics = asyncio.run(_with_admin(args, lambda a: a.list_topics()))
    _print(args, sorted(topics), sorted(topics))
    return 0


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
    return 0


def topic_delete(args: argparse.Namespace) -> int:
    asyncio.run(_with_admin(args, lambda a: a.delete_topic(args.topic)))
    _print(args, {"deleted": args.topic}, [f"deleted topic {args.topic}"])
    return 0


def consumer_progress(args: argparse.Namespace) -> int:
    progress = asyncio.run(_with_admin(args, lambda a: a.consumer_progress(args.group, args.topic)))
    rows = [r.as_dict() for r in progress]
    lines = [f"{'TOPIC':20} {'BROKER':12} {'QID':>4} {'BROKER_OFFSET':>14} {'CONSUMER_OFFSET':>16} {'LAG':>10}"]
    for r in rows:
        lines.append(
            f"{r['topic']:20} {r['broker']:12} {r['queue_id']:>4} {r['broker_offset']:>14} "
            f"{r['consumer_offset']:>16} {r['lag']:>10}"
        )
    lines.append(f"total lag: {sum(r['lag'] for r in rows)}")
    _print(args, rows, lines)
    return 0
