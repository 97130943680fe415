"""``krocket send`` and ``krocket consume`` for shell use."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from krocket.cli.acl_options import add_credential_arguments, credential_kwargs
from krocket.cli.arg_types import positive_int, seconds
from krocket.cli.exit_codes import EXIT_OK, exits_1_on_failure, fail
from krocket.cli.tls_options import add_tls_arguments, tls_kwargs
from krocket.common.addresses import namesrv_from_env
from krocket.common.errors import ConfigError, ConnectionClosedError, RemotingTimeoutError, TopicNotExistError

DEFAULT_COUNT_TIMEOUT_S = 15.0  # --count without --timeout: give up after this many idle seconds


def register(sub: Any) -> None:
    send = sub.add_parser("send", help="send messages (the body from the argument or one per stdin line)")
    send.add_argument("--namesrv", default=None, help="name servers (default $NAMESRV_ADDR)")
    send.add_argument("--topic", "-t", required=True)
    send.add_argument("--tag", default=None)
    send.add_argument("--key", action="append", default=None, help="message key (repeatable)")
    send.add_argument("--property", action="append", default=None, metavar="K=V", help="user property")
    send.add_argument("--count", "-n", type=positive_int, default=1, help="send the body this many times (default 1)")
    send.add_argument("--group", default="krocket-cli-producer")
    send.add_argument("body", nargs="?", default=None, help="message body; '-' or absent reads stdin lines")
    add_tls_arguments(send)
    add_credential_arguments(send)
    send.set_defaults(func=send_messages)

    consume = sub.add_parser(
        "consume",
        help="consume messages and print them, one JSON object a line",
        description="Consume messages and print them, one JSON object a line (brokerName, queueId, queueOffset, "
        "msgId, topic, tags, keys, body); the count goes to stderr.",
        epilog="exit codes: 0 done (also when --timeout stopped it early); 1 no name server answers or the topic "
        "does not exist; 2 bad arguments",
    )
    consume.add_argument("--namesrv", default=None, help="name servers (default $NAMESRV_ADDR)")
    consume.add_argument("--topic", "-t", required=True)
    consume.add_argument("--group", "-g", default="krocket-cli-consumer")
    consume.add_argument("--expression", "-e", default="*", help="tag expression: * or 'TagA || TagB'")
    consume.add_argument(
        "--from",
        dest="consume_from",
        choices=["first", "last"],
        default="last",
        help="where a group without stored offsets starts (default last)",
    )
    consume.add_argument("--broadcast", action="store_true", help="broadcasting mode (offsets kept locally)")
    consume.add_argument(
        "--count",
        "-n",
        type=positive_int,
        default=0,
        help="print and commit exactly this many, then stop (default: run on)",
    )
    consume.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        help=f"stop after this many idle seconds (default {DEFAULT_COUNT_TIMEOUT_S:g} with --count, else none)",
    )
    add_tls_arguments(consume)
    add_credential_arguments(consume)
    consume.set_defaults(func=consume_messages)


def _properties(pairs: list[str] | None) -> dict[str, str]:
    props: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--property {pair!r} must be KEY=VALUE")
        props[key] = value
    return props


@exits_1_on_failure
def send_messages(args: argparse.Namespace) -> int:
    from krocket.client import Message, Producer

    props = _properties(args.property)
    if args.body is None or args.body == "-":
        bodies = [line.rstrip("\n").encode() for line in sys.stdin]
    else:
        bodies = [args.body.encode()] * args.count

    async def run() -> None:
        producer = Producer(args.group, namesrv_from_env(args.namesrv), **tls_kwargs(args), **credential_kwargs(args))
        await producer.start()
        try:
            for i, body in enumerate(bodies, 1):
                msg = Message(args.topic, body, tags=args.tag, keys=args.key, properties=dict(props))
                result = await producer.send(msg)
                print(
                    json.dumps(
                        {
                            "msgId": result.msg_id,
                            "status": str(getattr(result.status, "name", result.status)),
                            "brokerName": result.queue.broker_name,
                            "queueId": result.queue.queue_id,
                            "queueOffset": result.queue_offset,
                        }
                    ),
                    flush=True,
                )
                if len(bodies) >= 100 and i % 100 == 0:
                    print(f"sent {i}/{len(bodies)}", file=sys.stderr, flush=True)
        finally:
            await producer.shutdown()

    asyncio.run(run())
    return 0


@exits_1_on_failure
def consume_messages(args: argparse.Namespace) -> int:
    """Print messages until ``--count`` (exactly that many are printed and committed; fewer when ``--timeout``
    idle seconds pass first) or until ``--timeout``; without either, run until interrupted.

    Exactness: one message per listener call and one call at a time; once the count is reached the listener
    holds the next message without acknowledging it, so the committed offsets end right after the printed
    messages and the held ones are delivered again to the group's next consumer."""
    from krocket.client import ConsumeStatus, PushConsumer

    namesrv = namesrv_from_env(args.namesrv)
    timeout = args.timeout if args.timeout is not None else (DEFAULT_COUNT_TIMEOUT_S if args.count else None)

    async def run() -> int:
        try:
            brokers = await _brokers_of_topic(args, namesrv)
        except TopicNotExistError:
            return fail(f"topic {args.topic} does not exist (create it: krocket topic create {args.topic})")
        except (ConnectionClosedError, RemotingTimeoutError) as exc:
            return fail(f"{exc}; check --namesrv or $NAMESRV_ADDR")
        got = 0
        done = asyncio.Event()
        last = time.monotonic()

        async def listener(messages: list[Any]) -> Any:
            nonlocal got, last
            for m in messages:
                if args.count and got >= args.count:
                    await asyncio.Event().wait()  # held, never acknowledged; shutdown cancels it
                print(json.dumps(_consumed_json(m, brokers)), flush=True)
                got += 1
                last = time.monotonic()
                if args.count and got >= args.count:
                    done.set()
            return ConsumeStatus.SUCCESS

        consumer = PushConsumer(
            args.group,
            namesrv,
            message_model="BROADCASTING" if args.broadcast else "CLUSTERING",
            consume_from=args.consume_from.upper(),
            consume_threads=1,
            consume_batch_size=1,
            **tls_kwargs(args),
            **credential_kwargs(args),
        )
        consumer.subscribe(args.topic, args.expression)
        consumer.register_listener(listener)
        await consumer.start()
        try:
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), 0.2)
                except TimeoutError:
                    pass
                if timeout is not None and time.monotonic() - last > timeout:
                    break
        finally:
            await consumer.shutdown(await_consumers=1.0)
        wanted = f" of {args.count}" if args.count else ""
        why = f" (idle for {timeout:g} s)" if args.count and got < args.count else ""
        print(f"consumed {got}{wanted} message(s){why}", file=sys.stderr)
        return EXIT_OK

    return asyncio.run(run())


async def _brokers_of_topic(args: argparse.Namespace, namesrv: str | None) -> dict[str, str]:
    """broker address -> broker name, of every member of the topic's route. Raises ``TopicNotExistError`` and,
    when no name server answers, ``ConnectionClosedError``."""
    from krocket.client import Admin

    async with Admin(namesrv, **tls_kwargs(args), **credential_kwargs(args)) as admin:
        route = await admin.topic_route(args.topic)
    return {addr: b.broker_name for b in route.broker_datas for addr in b.broker_addrs.values()}


def _consumed_json(m: Any, brokers: dict[str, str]) -> dict[str, Any]:
    return {
        "msgId": m.msg_id,
        "topic": m.topic,
        "tags": m.tags,
        "keys": m.keys,
        "brokerName": brokers.get(m.store_host),
        "queueId": m.queue_id,
        "queueOffset": m.queue_offset,
        "body": m.body.decode(errors="replace"),
    }
