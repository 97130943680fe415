"""Batch bodies of SEND_BATCH_MESSAGE (320): per message ``{total, magic 0, crc 0, flag, bodyLen + body,
propLen + props}``, as RocketMQ's ``MessageDecoder.encodeMessages`` writes them."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from krocket.common.message import decode_properties, encode_properties
from krocket.common.record import RecordError

_BATCH_HEAD = struct.Struct(">iiiii")
_I16 = struct.Struct(">h")
_ITEM_MIN_BYTES = _BATCH_HEAD.size + _I16.size


@dataclass(slots=True)
class BatchItem:
    body: bytes
    properties: dict[str, str]
    flag: int = 0
    raw_properties: bytes = b""  # the properties as the producer encoded them


def encode_batch(items: list[tuple[bytes, dict[str, str], int]]) -> bytes:
    """A batch body of (body, properties, flag) items."""
    parts: list[bytes] = []
    for body, props, flag in items:
        raw_props = encode_properties(props)
        total = _ITEM_MIN_BYTES + len(body) + len(raw_props)
        parts.append(_BATCH_HEAD.pack(total, 0, 0, flag, len(body)))
        parts.append(body)
        parts.append(_I16.pack(len(raw_props)))
        parts.append(raw_props)
    return b"".join(parts)


def decode_batch(buf: bytes, properties_of: Callable[[bytes], dict[str, str]] = decode_properties) -> list[BatchItem]:
    """The items of a batch body, each item's properties decoded by ``properties_of`` (the broker passes its
    checking decoder). Raises ``RecordError`` when a length does not add up."""
    items: list[BatchItem] = []
    pos = 0
    n = len(buf)
    head = _BATCH_HEAD.size
    while pos < n:
        if n - pos < _ITEM_MIN_BYTES:
            raise RecordError("batch body ends inside a message header")
        total, _magic, _crc, flag, body_len = _BATCH_HEAD.unpack_from(buf, pos)
        if total < _ITEM_MIN_BYTES or pos + total > n or body_len < 0 or _ITEM_MIN_BYTES + body_len > total:
            raise RecordError(f"batch message at {pos} has inconsistent lengths")
        body = buf[pos + head : pos + head + body_len]
        (props_len,) = _I16.unpack_from(buf, pos + head + body_len)
        p = pos + _ITEM_MIN_BYTES + body_len
        if props_len < 0 or p + props_len != pos + total:
            raise RecordError(f"batch message at {pos} has inconsistent property length")
        raw = buf[p : p + props_len]
        items.append(BatchItem(body, properties_of(raw), flag, raw))
        pos += total
    return items
