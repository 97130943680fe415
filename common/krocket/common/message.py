"""The message model: what producers build (``Message``), what consumers get (``MessageExt``), and message
properties with their wire encoding (``name\x01value\x02`` pairs, as RocketMQ's ``MessageDecoder`` writes them).

The commit log record that carries a message is ``krocket.common.record``; message ids are
``krocket.common.message_id``; batch bodies are ``krocket.common.batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from krocket.common.message_id import host_text, offset_msg_id, pack_host

PROPERTY_TAGS = "TAGS"
PROPERTY_KEYS = "KEYS"
PROPERTY_UNIQ_KEY = "UNIQ_KEY"  # Java: MessageConst.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX
PROPERTY_WAIT = "WAIT"
PROPERTY_DELAY = "DELAY"
PROPERTY_MIN_OFFSET = "MIN_OFFSET"
PROPERTY_MAX_OFFSET = "MAX_OFFSET"
PROPERTY_RETRY_TOPIC = "RETRY_TOPIC"
PROPERTY_REAL_TOPIC = "REAL_TOPIC"  # a half (or delayed) message's real topic, kept while it waits elsewhere
PROPERTY_REAL_QUEUE_ID = "REAL_QID"
PROPERTY_TRANSACTION_PREPARED = "TRAN_MSG"  # "true" on a half message
PROPERTY_PRODUCER_GROUP = "PGROUP"
PROPERTY_TRANSACTION_ID = "__transactionId__"
PROPERTY_TRANSACTION_CHECK_TIMES = "TRANSACTION_CHECK_TIMES"
PROPERTY_ORIGIN_MESSAGE_ID = "ORIGIN_MESSAGE_ID"
PROPERTY_TIMER_DELIVER_MS = "TIMER_DELIVER_MS"  # 5.x timer: deliver at this epoch ms
PROPERTY_TIMER_DELAY_SEC = "TIMER_DELAY_SEC"  # 5.x timer: deliver this many seconds after the send
PROPERTY_SHARDING_KEY = "__SHARDINGKEY"  # a 5.x FIFO message's message group
PROPERTY_RECONSUME_TIME = "RECONSUME_TIME"
PROPERTY_MAX_RECONSUME_TIMES = "MAX_RECONSUME_TIMES"
PROPERTY_CHECK_IMMUNITY_TIME = "CHECK_IMMUNITY_TIME_IN_SECONDS"
PROPERTY_TRACE_CONTEXT = "TRACE_CONTEXT"
PROPERTY_BORN_HOST = "BORN_HOST"
PROPERTY_BORN_TIMESTAMP = "BORN_TIMESTAMP"
RESERVED_PROPERTY_KEYS = frozenset(
    {
        PROPERTY_TAGS,
        PROPERTY_KEYS,
        PROPERTY_UNIQ_KEY,
        PROPERTY_WAIT,
        PROPERTY_DELAY,
        PROPERTY_MIN_OFFSET,
        PROPERTY_MAX_OFFSET,
        PROPERTY_RETRY_TOPIC,
        PROPERTY_REAL_TOPIC,
        PROPERTY_REAL_QUEUE_ID,
        PROPERTY_TRANSACTION_PREPARED,
        PROPERTY_PRODUCER_GROUP,
        PROPERTY_TRANSACTION_ID,
        PROPERTY_TRANSACTION_CHECK_TIMES,
        PROPERTY_ORIGIN_MESSAGE_ID,
        PROPERTY_TIMER_DELIVER_MS,
        PROPERTY_TIMER_DELAY_SEC,
        PROPERTY_SHARDING_KEY,
        PROPERTY_RECONSUME_TIME,
        PROPERTY_MAX_RECONSUME_TIMES,
        PROPERTY_CHECK_IMMUNITY_TIME,
        PROPERTY_TRACE_CONTEXT,
        PROPERTY_BORN_HOST,
        PROPERTY_BORN_TIMESTAMP,
        "MSG_REGION",
        "TRACE_ON",
        "CLUSTER",
        "TRAN_PREPARED_QUEUE_OFFSET",
        "INSTANCE_ID",
        "CORRELATION_ID",
        "REPLY_TO_CLIENT",
        "TTL",
        "ARRIVE_TIME",
        "MSG_TYPE",
        "FIRST_POP_TIME",
        "POP_CK",
        "DLQ_ORIGIN_TOPIC",
        "DLQ_ORIGIN_MESSAGE_ID",
    }
)
"""Property names the broker and clients give a meaning (RocketMQ's ``MessageConst``): a 5.x user property may not
use one (ILLEGAL_MESSAGE_PROPERTY_KEY)."""

NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"
MAX_PROPERTIES_BYTES = 32767  # the record stores their length as a signed 16-bit number

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
COMPRESS_OVER_BYTES = 4 * 1024


def encode_properties(properties: dict[str, str]) -> bytes:
    if not properties:
        return b""
    return "".join([f"{k}{NAME_VALUE_SEPARATOR}{v}{PROPERTY_SEPARATOR}" for k, v in properties.items()]).encode()


def decode_properties(raw: bytes | str) -> dict[str, str]:
    text = raw.decode(errors="replace") if isinstance(raw, bytes | bytearray | memoryview) else raw
    result: dict[str, str] = {}
    if not text:
        return result
    for item in text.split(PROPERTY_SEPARATOR):
        if not item:
            continue
        key, sep, value = item.partition(NAME_VALUE_SEPARATOR)
        if sep:
            result[key] = value
    return result


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (32-bit, over UTF-16 code units): RocketMQ's tag hash code."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def tags_code(tags: str | None) -> int:
    return java_string_hash(tags) if tags else 0


@dataclass(slots=True)
class Message:
    """A message as producers build it."""

    topic: str
    body: bytes
    tags: str | None = None
    keys: str | list[str] | None = None
    properties: dict[str, str] = field(default_factory=dict)
    flag: int = 0
    delay_level: int = 0  # > 0: delivered after that level's delay (the broker's messageDelayLevel)
    deliver_at_ms: int | None = None  # a 5.x timer: deliver at this epoch ms (up to 3 days ahead)
    delay_seconds: int | None = None  # a 5.x timer: deliver this many seconds after the send

    def wire_properties(self) -> dict[str, str]:
        props = dict(self.properties)
        if self.tags:
            props[PROPERTY_TAGS] = self.tags
        if self.keys:
            props[PROPERTY_KEYS] = self.keys if isinstance(self.keys, str) else " ".join(self.keys)
        if self.delay_level > 0:
            props[PROPERTY_DELAY] = str(self.delay_level)
        if self.deliver_at_ms is not None:
            props[PROPERTY_TIMER_DELIVER_MS] = str(self.deliver_at_ms)
        if self.delay_seconds is not None:
            props[PROPERTY_TIMER_DELAY_SEC] = str(self.delay_seconds)
        return props


_MESSAGE_EXT_FIELDS = (
    "topic",
    "body",
    "properties",
    "queue_id",
    "queue_offset",
    "commit_log_offset",
    "store_size",
    "sys_flag",
    "flag",
    "born_timestamp",
    "born_host",
    "store_timestamp",
    "store_host",
    "reconsume_times",
    "offset_msg_id",
    "body_crc",
)


def _lazy_host(slot: str, doc: str) -> Any:
    """A property over ``slot``, which holds a record's 8 host bytes until first read, then ``ip:port``."""

    def get(msg: Any) -> str:
        host = getattr(msg, slot)
        if isinstance(host, bytes):
            host = host_text(host)
            setattr(msg, slot, host)
        return host

    def put(msg: Any, value: str) -> None:
        setattr(msg, slot, value)

    return property(get, put, doc=doc)


class MessageExt:
    """A stored message as consumers see it.

    Records decoded from a pull response keep their properties, hosts and offset id in wire form until they are
    first read, so a consumer that only wants the body does not pay for the rest."""

    __slots__ = (
        "topic",
        "body",
        "_properties",
        "_raw_properties",
        "queue_id",
        "queue_offset",
        "commit_log_offset",
        "store_size",
        "sys_flag",
        "flag",
        "born_timestamp",
        "_born_host",
        "store_timestamp",
        "_store_host",
        "reconsume_times",
        "_offset_msg_id",
        "body_crc",
    )

    def __init__(
        self,
        topic: str,
        body: bytes,
        properties: dict[str, str],
        queue_id: int,
        queue_offset: int,
        commit_log_offset: int,
        store_size: int,
        sys_flag: int,
        flag: int,
        born_timestamp: int,
        born_host: str,
        store_timestamp: int,
        store_host: str,
        reconsume_times: int,
        offset_msg_id: str,
        body_crc: int = 0,
    ) -> None:
        self.topic = topic
        self.body = body
        self._properties: dict[str, str] | None = properties
        self._raw_properties = b""
        self.queue_id = queue_id
        self.queue_offset = queue_offset
        self.commit_log_offset = commit_log_offset
        self.store_size = store_size
        self.sys_flag = sys_flag
        self.flag = flag
        self.born_timestamp = born_timestamp
        self._born_host: str | bytes = born_host
        self.store_timestamp = store_timestamp
        self._store_host: str | bytes = store_host
        self.reconsume_times = reconsume_times
        self._offset_msg_id: str | None = offset_msg_id
        self.body_crc = body_crc

    @property
    def properties(self) -> dict[str, str]:
        props = self._properties
        if props is None:
            props = self._properties = decode_properties(self._raw_properties) if self._raw_properties else {}
        return props

    @properties.setter
    def properties(self, value: dict[str, str]) -> None:
        self._properties = value

    born_host = _lazy_host("_born_host", "The producer's address, ``ip:port``.")
    store_host = _lazy_host("_store_host", "The storing broker's address, ``ip:port``.")

    @property
    def offset_msg_id(self) -> str:
        """Store host (ip + port) and commit log offset in upper-case hex."""
        msg_id = self._offset_msg_id
        if msg_id is None:
            host = self._store_host
            raw = host if isinstance(host, bytes) else pack_host(host)
            msg_id = self._offset_msg_id = offset_msg_id(raw, self.commit_log_offset)
        return msg_id

    @offset_msg_id.setter
    def offset_msg_id(self, value: str) -> None:
        self._offset_msg_id = value

    @property
    def tags(self) -> str | None:
        return self.properties.get(PROPERTY_TAGS)

    @property
    def keys(self) -> list[str]:
        raw = self.properties.get(PROPERTY_KEYS, "")
        return raw.split() if raw else []

    @property
    def msg_id(self) -> str:
        """The user-visible id: the producer's unique id, or the offset id when it has none."""
        return self.properties.get(PROPERTY_UNIQ_KEY) or self.offset_msg_id

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _MESSAGE_EXT_FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageExt):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _MESSAGE_EXT_FIELDS)
        return f"MessageExt({fields})"
