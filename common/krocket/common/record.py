"""The commit log record: RocketMQ's message record layout, defined once (the ``MessageDecoder`` format).

The broker's store appends records in exactly this form and checks them at recovery and replication; a pull
response body is a slice of the log, so the client decodes the same bytes with the same layout.

A record: total size, magic, body CRC, queue id, flag, queue offset, physical (commit log) offset, sys flag,
born timestamp, born host (IPv4 + port), store timestamp, store host, reconsume times, prepared transaction
offset, body length + body, topic length (1 byte; 2 with magic V2) + topic, properties length (2 bytes) +
properties. The end of a segment is padded with a BLANK record: total size and ``BLANK_MAGIC`` only.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass

from krocket.common.message import MessageExt
from krocket.common.message_id import LOOPBACK_HOST

LOOPBACK_HOST_PORT_0 = LOOPBACK_HOST + bytes(4)

MAGIC_V1 = -626843481
MAGIC_V2 = -626843477  # 2-byte topic length
BLANK_MAGIC = -875286124

SYSFLAG_COMPRESSED = 0x1
SYSFLAG_MULTI_TAGS = 0x2
SYSFLAG_TRANSACTION_MASK = 0xC
SYSFLAG_TRANSACTION_PREPARED = 0x4
SYSFLAG_TRANSACTION_COMMIT = 0x8
SYSFLAG_TRANSACTION_ROLLBACK = 0xC
SYSFLAG_BORNHOST_V6 = 0x10
SYSFLAG_STOREHOST_V6 = 0x20
SYSFLAG_HOSTS_V6 = SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6
SYSFLAG_COMPRESSION_TYPE_MASK = 0x700  # RocketMQ 5: bits 8-10 name the compression (LZ4 1, ZSTD 2, ZLIB 3)
SYSFLAG_COMPRESSION_ZLIB = 0x300
# The bits a producer may set on a send (the others are the broker's or name features krocket lacks).
SYSFLAG_ALLOWED = (
    SYSFLAG_COMPRESSED
    | SYSFLAG_MULTI_TAGS
    | SYSFLAG_TRANSACTION_MASK
    | SYSFLAG_HOSTS_V6
    | SYSFLAG_COMPRESSION_TYPE_MASK
)

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
RECORD_FIXED_BYTES = 88  # everything before the body (IPv4 hosts)
RECORD_MIN_BYTES = RECORD_FIXED_BYTES + 1 + 2  # fixed part + topic length + properties length
MAX_TOPIC_BYTES = 255  # a V1 record's topic length is one byte

# The fixed part, hosts as their raw 8 bytes (4-byte IPv4 + big-endian i32 port): total, magic, crc, queueId,
# flag, queueOffset, physicalOffset, sysFlag, bornTimestamp, bornHost, storeTimestamp, storeHost,
# reconsumeTimes, preparedTransactionOffset, bodyLength.
RECORD_HEAD = struct.Struct(">iiiiiqqiq8sq8siqi")
assert RECORD_HEAD.size == RECORD_FIXED_BYTES
TOTAL_MAGIC = struct.Struct(">ii")  # the first two fields; also all of a BLANK record's header
BLANK_MIN_BYTES = TOTAL_MAGIC.size
_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")


class RecordError(ValueError):
    """A record that is torn, has a wrong magic, a wrong offset or fails its CRC."""


def body_crc(body: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(body) & 0x7FFFFFFF


def record_size(body_len: int, topic_len: int, props_len: int) -> int:
    return RECORD_FIXED_BYTES + body_len + 1 + topic_len + 2 + props_len


UNSPECIFIED_HOST = bytes(4)  # 0.0.0.0: an IPv6 peer the IPv4 host field cannot name


def record_host(peer: str | tuple[str, int] | tuple[str, int, int, int]) -> bytes:
    """A socket peer address (``host:port`` or a socket address tuple) in a record's 8-byte host form (IPv4 +
    big-endian port). Records are always
    written in the IPv4 layout (the IPv6 sysFlag bits are never stored): an IPv4-mapped IPv6 address is its IPv4
    address, ``::1`` is 127.0.0.1, any other IPv6 address is 0.0.0.0 (the port is kept)."""
    if isinstance(peer, str):
        host, _, port_text = peer.rpartition(":")
        port = int(port_text) if port_text.isdigit() and int(port_text) <= 0xFFFF else 0
    else:
        host, port = peer[0], peer[1]
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return UNSPECIFIED_HOST + struct.pack(">i", port)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            packed = mapped.packed
        elif ip.is_loopback:
            packed = LOOPBACK_HOST
        else:
            packed = UNSPECIFIED_HOST
    else:
        packed = ip.packed
    return packed + struct.pack(">i", port)


def topic_prefix(topic: str) -> bytes:
    """The topic as a V1 record stores it: one length byte, then the UTF-8 bytes. Raises ``RecordError``."""
    raw = topic.encode()
    if not raw or len(raw) > MAX_TOPIC_BYTES:
        raise RecordError(f"topic {topic!r} must be 1 to {MAX_TOPIC_BYTES} bytes long")
    return bytes((len(raw),)) + raw


# -- writing -----------------------------------------------------------------------------------------------
_pack_head = RECORD_HEAD.pack
_pack_i16 = _I16.pack
_crc32 = zlib.crc32


def pack_record_into(
    out: bytearray,
    total: int,
    queue_id: int,
    flag: int,
    queue_offset: int,
    physical_offset: int,
    sys_flag: int,
    born_timestamp: int,
    born_host: bytes,
    store_timestamp: int,
    store_host: bytes,
    reconsume_times: int,
    body: bytes | bytearray | memoryview,
    prefix: bytes,
    properties: bytes,
    prepared_tx_offset: int = 0,
) -> None:
    """Append one V1 record to ``out``. ``total`` is ``record_size(...)``, ``prefix`` is ``topic_prefix(topic)``
    and both hosts are in their 8-byte form (``message_id.pack_host``)."""
    out += _pack_head(
        total,
        MAGIC_V1,
        _crc32(body) & 0x7FFFFFFF,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_tx_offset,
        len(body),
    )
    out += body
    out += prefix
    out += _pack_i16(len(properties))
    out += properties


def encode_record(
    *,
    topic: bytes,
    body: bytes,
    properties: bytes = b"",
    queue_id: int = 0,
    flag: int = 0,
    queue_offset: int = 0,
    physical_offset: int = 0,
    sys_flag: int = 0,
    born_timestamp: int = 0,
    born_host: bytes = LOOPBACK_HOST_PORT_0,
    store_timestamp: int = 0,
    store_host: bytes = LOOPBACK_HOST_PORT_0,
    reconsume_times: int = 0,
    prepared_tx_offset: int = 0,
) -> bytes:
    """One commit log record (IPv4 hosts, magic V1) as bytes; fields left out are zero (hosts 127.0.0.1:0)."""
    out = bytearray()
    total = record_size(len(body), len(topic), len(properties))
    prefix = bytes((len(topic),)) + topic
    head = (queue_id, flag, queue_offset, physical_offset, sys_flag, born_timestamp, born_host, store_timestamp)
    pack_record_into(out, total, *head, store_host, reconsume_times, body, prefix, properties, prepared_tx_offset)
    return bytes(out)


# -- reading -----------------------------------------------------------------------------------------------
RecordHead = tuple[int, int, int, int, int, int, int, int, int, bytes, int, bytes, int, int, int]
RecordLayout = tuple[RecordHead, int, int, int, int]  # head fields, body end, topic start, props start, end


def record_layout(buf: bytes | bytearray | memoryview, pos: int = 0, phy: int = -1) -> RecordLayout:
    """Check the record at ``pos`` and say where its parts are: (head fields, body end, topic start, properties
    start, record end), all positions in ``buf``. With ``phy`` >= 0 the record must claim that commit log
    offset (messages name that offset). Raises ``RecordError`` when anything is off; the CRC is not checked."""
    at = phy if phy >= 0 else pos
    n = len(buf)
    if n - pos < RECORD_FIXED_BYTES:
        raise RecordError(f"record head at {at} is torn")
    head: RecordHead = RECORD_HEAD.unpack_from(buf, pos)
    total, magic = head[0], head[1]
    if magic != MAGIC_V1 and magic != MAGIC_V2:
        raise RecordError(f"bad magic {magic} at {at}")
    end = pos + total
    if total < RECORD_MIN_BYTES or end > n:
        raise RecordError(f"record size {total} at {at} runs past the data")
    if phy >= 0 and head[6] != phy:
        raise RecordError(f"record at {phy} claims physical offset {head[6]}")
    if head[7] & SYSFLAG_HOSTS_V6:
        raise RecordError(f"record at {at} has IPv6 hosts")
    body_len = head[14]
    body_end = pos + RECORD_FIXED_BYTES + body_len
    if body_len < 0 or body_end > end:
        raise RecordError(f"body length {body_len} at {at} runs past the record")
    if magic == MAGIC_V1:
        if body_end + 1 > end:
            raise RecordError(f"topic length of record at {at} runs past the record")
        topic_start = body_end + 1
        topic_len = buf[body_end]
    else:
        if body_end + 2 > end:
            raise RecordError(f"topic length of record at {at} runs past the record")
        topic_start = body_end + 2
        (topic_len,) = _I16.unpack_from(buf, body_end)
    props_len_at = topic_start + topic_len
    if topic_len < 0 or props_len_at + 2 > end:
        raise RecordError(f"topic of record at {at} runs past the record")
    (props_len,) = _I16.unpack_from(buf, props_len_at)
    if props_len < 0 or props_len_at + 2 + props_len != end:
        raise RecordError(f"record at {at} has inconsistent lengths")
    return head, body_end, topic_start, props_len_at + 2, end


@dataclass(slots=True)
class RecordMeta:
    """What the store needs from a record to index and dispatch it, without copying its body."""

    phy: int
    size: int
    queue_id: int
    queue_offset: int
    sys_flag: int
    store_timestamp: int
    topic: str
    properties: bytes


def parse_record(buf: bytes | bytearray | memoryview, pos: int, phy: int, check_crc: bool) -> RecordMeta:
    """Validate the record at ``pos`` (expected at commit log offset ``phy``) and return its meta."""
    head, body_end, topic_start, props_start, end = record_layout(buf, pos, phy)
    if check_crc and body_crc(buf[pos + RECORD_FIXED_BYTES : body_end]) != head[2]:
        raise RecordError(f"body CRC mismatch in record at {phy}")
    topic = bytes(buf[topic_start : props_start - 2]).decode(errors="replace")
    return RecordMeta(phy, head[0], head[3], head[5], head[7], head[10], topic, bytes(buf[props_start:end]))


def decode_record(
    buf: bytes | bytearray | memoryview, pos: int = 0, check_crc: bool = False, decompress: bool = True
) -> MessageExt:
    """The message in the record at ``pos``. Raises ``RecordError`` when it is torn or corrupt."""
    head, body_end, topic_start, props_start, end = record_layout(buf, pos)
    (total, _magic, crc, queue_id, flag, queue_offset, phys, sys_flag, born_ts, born_host, store_ts, store_host,
     reconsume, _prepared, _body_len) = head  # fmt: skip
    body = bytes(buf[pos + RECORD_FIXED_BYTES : body_end])
    if check_crc and body_crc(body) != crc:
        raise RecordError(f"body CRC mismatch in record at {pos}")
    if decompress and sys_flag & SYSFLAG_COMPRESSED:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise RecordError(f"compressed body of record at {pos} does not inflate: {exc}") from None
    msg = MessageExt.__new__(MessageExt)
    msg.topic = bytes(buf[topic_start : props_start - 2]).decode(errors="replace")
    msg.body = body
    msg._properties = None
    msg._raw_properties = bytes(buf[props_start:end]) if end > props_start else b""
    msg.queue_id = queue_id
    msg.queue_offset = queue_offset
    msg.commit_log_offset = phys
    msg.store_size = total
    msg.sys_flag = sys_flag
    msg.flag = flag
    msg.born_timestamp = born_ts
    msg._born_host = born_host
    msg.store_timestamp = store_ts
    msg._store_host = store_host
    msg.reconsume_times = reconsume
    msg._offset_msg_id = None
    msg.body_crc = crc
    return msg


def decode_records(buf: bytes | bytearray | memoryview) -> list[MessageExt]:
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


@dataclass(slots=True)
class UndecodableRecord:
    """A record of a pull response body that could not be decoded: its queue offset (presumed when its layout
    is broken), its commit log offset (-1 when its layout is broken) and why."""

    queue_offset: int
    commit_log_offset: int
    reason: str


@dataclass(slots=True)
class PulledRecords:
    """A pull response body decoded record by record: the messages, the records that could not be decoded,
    and, when the body could not be read to its end, the queue offset to pull from next (past the bad record)."""

    messages: list[MessageExt]
    undecodable: list[UndecodableRecord]
    resume_at: int | None = None


def decode_pulled_records(
    buf: bytes | bytearray | memoryview, from_offset: int, decompress: bool = True
) -> PulledRecords:
    """The records of a pull response body (pulled from queue offset ``from_offset``), skipping those that do
    not decode instead of failing the pull: a record whose layout holds but whose body does not (a compressed
    body that does not inflate) is skipped by its size; at a record whose layout is broken, decoding stops and
    ``resume_at`` is the queue offset after it. ``decompress=False`` keeps compressed bodies as stored."""
    out = PulledRecords([], [])
    pos = 0
    n = len(buf)
    while pos + 4 <= n:
        try:
            msg = decode_record(buf, pos, decompress=decompress)
        except RecordError as exc:
            try:
                head = record_layout(buf, pos)[0]
            except RecordError:
                # The layout is broken, so neither its size nor its queue offset can be trusted: the bad record
                # is taken to be the next offset after the last good one, and the pull resumes past it.
                last = out.messages[-1].queue_offset if out.messages else from_offset - 1
                bad_offset = max(last + 1, from_offset)
                out.undecodable.append(UndecodableRecord(bad_offset, -1, str(exc)))
                out.resume_at = bad_offset + 1
                return out
            queue_offset, phys = head[5], head[6]
            out.undecodable.append(UndecodableRecord(queue_offset, phys, str(exc)))
            pos += head[0]
            continue
        out.messages.append(msg)
        pos += msg.store_size
    return out


def peek_head(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """(total size, magic) of the record or BLANK record at ``pos``."""
    total, magic = TOTAL_MAGIC.unpack_from(buf, pos)
    return total, magic


def blank_record(size: int) -> bytes:
    """The header of a BLANK record padding ``size`` bytes (the rest reads as zeros)."""
    return TOTAL_MAGIC.pack(size, BLANK_MAGIC)


def store_timestamp_of(raw: bytes) -> int:
    """The store timestamp in the 8 bytes at ``POS_STORE_TIMESTAMP``."""
    return int(_I64.unpack(raw)[0])
