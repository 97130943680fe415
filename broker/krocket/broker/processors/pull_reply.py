"""The PULL_MESSAGE reply from a template: the JSON header ``encode_header`` makes of a pull response, with its
code, opaque and four integer fields formatted in, so that no reply dict is built and no JSON is encoded per pull.

The template is derived from ``encode_header`` itself (markers in the fields, replaced by ``%d`` slots),
so it holds exactly what the general encoder writes: key order, separators, language, version. It serves JSON
requests and replies without a remark (every pull outcome but a refusal); anything else takes
``RemotingCommand.response``.
"""

from __future__ import annotations

import struct

from krocket.common.codes import FLAG_RESPONSE, KROCKET_VERSION, LanguageCode
from krocket.common.remoting.command import SERIALIZE_JSON, EncodedResponse, RemotingCommand
from krocket.common.remoting.header_template import header_template

_FRAME_PREFIX = struct.Struct(">ii")
_MARK_CODE = 271828182
_MARK_OPAQUE = 314159265
# The reply's ext fields, in the order the general path writes them; each value is a string on the wire.
FIELDS = ("nextBeginOffset", "minOffset", "maxOffset", "suggestWhichBrokerId")
_JAVA = int(LanguageCode.JAVA)


def _header_template() -> bytes:
    marks = {name: f"@@{i}@@" for i, name in enumerate(FIELDS)}
    probe = RemotingCommand(
        _MARK_CODE, _MARK_OPAQUE, FLAG_RESPONSE, dict(marks), None, b"", _JAVA, KROCKET_VERSION, SERIALIZE_JSON
    )
    slots = [(b'"code":%d' % _MARK_CODE, b'"code":%d')]
    slots += [(f'"{marks[name]}"'.encode(), b'"%d"') for name in FIELDS]
    slots.append((b'"opaque":%d' % _MARK_OPAQUE, b'"opaque":%d'))
    return header_template(probe, slots, "pull reply")


_HEADER = _header_template()


def pull_response(
    request: RemotingCommand,
    code: int,
    next_begin_offset: int,
    min_offset: int,
    max_offset: int,
    suggest_broker_id: int,
    body: bytes,
) -> EncodedResponse:
    """The reply to a JSON ``request`` without a remark: its fields, and its frame head from the template."""
    fields = {
        "nextBeginOffset": str(next_begin_offset),
        "minOffset": str(min_offset),
        "maxOffset": str(max_offset),
        "suggestWhichBrokerId": str(suggest_broker_id),
    }
    opaque = request.opaque
    reply = EncodedResponse(code, opaque, FLAG_RESPONSE, fields, None, body, _JAVA, KROCKET_VERSION, SERIALIZE_JSON)
    header = _HEADER % (code, next_begin_offset, min_offset, max_offset, suggest_broker_id, opaque)
    n = len(header)
    reply.head = _FRAME_PREFIX.pack(4 + n + len(body), n) + header
    reply.head_opaque = opaque
    return reply
