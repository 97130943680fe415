"""``krocket dlq list|show|resend GROUP``: the dead letters of a consumer group (``%DLQ%<group>``).

A message lands there after ``maxReconsumeTimes`` failed consumes (CONSUMER_SEND_MSG_BACK). ``list`` prints one
JSON object a line (id, original topic, reconsume times, store time), ``show`` one message with its properties
and body, ``resend`` sends messages again to their original topic (``RETRY_TOPIC``, else ``REAL_TOPIC``) with their
body, tags, keys and user properties, as new messages.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from typing import Any

from krocket.cli.acl_options import add_credential_arguments, credential_kwargs
from krocket.cli.exit_codes import exits_1_on_failure
from krocket.cli.tls_options import add_tls_arguments, tls_kwargs
from krocket.common.addresses import namesrv_from_env
from krocket.common.errors import KrocketError, TopicNotExistError
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_KEYS,
    PROPERTY_MAX_OFFSET,
    PROPERTY_MIN_OFFSET,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    MessageExt,
)
from krocket.common.topic import DLQ_GROUP_PREFIX, validate_group

# What the broker or the retry path set: not carried into a resent message.
_SYSTEM_PROPERTIES = frozenset(
    {
        PROPERTY_DELAY,
        PROPERTY_MAX_OFFSET,
        PROPERTY_MIN_OFFSET,
        PROPERTY_ORIGIN_MESSAGE_ID,
        PROPERTY_RETRY_TOPIC,
        PROPERTY_UNIQ_KEY,
        PROPERTY_REAL_TOPIC,
        PROPERTY_REAL_QUEUE_ID,
        "CONSUME_START_TIME",
        "RECONSUME_TIME",
        "WAIT",
        PROPERTY_TAGS,
        PROPERTY_KEYS,
    }
)


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="dead letters of a consumer group: list, show, resend")
    verbs = dlq.add_subparsers(dest="dlq_verb", required=True)
    listing = verbs.add_parser("list", help="the messages in %%DLQ%%GROUP, one JSON object a line")
    show = verbs.add_parser("show", help="one dead letter with its properties and body")
    resend = verbs.add_parser("resend", help="send dead letters again to their original topic")
    for parser, func in ((listing, list_dead_letters), (show, show_dead_letter), (resend, resend_dead_letters)):
        parser.add_argument("group", metavar="GROUP", help="the consumer group")
        parser.add_argument("--namesrv", default=None, help="name servers (default $NAMESRV_ADDR)")
        add_tls_arguments(parser)
        add_credential_arguments(parser)
        parser.set_defaults(func=func)
    show.add_argument("msg_id", metavar="MSGID", help="the message id (as `dlq list` prints) or its offset id")
    which = resend.add_mutually_exclusive_group(required=True)
    which.add_argument("--msg-id", default=None, help="resend this one")
    which.add_argument("--all", action="store_true", help="resend every dead letter of the group")
    resend.add_argument("--producer-group", default="krocket-cli-dlq-resend")


def dlq_topic(group: str) -> str:
    return DLQ_GROUP_PREFIX + group


def original_topic(msg: MessageExt) -> str:
    props = msg.properties
    return props.get(PROPERTY_RETRY_TOPIC) or props.get(PROPERTY_REAL_TOPIC) or msg.topic


def summary(msg: MessageExt, broker_name: str | None = None) -> dict[str, Any]:
    """RocketMQ's key style; ``brokerName`` and ``queueId`` are those of the ``%DLQ%`` queue it is stored in."""
    return {
        "msgId": msg.msg_id,
        "offsetMsgId": msg.offset_msg_id,
        "originalTopic": original_topic(msg),
        "reconsumeTimes": msg.reconsume_times,
        "storeTime": dt.datetime.fromtimestamp(msg.store_timestamp / 1000, dt.UTC).isoformat(timespec="milliseconds"),
        "brokerName": broker_name,
        "queueId": msg.queue_id,
        "queueOffset": msg.queue_offset,
        "storeHost": msg.store_host,
        "tags": msg.tags,
        "keys": msg.keys,
    }


def details(msg: MessageExt, broker_name: str | None = None) -> dict[str, Any]:
    return {**summary(msg, broker_name), "properties": dict(msg.properties), "body": msg.body.decode(errors="replace")}


def matches(msg: MessageExt, msg_id: str) -> bool:
    return msg_id in (msg.msg_id, msg.offset_msg_id, msg.properties.get(PROPERTY_ORIGIN_MESSAGE_ID))


async def read_dead_letters(group: str, namesrv: str | None, **options: Any) -> list[MessageExt]:
    """Every message in ``%DLQ%<group>`` on every broker, oldest first per queue (nothing is committed)."""
    return [msg for _, msg in await read_dead_letters_by_broker(group, namesrv, **options)]


async def read_dead_letters_by_broker(group: str, namesrv: str | None, **options: Any) -> list[tuple[str, MessageExt]]:
    """Every message in ``%DLQ%<group>`` on every broker with the name of that broker, oldest first per queue
    (nothing is committed)."""
    from krocket.client import PullConsumer, PullStatus

    validate_group(group)
    topic = dlq_topic(group)
    out: list[tuple[str, MessageExt]] = []
    async with PullConsumer(group, namesrv, **options) as consumer:
        try:
            queues = await consumer.fetch_queues(topic)
        except TopicNotExistError:
            return []
        for queue in sorted(queues):
            offset = await consumer.min_offset(queue)
            end = await consumer.max_offset(queue)
            while offset < end:
                result = await consumer.pull(queue, offset=offset, max_nums=32)
                if result.status is not PullStatus.FOUND or result.next_begin_offset <= offset:
                    break
                out.extend((queue.broker_name, m) for m in result.messages)
                offset = result.next_begin_offset
    return out


def resend_message(msg: MessageExt) -> Any:
    """A new message for the original topic: the body, tags, keys and user properties."""
    from krocket.client import Message

    user = {k: v for k, v in msg.properties.items() if k not in _SYSTEM_PROPERTIES}
    return Message(original_topic(msg), msg.body, tags=msg.tags, keys=msg.keys or None, properties=user, flag=msg.flag)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {**tls_kwargs(args), **credential_kwargs(args)}


@exits_1_on_failure
def list_dead_letters(args: argparse.Namespace) -> int:
    letters = asyncio.run(read_dead_letters_by_broker(args.group, namesrv_from_env(args.namesrv), **_options(args)))
    for broker_name, msg in letters:
        print(json.dumps(summary(msg, broker_name)), flush=True)
    return 0


@exits_1_on_failure
def show_dead_letter(args: argparse.Namespace) -> int:
    letters = asyncio.run(read_dead_letters_by_broker(args.group, namesrv_from_env(args.namesrv), **_options(args)))
    found = [(b, m) for b, m in letters if matches(m, args.msg_id)]
    if not found:
        raise KrocketError(f"no message {args.msg_id} in {dlq_topic(args.group)}")
    print(json.dumps(details(found[0][1], found[0][0]), indent=2), flush=True)
    return 0


@exits_1_on_failure
def resend_dead_letters(args: argparse.Namespace) -> int:
    from krocket.client import Producer

    async def run() -> int:
        namesrv = namesrv_from_env(args.namesrv)
        letters = await read_dead_letters_by_broker(args.group, namesrv, **_options(args))
        chosen = [m for _, m in letters if args.all or matches(m, args.msg_id)]
        if not chosen:
            raise KrocketError(f"no message {args.msg_id} in {dlq_topic(args.group)}")
        async with Producer(args.producer_group, namesrv, **_options(args)) as producer:
            for msg in chosen:
                result = await producer.send(resend_message(msg))
                print(
                    json.dumps(
                        {
                            "msgId": msg.msg_id,
                            "topic": original_topic(msg),
                            "newMsgId": result.msg_id,
                            "brokerName": result.queue.broker_name,
                            "queueId": result.queue.queue_id,
                        }
                    )
                )
        return 0

    return asyncio.run(run())
