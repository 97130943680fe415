"""Pre-encoded SEND_MESSAGE_V2 (and SEND_BATCH_MESSAGE) frames: the JSON header as a bytes template per
(producer group, topic, batch) in which only what changes per message is formatted in.

The template is derived from ``encode_header`` itself (a header encoded with marker values, the markers then
turned into ``%d``/``%s`` slots), so a frame built here is byte for byte what the ``RemotingCommand`` path
sends for the same values: same keys, same order, same escaping. The properties are escaped with the C JSON
string encoder the codec's encoder uses (``\\u0001``/``\\u0002``, quotes, backslashes; non-ASCII as UTF-8).
"""

from __future__ import annotations

import struct
from json.encoder import encode_basestring

from krocket.common.codes import RequestCode
from krocket.common.headers import SendMessageHeader
from krocket.common.message import PROPERTY_UNIQ_KEY, PROPERTY_WAIT
from krocket.common.remoting.command import RemotingCommand
from krocket.common.remoting.header_template import header_template
from krocket.common.topic import AUTO_CREATE_TOPIC_KEY

from .selector import DEFAULT_TOPIC_QUEUE_NUMS

_FRAME_PREFIX = struct.Struct(">ii")

# Markers no topic or group name can hold ('@' is not allowed in either), each replaced by a format slot.
_MARK_QUEUE_ID = "@@krocket-e@@"
_MARK_SYS_FLAG = "@@krocket-f@@"
_MARK_BORN = "@@krocket-g@@"
_MARK_FLAG = "@@krocket-h@@"
_MARK_PROPERTIES = "@@krocket-i@@"
_MARK_OPAQUE = 1_987_654_321  # an int in the JSON: replaced together with its key

# The properties of a plain message, "UNIQ_KEY\x01<id>\x02WAIT\x01true\x02", as a JSON literal around the id.
_UNIQ_WAIT_OPEN = f'"{PROPERTY_UNIQ_KEY}\\u0001'.encode()
_UNIQ_WAIT_CLOSE = f'\\u0002{PROPERTY_WAIT}\\u0001true\\u0002"'.encode()


def properties_text(props: dict[str, str]) -> str:
    """The properties as the header's ``i`` value (``name\\x01value\\x02`` pairs, as ``encode_properties``)."""
    return "".join([f"{k}\x01{v}\x02" for k, v in props.items()])


def properties_json(props: dict[str, str]) -> bytes:
    """The header's ``i`` value as a JSON string literal: ``json_string(properties_text(props))``, built by
    concatenation for the usual properties of a plain message (a hex unique id, then WAIT=true)."""
    if len(props) == 2:
        first, uniq = next(iter(props.items()))
        if first == PROPERTY_UNIQ_KEY and props.get(PROPERTY_WAIT) == "true" and uniq.isascii() and uniq.isalnum():
            return _UNIQ_WAIT_OPEN + uniq.encode() + _UNIQ_WAIT_CLOSE
    return json_string(properties_text(props))


def json_string(text: str) -> bytes:
    """``text`` as a JSON string literal in UTF-8, escaped as ``encode_header`` escapes it."""
    literal: str = encode_basestring(text)
    try:
        return literal.encode()
    except UnicodeEncodeError:  # a lone surrogate: as encode_header's fallback writes it
        return literal.encode("utf-8", "backslashreplace")


class SendFrameTemplate:
    """The frame of one send to ``topic`` from ``group`` (a batch when ``batch``), without its body."""

    __slots__ = ("batch", "code", "group", "topic", "_header")

    def __init__(self, group: str, topic: str, batch: bool = False) -> None:
        self.group = group
        self.topic = topic
        self.batch = batch
        self.code = RequestCode.SEND_BATCH_MESSAGE if batch else RequestCode.SEND_MESSAGE_V2
        fields = SendMessageHeader(
            producer_group=group,
            topic=topic,
            default_topic=AUTO_CREATE_TOPIC_KEY,
            default_topic_queue_nums=DEFAULT_TOPIC_QUEUE_NUMS,
            reconsume_times=0,
            unit_mode=False,
            batch=batch,
        ).to_v2_fields()
        fields["e"] = _MARK_QUEUE_ID
        fields["f"] = _MARK_SYS_FLAG
        fields["g"] = _MARK_BORN
        fields["h"] = _MARK_FLAG
        fields["i"] = _MARK_PROPERTIES
        slots = (
            (json_string(_MARK_QUEUE_ID), b'"%d"'),
            (json_string(_MARK_SYS_FLAG), b'"%d"'),
            (json_string(_MARK_BORN), b'"%d"'),
            (json_string(_MARK_FLAG), b'"%d"'),
            (json_string(_MARK_PROPERTIES), b"%s"),
            (b'"opaque":%d' % _MARK_OPAQUE, b'"opaque":%d'),
        )
        # the format arguments of ``head`` are in this order
        raw = header_template(RemotingCommand(self.code, _MARK_OPAQUE, ext_fields=fields), slots, "send header")
        self._header = raw

    def head(
        self,
        opaque: int,
        queue_id: int,
        sys_flag: int,
        born_timestamp: int,
        flag: int,
        properties: bytes,
        body_len: int,
    ) -> bytes:
        """Length prefix and header of the frame (``properties``: ``properties_json`` of the message's); the body
        follows it on the wire."""
        header = self._header % (queue_id, sys_flag, born_timestamp, flag, properties, opaque)
        n = len(header)
        return _FRAME_PREFIX.pack(4 + n + body_len, n) + header
