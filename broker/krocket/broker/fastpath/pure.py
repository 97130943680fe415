"""The send fast path in Python: the reference implementation of ``serve`` (the contract is in
``krocket.broker.fastpath``; the C extension ``_cserve`` produces the same bytes).

Every check here is one of today's send path (``processors/send.py``, ``BrokerService.send``, ``put_message``)
written for the common case; whatever is not plainly the common case stops the walk (``STOP_SLOW``) and today's
code serves that frame, errors included. Where this module accepts input that the C scanner declines (duplicate
JSON keys: the last one wins, as with ``json.loads``), the slow path decides it the same way, so the stored bytes do
not depend on which implementation ran. orjson parses the header when it is installed, the stdlib otherwise.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from krocket.broker.fastpath.context import SLOW_PROPERTY_KEYS, STOP_COMMIT, STOP_END, STOP_SLOW, FastContext
from krocket.broker.processors.send import send_reply
from krocket.broker.service import SendOutcome
from krocket.common.codes import RequestCode
from krocket.common.headers.send import SEND_LONG_NAMES, SEND_V2_NAMES, SendHeaderNames
from krocket.common.message import MAX_PROPERTIES_BYTES, PROPERTY_KEYS, PROPERTY_TAGS, PROPERTY_UNIQ_KEY
from krocket.common.record import BLANK_MIN_BYTES, SYSFLAG_MULTI_TAGS, pack_record_into, record_size
from krocket.common.remoting.command import RemotingCommand
from krocket.common.remoting.header_template import header_template

_json_decode = json.JSONDecoder().decode


def loads_stdlib(raw: memoryview) -> Any:
    """The header as the stdlib's json reads it; None when it is not JSON (or not UTF-8)."""
    try:
        return _json_decode(str(raw, "utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


_loads: Callable[[memoryview], Any] = loads_stdlib
JSON_LIBRARY = "json"
try:
    import orjson

    def loads_orjson(raw: memoryview) -> Any:
        """The header as orjson reads it (UTF-8 checked); None when it is not JSON."""
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    _loads = loads_orjson
    JSON_LIBRARY = "orjson"
except ImportError:  # pragma: no cover - orjson is optional (the "fast" extra)
    pass

_I32 = struct.Struct(">i")
_PAIR = struct.Struct(">ii")
_unpack_i32 = _I32.unpack_from
_pack_pair = _PAIR.pack

_SEND_CODES = frozenset((int(RequestCode.SEND_MESSAGE), int(RequestCode.SEND_MESSAGE_V2)))
_TOP_KEYS = frozenset(
    ("code", "extFields", "flag", "opaque", "version", "language", "serializeTypeCurrentRPC", "remark")
)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PLAIN_SYS_FLAGS = (0, SYSFLAG_MULTI_TAGS)
_NOT_BATCH = ("", "false", "0")  # what the slow path reads as not a batch, as clients write it
_SLOW_KEYS = frozenset(key.encode() for key in SLOW_PROPERTY_KEYS)
_TAGS, _KEYS, _UNIQ = PROPERTY_TAGS.encode(), PROPERTY_KEYS.encode(), PROPERTY_UNIQ_KEY.encode()
_SMALL_INTS = {str(value): value for value in range(-1, 1024)}  # queue ids, flags, counts: the common values


def _keys(names: SendHeaderNames) -> tuple[str, ...]:
    """The wire names of the fields the fast path reads, in the order ``serve`` unpacks them."""
    return (
        names.topic,
        names.queue_id,
        names.sys_flag,
        names.born_timestamp,
        names.flag,
        names.reconsume_times,
        names.default_topic_queue_nums,
        names.max_reconsume_times,
        names.batch,
        names.properties,
    )


# The name set ``SendMessageHeader.from_fields`` decodes with: one-letter names when ``b`` is there and ``topic``
# is not (whatever the request code says).
_V2_KEYS = _keys(SEND_V2_NAMES)
_LONG_KEYS = _keys(SEND_LONG_NAMES)

_MARK_ID, _MARK_QUEUE, _MARK_OFFSET, _MARK_OPAQUE = "@@msgId@@", 918273645, 546372819, 192837465


def _reply_template() -> bytes:
    """Today's send reply (``send_reply`` of a SUCCESS outcome, as ``encode_header`` writes it) as a template of
    (store host hex, commit log offset, queue id, queue offset, opaque, version)."""
    probe = send_reply(
        RemotingCommand(RequestCode.SEND_MESSAGE_V2, _MARK_OPAQUE), SendOutcome(_MARK_ID, _MARK_QUEUE, _MARK_OFFSET)
    )
    slots = (
        (f'"{_MARK_ID}"'.encode(), b'"%s%016X"'),
        (b'"%d"' % _MARK_QUEUE, b'"%d"'),
        (b'"%d"' % _MARK_OFFSET, b'"%d"'),
        (b'"opaque":%d' % _MARK_OPAQUE, b'"opaque":%d'),
        (b'"version":%d' % probe.version, b'"version":%d'),
    )
    return header_template(probe, slots, "send reply")


REPLY_TEMPLATE = _reply_template()


def _int(text: str) -> int | None:
    """An integer written ``-?[0-9]{1,19}`` within int64, else None (the slow path decides the rest)."""
    if not text.isascii() or len(text) > 20:
        return None
    digits = text[1:] if text[0] == "-" else text
    if not digits.isdigit():
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _num(value: Any, default: int) -> int | None:
    """An integer field as the slow path reads it (``int(text) if text else default``), for what the fast path
    accepts: ``-?[0-9]{1,19}`` text or a JSON integer, within int64; None for anything else."""
    if value.__class__ is str:
        if not value:
            return default
        small = _SMALL_INTS.get(value)
        return small if small is not None else _int(value)
    if value is None:
        return default
    if value.__class__ is int and _INT64_MIN <= value <= _INT64_MAX:
        return int(value)
    return None


def serve(buf: bytearray, ctx: FastContext, out: bytearray) -> int:
    """Serve the plain sends at the front of ``buf`` (see the package docstring); returns the bytes consumed."""
    n = len(buf)
    pos = 0
    count = 0
    stop = STOP_END
    max_frame = ctx.max_frame
    max_body = ctx.max_body
    log_buf = ctx.log_buf
    wrote = ctx.log_wrote
    room = ctx.log_room
    now = ctx.now
    may_append = now < ctx.roll_at
    commit_limit = ctx.commit_limit
    born_host = ctx.born_host
    store_host = ctx.store_host
    id_prefix = ctx.msg_id_prefix_bytes
    version = ctx.version
    rr = ctx.rr
    topics = ctx.topics_by_name
    tags_code = ctx.tags_code
    index_entries = ctx.index_entries if ctx.index_enabled else None
    touched = ctx.touched
    last_queue = None
    with memoryview(buf) as view:
        while n - pos >= 4:
            (length,) = _unpack_i32(buf, pos)
            if length < 4 or length > max_frame:
                stop = STOP_SLOW
                break
            end = pos + 4 + length
            if end > n:
                break
            (marker,) = _unpack_i32(buf, pos + 4)
            header_end = pos + 8 + (marker & 0xFFFFFF)
            if marker >> 24 != 0 or header_end > end:
                stop = STOP_SLOW
                break
            header = _loads(view[pos + 8 : header_end])
            if header.__class__ is not dict or not header.keys() <= _TOP_KEYS:
                stop = STOP_SLOW
                break
            code = header.get("code")
            flag_field = header.get("flag", 0)
            opaque = header.get("opaque", 0)
            version_field = header.get("version", 0)
            ext = header.get("extFields")
            if (
                code.__class__ is not int
                or code not in _SEND_CODES
                or flag_field.__class__ is not int
                or flag_field != 0
                or opaque.__class__ is not int
                or not _INT32_MIN <= opaque <= _INT32_MAX
                or version_field.__class__ is not int
                or not _INT32_MIN <= version_field <= _INT32_MAX
                or header.get("language", "").__class__ is not str
                or header.get("serializeTypeCurrentRPC", "").__class__ is not str
                or header.get("remark", "").__class__ not in (str, type(None))
                or ext.__class__ is not dict
            ):
                stop = STOP_SLOW
                break
            plain = True
            for value in ext.values():
                # Strings, and integers where RocketMQ's C++ client writes numbers (the decoder reads them as their
                # decimal text); other values (nulls, floats, booleans) are the decoder's to convert or drop.
                if value.__class__ is not str and value.__class__ is not int:
                    plain = False
                    break
            if not plain:
                stop = STOP_SLOW
                break
            get = ext.get
            (k_topic, k_queue, k_sys, k_born, k_flag, k_reconsume, k_nums, k_max_reconsume, k_batch, k_props) = (
                _V2_KEYS if "b" in ext and "topic" not in ext else _LONG_KEYS
            )
            topic = get(k_topic)
            entry = topics.get(topic) if topic.__class__ is str else None
            if entry is None:
                if topic.__class__ is str:
                    try:
                        ctx.missing_topic = topic.encode()
                    except UnicodeEncodeError:
                        pass
                stop = STOP_SLOW
                break
            # The integer fields: mostly small numbers (a dict lookup); the rest is parsed strictly.
            queue_id = _num(get(k_queue), -1)
            born_ts = _num(get(k_born), 0)
            sys_flag = _num(get(k_sys), 0)
            flag = _num(get(k_flag), 0)
            reconsume = _num(get(k_reconsume), 0)
            nums_ok = _num(get(k_nums), 0) is not None and _num(get(k_max_reconsume), 0) is not None
            props_text = get(k_props, "")
            if (
                queue_id is None
                or sys_flag not in _PLAIN_SYS_FLAGS
                or born_ts is None
                or flag is None
                or not _INT32_MIN <= flag <= _INT32_MAX
                or reconsume is None
                or not _INT32_MIN <= reconsume <= _INT32_MAX
                or not nums_ok
                or props_text.__class__ is not str
                or get(k_batch, "") not in _NOT_BATCH
            ):
                stop = STOP_SLOW
                break
            try:
                props = props_text.encode()
            except UnicodeEncodeError:
                stop = STOP_SLOW
                break
            tags = keys = uniq = None
            if props:
                if len(props) > MAX_PROPERTIES_BYTES or props[-1] != 2:
                    stop = STOP_SLOW
                    break
                pairs: dict[bytes, bytes] = {}
                malformed = False
                for item in props[:-1].split(b"\x02"):
                    key, sep, val = item.partition(b"\x01")
                    if not sep or not key or b"\x01" in val or key in pairs:  # an empty item too: no separator
                        malformed = True
                        break
                    pairs[key] = val
                if malformed or not pairs.keys().isdisjoint(_SLOW_KEYS):
                    stop = STOP_SLOW
                    break
                tags = pairs.get(_TAGS)
                keys = pairs.get(_KEYS)
                uniq = pairs.get(_UNIQ)
            body_len = end - header_end
            prefix = entry.prefix
            total = record_size(body_len, len(prefix) - 1, len(props))
            queues = entry.queues
            if (
                not 0 < body_len <= max_body
                or total + BLANK_MIN_BYTES > room
                or not may_append
                or queue_id >= len(queues)
            ):
                stop = STOP_SLOW
                break
            if queue_id < 0:
                rr += 1
                queue_id = rr % max(entry.write_queues, 1)
            queue = queues[queue_id] or entry.make_queue(queue_id)
            qoff = queue.max_offset
            phy = wrote
            pack_record_into(log_buf, total, queue_id, flag, qoff, phy, sys_flag, born_ts or now, born_host, now,
                             store_host, reconsume, view[header_end:end], prefix, props)  # fmt: skip
            wrote += total
            room -= total
            queue.append(phy, total, tags_code(tags.decode()) if tags else 0)
            if queue is not last_queue:
                touched.append(queue)
                last_queue = queue
            if index_entries is not None:
                if keys:
                    for key in keys.split(b" "):
                        if key:
                            index_entries.append((f"{entry.topic}#{key.decode()}", phy))
                if uniq:
                    index_entries.append((f"{entry.topic}#{uniq.decode()}", phy))
            reply = REPLY_TEMPLATE % (id_prefix, phy, queue_id, qoff, opaque, version)
            out += _pack_pair(4 + len(reply), len(reply))
            out += reply
            count += 1
            pos = end
            if len(log_buf) >= commit_limit:
                stop = STOP_COMMIT
                break
    ctx.log_wrote = wrote
    ctx.log_room = room
    ctx.rr = rr
    ctx.count = count
    ctx.stop = stop
    return pos
