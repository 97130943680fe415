"""Drives the unmodified RocketMQ C++ client (``rocketmq==0.4.4``) in its own process.

The tests run this as a subprocess so a hang or crash inside the C++ library cannot take pytest down.
Each run prints one JSON object per line on stdout: a ``{"sent": ...}`` per message sent, a ``{"got": ...}``
per message received, then ``{"done": true}``.

    python rmq_driver.py produce --namesrv A --topic T --count 5 [--tag X] [--keys K] [--orderly-arg N] [--batch]
    python rmq_driver.py push --namesrv A --topic T --group G [--expr 'A || B'] --expect N --timeout S [--orderly]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def produce(args: argparse.Namespace) -> None:
    from rocketmq.client import Message, Producer

    producer = Producer(args.group, timeout=5000)
    producer.set_namesrv_addr(args.namesrv)
    producer.start()
    batch = []
    for i in range(args.count):
        msg = Message(args.topic)
        body = f"{args.prefix}-{i}"
        msg.set_body(body)
        if args.tag:
            msg.set_tags(args.tag)
        if args.keys:
            msg.set_keys(f"{args.keys}-{i}")
        msg.set_property("seq", str(i))
        if args.batch:
            batch.append(msg)
            continue
        for attempt in range(4):
            try:
                if args.orderly_arg is not None:
                    result = producer.send_orderly(msg, args.orderly_arg)
                else:
                    result = producer.send_sync(msg)
                break
            except Exception as exc:
                # rocketmq-client-cpp 1.2.x can fail a send while its heartbeat thread is opening the same
                # broker connection ("GetTransport ... get timed_mutex timeout", reported as "No route
                # info"): a client-side race, retried as an application would.
                if attempt == 3:
                    raise
                sys.stderr.write(f"send retry after: {exc}\n")
                time.sleep(0.3)
        _emit(
            {
                "sent": body,
                "id": result.msg_id,
                "status": int(result.status),
                "offset": result.offset,
                "attempts": attempt + 1,
            }
        )
    if batch:
        result = producer.send_batch(batch)
        _emit({"sent_batch": args.count, "id": result.msg_id, "status": int(result.status)})
    _emit({"done": True})
    os._exit(0)  # the C++ client's shutdown can block on its background threads


def push(args: argparse.Namespace) -> None:
    from rocketmq.client import PushConsumer

    got = 0
    lock = threading.Lock()
    enough = threading.Event()

    def on_message(msg) -> None:  # type: ignore[no-untyped-def]  # returning normally = CONSUME_SUCCESS
        nonlocal got
        with lock:
            _emit(
                {
                    "got": msg.body.decode(),
                    "id": msg.id,
                    "tags": (msg.tags or b"").decode(),
                    "keys": (msg.keys or b"").decode(),
                    "queue_id": msg.queue_id,
                    "queue_offset": msg.queue_offset,
                    "topic": msg.topic,
                    "seq": (msg.get_property("seq") or b"").decode(),
                }
            )
            got += 1
            if got >= args.expect:
                enough.set()

    consumer = PushConsumer(args.group, orderly=args.orderly)
    consumer.set_namesrv_addr(args.namesrv)
    consumer.subscribe(args.topic, on_message, args.expr)
    consumer.start()
    enough.wait(args.timeout)
    time.sleep(args.linger)  # catch messages beyond the expected ones (there must be none)
    _emit({"done": True, "count": got})
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--namesrv", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", default="rmq-conformance-producer")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--prefix", default="cpp")
    p.add_argument("--tag", default=None)
    p.add_argument("--keys", default=None)
    p.add_argument("--orderly-arg", type=int, default=None)
    p.add_argument("--batch", action="store_true")
    p.set_defaults(func=produce)
    c = sub.add_parser("push")
    c.add_argument("--namesrv", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--expr", default="*")
    c.add_argument("--expect", type=int, required=True)
    c.add_argument("--timeout", type=float, default=30.0)
    c.add_argument("--linger", type=float, default=1.0)
    c.add_argument("--orderly", action="store_true")  # an orderly consumer: locks its queues (41) first
    c.set_defaults(func=push)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
