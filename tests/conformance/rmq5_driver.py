"""Drives the official RocketMQ 5.x Python SDK (``rocketmq-python-client==5.1.2``) for the gRPC conformance tests.

It runs in its own interpreter (``.venv-rmq5``, made by scripts/test.sh): the SDK's generated protocol modules
clash with the broker's in one process, and its package name ``rocketmq`` is the 4.x C++ client's too. It imports
nothing of krocket. Each run prints one JSON object per line on stdout: ``{"sent": ...}`` per message sent,
``{"error": ...}`` for a send the SDK refused, and ``{"done": true}`` last.

    python rmq5_driver.py --endpoints H:P produce --topic T --count 5 [--tag X] [--keys K] [--group G]
        [--delay-s S] [--prop k=v ...] [--transaction commit|rollback|orphan]
    python rmq5_driver.py --endpoints H:P check --topic T --resolution COMMIT --expect N --timeout S

    python rmq5_driver.py --endpoints H:P simple --topic T --group G --expect N [--tag X] [--invisible S]
        [--ack-from-attempt A] [--change-to S] [--ack-twice] [--timeout S]
    python rmq5_driver.py --endpoints H:P push --topic T --group G --expect N [--tag X] [--fail-times K]

``simple`` receives until ``--expect`` deliveries (or the timeout), printing ``{"got": body, "id", "attempt",
"at_ms"}`` per delivery; it acks a delivery whose attempt is at least ``--ack-from-attempt`` (with
``--ack-even`` only those whose ``seq`` property is even; the others are left to expire), first changing its
invisible time to ``--change-to`` seconds when given (and acking with the new handle), and with ``--ack-twice``
acks once more, printing ``{"second_ack": error}``. ``push`` runs a PushConsumer whose listener fails each
message's first ``--fail-times`` deliveries (all of them for bodies starting with ``--always-fail``), until
``--expect`` messages were consumed, then lingers ``--linger`` seconds.

``--transaction orphan`` sends one half message and exits at once, ending nothing (a producer killed mid-way);
``check`` is a transactional producer whose checker answers the broker's check-backs with ``--resolution``,
printing ``{"checked": body, "id": ...}`` for each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _start(client) -> None:  # type: ignore[no-untyped-def]
    """``client.startup()``; a refusal (wrong credentials, no route) is reported as ``startup_error`` and ends the
    run, so a test can tell it from a crash of the driver."""
    try:
        client.startup()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        _emit({"startup_error": f"{type(exc).__name__}: {exc}"})
        _emit({"done": True})
        sys.stdout.flush()
        os._exit(0)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from rocketmq import ClientConfiguration, Credentials

    return ClientConfiguration(args.endpoints, Credentials(args.ak, args.sk), request_timeout=args.request_timeout)


class _Checker:
    def __init__(self, resolution: str) -> None:
        self.resolution = resolution
        self.checked: list[str] = []

    def check(self, message):  # type: ignore[no-untyped-def]
        from rocketmq import TransactionResolution

        _emit({"checked": message.body.decode(), "id": message.message_id})
        self.checked.append(message.message_id)
        return getattr(TransactionResolution, self.resolution)


def _transaction_checker(resolution: str):  # type: ignore[no-untyped-def]
    from rocketmq import TransactionChecker

    class Checker(_Checker, TransactionChecker):  # type: ignore[misc]
        def __init__(self) -> None:
            _Checker.__init__(self, resolution)

    return Checker()


def produce(args: argparse.Namespace) -> None:
    from rocketmq import Message, Producer

    checker = _transaction_checker("COMMIT") if args.transaction else None
    producer = Producer(_config(args), (args.topic,), checker=checker, tls_enable=args.tls)
    _start(producer)
    try:
        for i in range(args.count):
            body = f"{args.prefix}-{i}"
            msg = Message()
            msg.topic = args.topic
            msg.body = body.encode()
            if args.tag:
                msg.tag = args.tag
            if args.keys:
                msg.keys = f"{args.keys}-{i}"
            if args.group:
                msg.message_group = args.group
            if args.delay_s is not None:
                msg.delivery_timestamp = int(time.time()) + args.delay_s
            for pair in args.prop or []:
                key, _, value = pair.partition("=")
                msg.add_property(key, value)
            msg.add_property("seq", str(i))
            try:
                transaction = producer.begin_transaction() if args.transaction else None
                receipt = producer.send(msg, transaction)
                if args.transaction == "orphan":
                    _emit({"sent": body, "id": receipt.message_id, "transaction_id": receipt.transaction_id})
                    _emit({"done": True})
                    sys.stdout.flush()
                    os._exit(0)  # killed mid-transaction: no outcome, no goodbye
                if transaction is not None:
                    (transaction.commit if args.transaction == "commit" else transaction.rollback)()
            except Exception as exc:  # noqa: BLE001 - reported to the test
                _emit({"error": f"{type(exc).__name__}: {exc}", "body": body})
                continue
            _emit(
                {
                    "sent": body,
                    "id": receipt.message_id,
                    "offset": receipt.offset,
                    "broker": receipt.message_queue.message_queue0().broker.name,
                    "sent_at_ms": int(time.time() * 1000),
                }
            )
    finally:
        producer.shutdown()
    _emit({"done": True})


def check(args: argparse.Namespace) -> None:
    from rocketmq import Producer

    checker = _transaction_checker(args.resolution)
    producer = Producer(_config(args), (args.topic,), checker=checker, tls_enable=args.tls)
    _start(producer)
    deadline = time.monotonic() + args.timeout
    while len(checker.checked) < args.expect and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the checker's EndTransaction goes out from the SDK's own thread
    producer.shutdown()
    _emit({"done": True, "checked": len(checker.checked)})


def _subscription(args: argparse.Namespace) -> dict:
    from rocketmq import FilterExpression

    return {args.topic: FilterExpression(args.tag) if args.tag else FilterExpression()}


def _delivered(message) -> dict:  # type: ignore[no-untyped-def]
    return {
        "got": message.body.decode(errors="replace"),
        "id": message.message_id,
        "attempt": message.delivery_attempt,
        "tag": message.tag,
        "keys": list(message.keys or []),
        "props": dict(message.properties or {}),
        "group": message.message_group,
        "at_ms": int(time.time() * 1000),
    }


def simple(args: argparse.Namespace) -> None:
    from rocketmq import SimpleConsumer

    consumer = SimpleConsumer(
        _config(args), args.group, _subscription(args), await_duration=args.await_s, tls_enable=args.tls
    )
    _start(consumer)
    got = 0
    deadline = time.monotonic() + args.timeout
    try:
        while got < args.expect and time.monotonic() < deadline:
            try:
                messages = consumer.receive(32, args.invisible)
            except Exception as exc:  # noqa: BLE001 - reported to the test
                _emit({"receive_error": f"{type(exc).__name__}: {exc}"})
                time.sleep(0.5)
                continue
            for message in messages or []:
                got += 1
                line = _delivered(message)
                seq = int((message.properties or {}).get("seq", "0"))
                if message.delivery_attempt >= args.ack_from_attempt and not (args.ack_even and seq % 2):
                    if args.change_to is not None:
                        consumer.change_invisible_duration(message, args.change_to)
                        line["changed"] = True
                    consumer.ack(message)
                    line["acked"] = True
                    if args.ack_twice:
                        try:
                            consumer.ack(message)
                            line["second_ack"] = "accepted"
                        except Exception as exc:  # noqa: BLE001 - reported to the test
                            line["second_ack"] = f"{type(exc).__name__}: {exc}"
                _emit(line)
    finally:
        consumer.shutdown()
    _emit({"done": True, "got": got})


def push(args: argparse.Namespace) -> None:
    import threading

    from rocketmq import ConsumeResult, MessageListener, PushConsumer

    lock = threading.Lock()
    seen: list[dict] = []

    class Listener(MessageListener):  # type: ignore[misc]
        def consume(self, message):  # type: ignore[no-untyped-def]
            line = _delivered(message)
            body = message.body.decode(errors="replace")
            doomed = args.always_fail and body.startswith(args.always_fail)
            ok = not doomed and message.delivery_attempt > args.fail_times
            line["ok"] = ok
            with lock:
                seen.append(line)
            _emit(line)
            return ConsumeResult.SUCCESS if ok else ConsumeResult.FAILURE

    consumer = PushConsumer(_config(args), args.group, Listener(), _subscription(args), tls_enable=args.tls)
    _start(consumer)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        with lock:
            if sum(1 for line in seen if line["ok"]) >= args.expect:
                break
        time.sleep(0.1)
    time.sleep(args.linger)
    consumer.shutdown()
    _emit({"done": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--ak", default="")
    parser.add_argument("--sk", default="")
    parser.add_argument("--request-timeout", type=int, default=5)
    parser.add_argument(
        "--tls", action="store_true", help="TLS to the endpoints (trusting GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--prefix", default="v5")
    p.add_argument("--tag", default=None)
    p.add_argument("--keys", default=None)
    p.add_argument("--group", default=None, help="message group: a FIFO message")
    p.add_argument("--delay-s", type=int, default=None, help="deliver this many seconds from now: a DELAY message")
    p.add_argument("--prop", action="append", help="a user property key=value")
    p.add_argument("--transaction", choices=("commit", "rollback", "orphan"), default=None)
    c = sub.add_parser("check")
    c.add_argument("--topic", required=True)
    c.add_argument("--resolution", choices=("COMMIT", "ROLLBACK"), default="COMMIT")
    c.add_argument("--expect", type=int, default=1)
    c.add_argument("--timeout", type=float, default=30)
    for name in ("simple", "push"):
        r = sub.add_parser(name)
        r.add_argument("--topic", required=True)
        r.add_argument("--group", required=True)
        r.add_argument("--tag", default=None)
        r.add_argument("--expect", type=int, default=1)
        r.add_argument("--timeout", type=float, default=30)
    simple_args = sub.choices["simple"]
    simple_args.add_argument("--invisible", type=int, default=10, help="seconds")
    simple_args.add_argument("--await-s", type=int, default=3)
    simple_args.add_argument("--ack-from-attempt", type=int, default=1)
    simple_args.add_argument("--change-to", type=int, default=None)
    simple_args.add_argument("--ack-twice", action="store_true")
    simple_args.add_argument("--ack-even", action="store_true", help="ack only messages with an even seq")
    push_args = sub.choices["push"]
    push_args.add_argument("--fail-times", type=int, default=0)
    push_args.add_argument("--always-fail", default=None, help="a body prefix whose messages always fail")
    push_args.add_argument("--linger", type=float, default=1.0)
    args = parser.parse_args()
    {"produce": produce, "check": check, "simple": simple, "push": push}[args.cmd](args)
    sys.stdout.flush()
    os._exit(0)  # the SDK's scheduler threads can keep a plain exit waiting


if __name__ == "__main__":
    main()
