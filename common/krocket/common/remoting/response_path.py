"""Client side: responses decoded straight from the receive buffer with orjson (the per-read ``fast_path`` hook of
``Connection``), when orjson is installed.

A client reads mostly responses (a send's answer is a small JSON header). ``serve_responses`` walks the whole
frames at the front of the buffer, decodes each response header with ``orjson.loads`` (about a third of the stdlib
decode) and hands the command to its waiter. It takes only what it decodes exactly as ``decode_frame`` would: a JSON
header that is an object with an int32 ``code``, ``opaque``, ``flag`` (the response bit set) and ``version``, string
``extFields`` values, a string or absent ``remark``, a known or absent ``language``. Anything else (a request from
the broker, the binary header, a value orjson or these checks refuse) ends the walk and is left to ``FrameDecoder``,
which decodes it and the frames after it the usual way, so the result never depends on which path ran.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from krocket.common.codes import FLAG_RESPONSE
from krocket.common.remoting.command import (
    _LANGUAGE_CODE_BY_NAME,
    SERIALIZE_JSON,
    RemotingCommand,
)

if TYPE_CHECKING:
    from krocket.common.remoting.transport import Connection

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None  # type: ignore[assignment]

_FRAME_PREFIX = struct.Struct(">ii")
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

AVAILABLE = orjson is not None


def serve_responses(conn: Connection, buf: bytearray) -> int:
    """Resolve the whole response frames at the front of ``buf``; returns the bytes they took."""
    consumed, responses = decode_responses(buf, conn.max_frame)
    for response in responses:
        conn.resolve(response)
    return consumed


def decode_responses(buf: bytearray | bytes, max_frame: int) -> tuple[int, list[RemotingCommand]]:
    """The response frames at the front of ``buf`` that decode here (see the module's doc), and their bytes."""
    assert orjson is not None
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    pos = 0
    n = len(buf)
    responses: list[RemotingCommand] = []
    with memoryview(buf) as view:
        while n - pos >= 8:
            length, marker = _FRAME_PREFIX.unpack_from(buf, pos)
            if length < 4 or length > max_frame or n - pos - 4 < length or marker >> 24 != SERIALIZE_JSON:
                break
            header_len = marker & 0xFFFFFF
            if header_len > length - 4:
                break
            start = pos + 8
            try:
                obj = loads(bytes(view[start : start + header_len]))  # from bytes: twice as fast as a view
            except decode_error:
                break
            if obj.__class__ is not dict:
                break
            get = obj.get
            code = get("code")
            flag = get("flag", 0)
            opaque = get("opaque", 0)
            version = get("version", 0)
            if not (
                code.__class__ is int
                and flag.__class__ is int
                and opaque.__class__ is int
                and version.__class__ is int
                and flag & FLAG_RESPONSE
                and _INT32_MIN <= code <= _INT32_MAX
                and _INT32_MIN <= flag <= _INT32_MAX
                and _INT32_MIN <= opaque <= _INT32_MAX
                and _INT32_MIN <= version <= _INT32_MAX
            ):
                break
            ext = get("extFields")
            if ext is None:
                ext = {}
            elif ext.__class__ is not dict or not all([value.__class__ is str for value in ext.values()]):
                break
            remark = get("remark")
            if remark is not None and remark.__class__ is not str:
                break
            language_name = get("language", "JAVA")
            language = _LANGUAGE_CODE_BY_NAME.get(language_name) if language_name.__class__ is str else None
            if language is None:
                break
            end = pos + 4 + length
            body = bytes(view[start + header_len : end])
            responses.append(RemotingCommand(code, opaque, flag, ext, remark, body, language, version, SERIALIZE_JSON))
            pos = end
    return pos, responses
