"""``krocket send`` and ``krocket consume`` for shell use."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from krocket.cli.acl_options import add_credential_arguments, credential_kwargs
from krocket.cli.tls_options import add_tls_arguments, tls_kwargs
from krocket.common.addresses import namesrv_from_env
from krocket.common.errors import ConfigError


def register(sub: Any) -> None:
    send = sub.add_parser("send", help="send messages (the body from the argument or one per stdin line)")
    send.add_argument("--namesrv", default=None, help="name servers (default $NAMESRV_ADDR)")
    send.add_argument("--topic", "-t", required=True)
    send.add_argument("--tag", default=None)
    send.add_argument("--key", action="append", default=None, help="message key (repeatable)")
    send.add_argument("--property", action="append", default=None, metavar="K=V", help="user property")
    send.add_argument("--count", "-n", type=int, default=1, help="send the body this many times (default 1)")
    send.add_argument("--group", default="krocket-cli-producer")
    send.add_argument("body", nargs="?", default=None, help="message body; '-' or absent reads stdin lines")
    add_tls_arguments(send)
    add_credential_arguments(send)
    send.set_defaults(func=send_messages)

    consume = sub.add_parser("consume", help="consume messages and print them, one JSON object a line")
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
    consume.add_argument("--count", "-n", type=int, default=0, help="stop after this many (default: run on)")
    consume.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds")
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


def send_messages(args: argparse.Namespace) -> int:
    from krocket.client import Message, Producer

    if args.count < 1:
        raise ConfigError("--count must be at least 1")
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
                            "broker": result.queue.broker_name,
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


def consume_messages(args: argparse.Namespace) -> int:
    from krocket.client import ConsumeStatus, PushConsumer

    async def run() -> int:
        got = 0
        done = asyncio.Event()
        last = time.monotonic()

        async def listener(messages: list[Any]) -> Any:
            nonlocal got, last
            for m in messages:
                print(
                    json.dumps(
                        {
                            "msgId": m.msg_id,
                            "topic": m.topic,
                            "tags": m.tags,
                            "keys": m.keys,
                            "queueId": m.queue_id,
                            "queueOffset": m.queue_offset,
                            "body": m.body.decode(errors="replace"),
                        }
                    ),
                    flush=True,
                )
                got += 1
                if args.count and got >= args.count:
                    done.set()
            last = time.monotonic()
            return ConsumeStatus.SUCCESS

        consumer = PushConsumer(
            args.group,
            namesrv_from_env(args.namesrv),
            message_model="BROADCASTING" if args.broadcast else "CLUSTERING",
            consume_from=args.consume_from.upper(),
            **tls_kwargs(args),
            **credential_kwargs(args),
        )
        consumer.subscribe(args.topic, args.expression)
        consumer.register_listener(listener)
        await consumer.start()
        try:
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), 0.5)
                except TimeoutError:
                    pass
                if args.timeout and time.monotonic() - last > args.timeout:
                    break
        finally:
            await consumer.shutdown()
        return got

    got = asyncio.run(run())
    print(f"consumed {got} message(s)", file=sys.stderr)
    return 0
