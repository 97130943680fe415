"""Message model and RocketMQ's message record format (RocketMQ's ``MessageDecoder`` layout).

The store keeps records in exactly this format, so a pull response body is a slice of the commit log.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

MAGIC_V1 = -626843481
MAGIC_V2 = -626843477
BLANK_MAGIC = -875286124

SYSFLAG_COMPRESSED = 0x1
SYSFLAG_MULTI_TAGS = 0x2
SYSFLAG_BORNHOST_V6 = 0x10
SYSFLAG_STOREHOST_V6 = 0x20

PROPERTY_TAGS = "TAGS"
PROPERTY_KEYS = "KEYS"
PROPERTY_UNIQ_KEY = "UNIQ_KEY"  # Java: MessageConst.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX
PROPERTY_WAIT = "WAIT"
PROPERTY_DELAY = "DELAY"
PROPERTY_MIN_OFFSET = "MIN_OFFSET"
PROPERTY_MAX_OFFSET = "MAX_OFFSET"
PROPERTY_RETRY_TOPIC = "RETRY_TOPIC"

NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"

# Offsets of the fixed fields of a record.
POS_TOTAL_SIZE = 0
POS_MAGIC = 4
POS_BODY_CRC = 8
POS_QUEUE_ID = 12
POS_FLAG = 16
POS_QUEUE_OFFSET = 20
POS_PHYSICAL_OFFSET = 28
POS_SYSFLAG = 36
POS_BORN_TIMESTAMP = 40
POS_BORN_HOST = 48
POS_STORE_TIMESTAMP = 56
POS_STORE_HOST = 64
POS_RECONSUME_TIMES = 72
POS_PREPARED_TX_OFFSET = 76
POS_BODY_LEN = 84
RECORD_FIXED_BYTES = 88  # everything before the body, IPv4 hosts
RECORD_MIN_BYTES = RECORD_FIXED_BYTES + 4 + 1 + 2 - 4  # fixed part + topic len + prop len (body len counted)

# A record: total, magic, crc, queueId, flag, queueOffset, physOffset, sysFlag, bornTs, bornHost(4s+i),
# storeTs, storeHost(4s+i), reconsumeTimes, preparedTxOffset, bodyLen.
RECORD_HEAD = struct.Struct(">iiiiiqqiq4siq4siiqi")
assert RECORD_HEAD.size == RECORD_FIXED_BYTES

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
COMPRESS_OVER_BYTES = 4 * 1024


def encode_properties(properties: dict[str, str]) -> bytes:
    if not properties:
        return b""
    return "".join(f"{k}{NAME_VALUE_SEPARATOR}{v}{PROPERTY_SEPARATOR}" for k, v in properties.items()).encode()


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


def body_crc(body: bytes) -> int:
    return zlib.crc32(body) & 0x7FFFFFFF


def pack_host(addr: tuple[str, int] | str) -> bytes:
    """IPv4 host and port in a record's 8-byte form."""
    if isinstance(addr, str):
        host, _, port = addr.rpartition(":")
        addr = (host, int(port))
    try:
        ip = socket.inet_aton(addr[0])
    except OSError:
        try:
            ip = socket.inet_aton(socket.gethostbyname(addr[0]))
        except OSError:
            ip = b"\x7f\x00\x00\x01"
    return ip + struct.pack(">i", addr[1])


def unpack_host(raw: bytes) -> str:
    return f"{socket.inet_ntoa(raw[:4])}:{struct.unpack('>i', raw[4:8])[0]}"


def offset_msg_id(store_host: bytes, commit_log_offset: int) -> str:
    """The offset message id: store host (ip + port) and the commit log offset, in upper-case hex."""
    return f"{store_host.hex().upper()}{commit_log_offset & 0xFFFFFFFFFFFFFFFF:016X}"


def decode_offset_msg_id(msg_id: str) -> tuple[str, int]:
    raw = bytes.fromhex(msg_id)
    if len(raw) != 16:
        raise ValueError(f"message id {msg_id!r} is not 32 hex characters")
    return unpack_host(raw[:8]), struct.unpack(">q", raw[8:])[0]


class UniqueIdGenerator:
    """Client-side unique message ids in RocketMQ's 32-hex-character layout."""

    def __init__(self) -> None:
        try:
            ip = socket.inet_aton(socket.gethostbyname(socket.gethostname()))
        except OSError:
            ip = b"\x7f\x00\x00\x01"
        self._prefix = (
            (ip + struct.pack(">H", os.getpid() & 0xFFFF) + struct.pack(">I", random.getrandbits(32))).hex().upper()
        )
        self._counter = itertools.count(random.randrange(0, 0xFFFF))
        now = time.localtime()
        self._month_start = time.mktime((now.tm_year, now.tm_mon, 1, 0, 0, 0, 0, 0, -1))

    def next_id(self) -> str:
        millis = int((time.time() - self._month_start) * 1000) & 0xFFFFFFFF
        return f"{self._prefix}{millis:08X}{next(self._counter) & 0xFFFF:04X}"


@dataclass(slots=True)
class Message:
    """A message as producers build it."""

    topic: str
    body: bytes
    tags: str | None = None
    keys: str | list[str] | None = None
    properties: dict[str, str] = field(default_factory=dict)
    flag: int = 0

    def wire_properties(self) -> dict[str, str]:
        props = dict(self.properties)
        if self.tags:
            props[PROPERTY_TAGS] = self.tags
        if self.keys:
            props[PROPERTY_KEYS] = self.keys if isinstance(self.keys, str) else " ".join(self.keys)
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
            host = _host_text(host)
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


def encode_record(
    *,
    topic: bytes,
    body: bytes,
    properties: bytes,
    queue_id: int,
    flag: int,
    queue_offset: int,
    physical_offset: int,
    sys_flag: int,
    born_timestamp: int,
    born_host: bytes,
    store_timestamp: int,
    store_host: bytes,
    reconsume_times: int = 0,
    prepared_tx_offset: int = 0,
    crc: int | None = None,
) -> bytes:
    """One commit log record (IPv4 hosts, magic V1)."""
    total = RECORD_FIXED_BYTES + len(body) + 1 + len(topic) + 2 + len(properties)
    head = RECORD_HEAD.pack(
        total,
        MAGIC_V1,
        body_crc(body) if crc is None else crc,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        born_timestamp,
        born_host[:4],
        struct.unpack(">i", born_host[4:8])[0],
        store_timestamp,
        store_host[:4],
        struct.unpack(">i", store_host[4:8])[0],
        reconsume_times,
        prepared_tx_offset,
        len(body),
    )
    return b"".join((head, body, bytes((len(topic),)), topic, struct.pack(">h", len(properties)), properties))


def record_size(body_len: int, topic_len: int, props_len: int) -> int:
    return RECORD_FIXED_BYTES + body_len + 1 + topic_len + 2 + props_len


class RecordError(ValueError):
    """A record that is torn, has a wrong magic or fails its CRC."""


_HOST_CACHE: dict[bytes, str] = {}


def _host_text(raw: bytes) -> str:
    """``ip:port`` of a record's 8-byte host field (cached: a consumer sees few distinct hosts)."""
    text = _HOST_CACHE.get(raw)
    if text is None:
        if len(_HOST_CACHE) > 4096:
            _HOST_CACHE.clear()
        text = _HOST_CACHE[raw] = unpack_host(raw)
    return text


def decode_record(
    buf: bytes | memoryview, pos: int = 0, check_crc: bool = False, decompress: bool = True
) -> MessageExt:
    """Decode the record at ``pos``. Raises ``RecordError`` when it is torn or corrupt."""
    if len(buf) - pos < RECORD_FIXED_BYTES:
        raise RecordError("record shorter than its fixed header")
    (
        total,
        magic,
        crc,
        queue_id,
        flag,
        queue_offset,
        phys,
        sys_flag,
        born_ts,
        born_ip,
        born_port,
        store_ts,
        store_ip,
        store_port,
        reconsume,
        _prepared,
        body_len,
    ) = RECORD_HEAD.unpack_from(buf, pos)
    if magic != MAGIC_V1 and magic != MAGIC_V2:
        raise RecordError(f"bad magic {magic} at {pos}")
    if sys_flag & (SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6):
        raise RecordError("IPv6 hosts in records are not supported")
    end = pos + total
    if total < RECORD_MIN_BYTES or end > len(buf):
        raise RecordError(f"record size {total} at {pos} runs past the data")
    p = pos + RECORD_FIXED_BYTES
    if body_len < 0 or p + body_len > end:
        raise RecordError(f"body length {body_len} at {pos} runs past the record")
    body = bytes(buf[p : p + body_len])
    p += body_len
    if magic == MAGIC_V1:
        topic_len = buf[p]
        p += 1
    else:
        topic_len = int.from_bytes(buf[p : p + 2], "big", signed=True)
        p += 2
    topic = bytes(buf[p : p + topic_len]).decode(errors="replace")
    p += topic_len
    props_len = int.from_bytes(buf[p : p + 2], "big", signed=True)
    p += 2
    if props_len < 0 or p + props_len != end:
        raise RecordError(f"record at {pos} has inconsistent lengths")
    if check_crc and body_crc(body) != crc:
        raise RecordError(f"body CRC mismatch in record at {pos}")
    if decompress and sys_flag & SYSFLAG_COMPRESSED:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise RecordError(f"compressed body of record at {pos} does not inflate: {exc}") from None
    msg = MessageExt.__new__(MessageExt)
    msg.topic = topic
    msg.body = body
    msg._properties = None
    msg._raw_properties = bytes(buf[p:end]) if props_len else b""
    msg.queue_id = queue_id
    msg.queue_offset = queue_offset
    msg.commit_log_offset = phys
    msg.store_size = total
    msg.sys_flag = sys_flag
    msg.flag = flag
    msg.born_timestamp = born_ts
    msg._born_host = born_ip + born_port.to_bytes(4, "big", signed=True)
    msg.store_timestamp = store_ts
    msg._store_host = store_ip + store_port.to_bytes(4, "big", signed=True)
    msg.reconsume_times = reconsume
    msg._offset_msg_id = None
    msg.body_crc = crc
    return msg


def decode_records(buf: bytes | memoryview) -> list[MessageExt]:
    """All records of a pull response body."""
    out: list[MessageExt] = []
    append = out.append
    pos = 0
    n = len(buf)
    while pos + 4 <= n:
        msg = decode_record(buf, pos)
        append(msg)
        pos += msg.store_size
    return out


# -- batch bodies (SEND_BATCH_MESSAGE 320) ------------------------------------------------------------
_BATCH_HEAD = struct.Struct(">iiiii")


@dataclass(slots=True)
class BatchItem:
    body: bytes
    properties: dict[str, str]
    flag: int = 0
    raw_properties: bytes = b""  # the properties as the producer encoded them


def encode_batch(items: list[tuple[bytes, dict[str, str], int]]) -> bytes:
    """A batch body: ``{total, magic 0, crc 0, flag, bodyLen + body, propLen + props}`` per message."""
    parts: list[bytes] = []
    for body, props, flag in items:
        raw_props = encode_properties(props)
        total = 20 + len(body) + 2 + len(raw_props)
        parts.append(_BATCH_HEAD.pack(total, 0, 0, flag, len(body)))
        parts.append(body)
        parts.append(struct.pack(">h", len(raw_props)))
        parts.append(raw_props)
    return b"".join(parts)


def decode_batch(buf: bytes) -> list[BatchItem]:
    items: list[BatchItem] = []
    pos = 0
    n = len(buf)
    while pos < n:
        if n - pos < 22:
            raise RecordError("batch body ends inside a message header")
        total, _magic, _crc, flag, body_len = _BATCH_HEAD.unpack_from(buf, pos)
        if total < 22 or pos + total > n or body_len < 0 or 20 + body_len + 2 > total:
            raise RecordError(f"batch message at {pos} has inconsistent lengths")
        body = buf[pos + 20 : pos + 20 + body_len]
        (props_len,) = struct.unpack_from(">h", buf, pos + 20 + body_len)
        p = pos + 22 + body_len
        if props_len < 0 or p + props_len != pos + total:
            raise RecordError(f"batch message at {pos} has inconsistent property length")
        raw = buf[p : p + props_len]
        items.append(BatchItem(body, decode_properties(raw), flag, raw))
        pos += total
    return items
