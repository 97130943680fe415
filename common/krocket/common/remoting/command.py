"""The remoting command and its frame codec (RocketMQ's ``RemotingCommand``).

Frame: ``length:i32 | serType<<24 | headerLen:i32 | header | body`` with ``length = 4 + headerLen +
bodyLen``. The header is JSON (serType 0) or RocketMQ's binary form (serType 1); a response is sent in the
serialization of its request.

Hostile input: decoding raises ``FrameError`` for anything malformed (bad lengths, wrong types, integers
outside int32, deep JSON nesting) and never another exception; invalid UTF-8 is decoded with replacement
characters as Java does. Encoding never fails on text: a lone surrogate (which JSON may carry as ``\\ud800``)
is written as a ``\\uXXXX`` escape, taken only on the slow path after the plain UTF-8 encode failed.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from krocket.common.codes import FLAG_ONEWAY, FLAG_RESPONSE, KROCKET_VERSION, LanguageCode
from krocket.common.errors import FrameError

MAX_FRAME_BYTES = 16 * 1024 * 1024
SERIALIZE_JSON = 0
SERIALIZE_ROCKETMQ = 1

_INT = struct.Struct(">i")
_FRAME_PREFIX = struct.Struct(">ii")
_BINARY_FIXED = struct.Struct(">hbhii")

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

_LANGUAGE_CODE_BY_NAME = {lang.name: int(lang) for lang in LanguageCode}
_LANGUAGE_OTHER = int(LanguageCode.OTHER)
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_decode = json.JSONDecoder().decode


class RemotingCommand:
    """One request or response. ``ext_fields`` values are always strings on the wire."""

    __slots__ = ("code", "opaque", "flag", "ext_fields", "remark", "body", "language", "version", "serialize")

    def __init__(
        self,
        code: int,
        opaque: int = 0,
        flag: int = 0,
        ext_fields: dict[str, str] | None = None,
        remark: str | None = None,
        body: bytes = b"",
        language: int = LanguageCode.PYTHON,
        version: int = KROCKET_VERSION,
        serialize: int = SERIALIZE_JSON,
    ) -> None:
        self.code = code
        self.opaque = opaque
        self.flag = flag
        self.ext_fields = ext_fields if ext_fields is not None else {}
        self.remark = remark
        self.body = body
        self.language = language
        self.version = version
        self.serialize = serialize

    @property
    def is_response(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & FLAG_ONEWAY)

    def response(
        self, code: int, remark: str | None = None, ext_fields: dict[str, Any] | None = None, body: bytes = b""
    ) -> RemotingCommand:
        """A response to this request, in the request's serialization."""
        fields = header_fields(ext_fields) if ext_fields else {}
        return RemotingCommand(
            code, self.opaque, FLAG_RESPONSE, fields, remark, body, LanguageCode.JAVA, KROCKET_VERSION, self.serialize
        )

    def __repr__(self) -> str:
        kind = "response" if self.is_response else "request"
        return (
            f"RemotingCommand({kind} code={self.code} opaque={self.opaque} flag={self.flag} "
            f"ext={self.ext_fields} remark={self.remark!r} body={len(self.body)}B)"
        )


class EncodedResponse(RemotingCommand):
    """A response whose frame head (length prefix and header, exactly what ``encode_parts`` would make of its
    fields) was formatted from a template when it was built: ``encode_parts`` sends ``head`` as it is while
    ``opaque`` is still ``head_opaque``. Its fields say the same, for whoever reads the reply; do not change
    them (the opaque aside: another one makes ``encode_parts`` encode the fields again)."""

    __slots__ = ("head", "head_opaque")

    head: bytes
    head_opaque: int


def _as_wire_str(value: Any) -> str:
    if value.__class__ is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def header_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Flatten a custom header to the wire form: every value a string, ``None`` dropped."""
    return {k: _as_wire_str(v) for k, v in fields.items() if v is not None}


def encode_header(cmd: RemotingCommand) -> bytes:
    if cmd.serialize == SERIALIZE_ROCKETMQ:
        return _encode_binary_header(cmd)
    try:
        language = LanguageCode(cmd.language).name
    except ValueError:
        language = "OTHER"
    header: dict[str, Any] = {
        "code": cmd.code,
        "extFields": cmd.ext_fields,
        "flag": cmd.flag,
        "language": language,
        "opaque": cmd.opaque,
        "serializeTypeCurrentRPC": "JSON",
        "version": cmd.version,
    }
    if cmd.remark is not None:
        header["remark"] = cmd.remark
    text = _json_encode(header)
    try:  # inline, not utf8(): this is every reply's hot path
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate, which strict UTF-8 cannot encode, becomes a ``\\uXXXX`` escape
    (valid inside a JSON string, readable in a remark). The escape is the slow path, taken on failure only."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def _text(raw: bytes) -> str:
    """Decode UTF-8 the way Java does: invalid bytes become U+FFFD instead of failing."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def encode(cmd: RemotingCommand) -> bytes:
    """The whole frame of ``cmd``, length prefix included."""
    header = encode_header(cmd)
    body = cmd.body
    return b"".join(
        (_FRAME_PREFIX.pack(4 + len(header) + len(body), (cmd.serialize << 24) | len(header)), header, body)
    )


def encode_parts(cmd: RemotingCommand) -> tuple[bytes, bytes]:
    """The frame as (prefix + header, body), so a large body can be written without copying it."""
    if type(cmd) is EncodedResponse and cmd.opaque == cmd.head_opaque:
        return cmd.head, cmd.body
    header = encode_header(cmd)
    prefix = _FRAME_PREFIX.pack(4 + len(header) + len(cmd.body), (cmd.serialize << 24) | len(header))
    return prefix + header, cmd.body


def _encode_binary_header(cmd: RemotingCommand) -> bytes:
    parts = [_BINARY_FIXED.pack(cmd.code, cmd.language, cmd.version, cmd.opaque, cmd.flag)]
    remark = utf8(cmd.remark or "")
    parts.append(_INT.pack(len(remark)))
    parts.append(remark)
    ext = bytearray()
    for key, value in cmd.ext_fields.items():
        k = utf8(key)
        v = utf8(str(value))
        ext += struct.pack(">h", len(k)) + k + _INT.pack(len(v)) + v
    parts.append(_INT.pack(len(ext)))
    parts.append(bytes(ext))
    return b"".join(parts)


def decode_frame(frame: bytes | memoryview) -> RemotingCommand:
    """Decode one frame without its 4-byte length prefix. Raises ``FrameError`` when malformed."""
    if len(frame) < 4:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than its header length field")
    (marker,) = _INT.unpack_from(frame, 0)
    serialize = (marker >> 24) & 0xFF
    header_len = marker & 0xFFFFFF
    if header_len > len(frame) - 4:
        raise FrameError(f"header length {header_len} exceeds frame of {len(frame)} bytes")
    header = bytes(frame[4 : 4 + header_len])
    body = bytes(frame[4 + header_len :])
    if serialize == SERIALIZE_JSON:
        cmd = _decode_json_header(header)
    elif serialize == SERIALIZE_ROCKETMQ:
        cmd = _decode_binary_header(header)
    else:
        raise FrameError(f"unknown serialize type {serialize}")
    cmd.body = body
    return cmd


def _decode_json_header(header: bytes) -> RemotingCommand:
    try:
        try:
            text = header.decode()
        except UnicodeDecodeError:
            text = header.decode("utf-8", "replace")
        obj = _json_decode(text)
    except ValueError as exc:
        raise FrameError(f"header is not valid JSON: {exc}") from None
    except RecursionError:
        raise FrameError("header JSON is nested too deeply") from None
    if obj.__class__ is not dict:
        raise FrameError("JSON header is not an object")
    code = obj.get("code")
    if code.__class__ is not int or not _INT32_MIN <= code <= _INT32_MAX:
        raise FrameError("JSON header lacks an int32 'code'")
    ext = obj.get("extFields") or {}
    if ext.__class__ is not dict:
        raise FrameError("JSON header 'extFields' is not an object")
    for value in ext.values():  # values are strings on the wire; convert only when a peer sent others
        if value.__class__ is not str:
            ext = _wire_ext(ext)
            break
    remark = obj.get("remark")
    if remark is not None and remark.__class__ is not str:
        raise FrameError("JSON header 'remark' is not a string")
    language = obj.get("language", "JAVA")
    if language.__class__ is str:
        lang = _LANGUAGE_CODE_BY_NAME.get(language, _LANGUAGE_OTHER)
    else:
        lang = _header_int(obj, "language", 0)
    opaque = obj.get("opaque", 0)
    flag = obj.get("flag", 0)
    version = obj.get("version", 0)
    if not (  # the fast path: three int32s, as every real client sends them
        opaque.__class__ is int
        and flag.__class__ is int
        and version.__class__ is int
        and _INT32_MIN <= opaque <= _INT32_MAX
        and _INT32_MIN <= flag <= _INT32_MAX
        and _INT32_MIN <= version <= _INT32_MAX
    ):
        opaque, flag, version = (_header_int(obj, name, 0) for name in ("opaque", "flag", "version"))
    return RemotingCommand(code, opaque, flag, ext, remark, b"", lang, version, SERIALIZE_JSON)


def _header_int(obj: dict[str, Any], name: str, default: int) -> int:
    """An int32 field of a JSON header; a numeric string or an integral float is accepted as Java's
    parsers accept them, anything else (``1e400``, ``true``, a list, out of range) is a ``FrameError``."""
    value = obj.get(name, default)
    if value.__class__ is not int:
        value = _coerce_int(value)
        if value is None:
            raise FrameError(f"JSON header {name!r} is not an integer: {_clip(repr(obj.get(name)))}")
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise FrameError(f"JSON header {name!r} is outside int32: {_clip(str(value))}")
    return int(value)


def _coerce_int(value: Any) -> int | None:
    if value.__class__ is str and len(value) <= 12:
        try:
            return int(value)
        except ValueError:
            return None
    if value.__class__ is float and value.is_integer():  # inf and nan are not integral
        return int(value)
    return None


def _wire_ext(ext: dict[str, Any]) -> dict[str, str]:
    """extFields with every value a string: numbers and booleans as their wire text, ``null`` dropped (Java
    reads it as absent); an object or a list is a ``FrameError``."""
    out: dict[str, str] = {}
    for key, value in ext.items():
        if value.__class__ is str:
            out[key] = value
        elif value.__class__ in (int, float, bool):
            out[key] = _as_wire_str(value)
        elif value is not None:
            raise FrameError(f"JSON header field {_clip(key)!r} is not a string or a number")
    return out


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _decode_binary_header(header: bytes) -> RemotingCommand:
    try:
        code, language, version, opaque, flag = _BINARY_FIXED.unpack_from(header, 0)
        pos = _BINARY_FIXED.size
        (remark_len,) = _INT.unpack_from(header, pos)
        pos += 4
        if remark_len < 0 or pos + remark_len > len(header):
            raise FrameError("binary header remark runs past the header")
        remark = _text(header[pos : pos + remark_len]) if remark_len else None
        pos += remark_len
        (ext_len,) = _INT.unpack_from(header, pos)
        pos += 4
        end = pos + ext_len
        if ext_len < 0 or end > len(header):
            raise FrameError("binary header extFields run past the header")
        ext: dict[str, str] = {}
        while pos < end:
            (key_len,) = struct.unpack_from(">h", header, pos)
            pos += 2
            if key_len < 0 or pos + key_len > end:
                raise FrameError("binary header field name runs past extFields")
            key = _text(header[pos : pos + key_len])
            pos += key_len
            (val_len,) = _INT.unpack_from(header, pos)
            pos += 4
            if key_len < 0 or val_len < 0 or pos + val_len > end:
                raise FrameError("binary header field runs past extFields")
            ext[key] = _text(header[pos : pos + val_len])
            pos += val_len
    except struct.error as exc:
        raise FrameError(f"binary header is malformed: {exc}") from None
    return RemotingCommand(code, opaque, flag, ext, remark, b"", language, version, SERIALIZE_ROCKETMQ)


class FrameDecoder:
    """Incremental frame splitter: feed bytes, get whole commands. Enforces the frame size limit: a declared
    length over ``max_frame`` is a ``FrameError`` before any of that frame is buffered."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held until the rest arrives (only what arrived: never the declared size)."""
        return len(self._buf)

    @property
    def buffer(self) -> bytearray:
        """The bytes held for the next ``feed``: a per-read fast path (``Connection``'s ``fast_path``) appends the
        read to it, serves whole frames from its front in place and deletes them, and ``feed(b"")`` decodes the
        rest."""
        return self._buf

    def next_command(self) -> RemotingCommand | None:
        """Decode the one whole frame at the front of the buffer and drop it; None while it is incomplete."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _INT.unpack_from(buf, 0)
        if length < 4 or length > self.max_frame:
            raise FrameError(f"frame length {length} is outside 4..{self.max_frame}")
        if len(buf) - 4 < length:
            return None
        with memoryview(buf) as view:
            cmd = decode_frame(view[4 : 4 + length])
        del buf[: 4 + length]
        return cmd

    def feed(self, data: bytes) -> list[RemotingCommand]:
        buf = self._buf
        buf += data
        out: list[RemotingCommand] = []
        pos = 0
        n = len(buf)
        with memoryview(buf) as view:
            while n - pos >= 4:
                (length,) = _INT.unpack_from(buf, pos)
                if length < 4 or length > self.max_frame:
                    raise FrameError(f"frame length {length} is outside 4..{self.max_frame}")
                if n - pos - 4 < length:
                    break
                start = pos + 4
                out.append(decode_frame(view[start : start + length]))
                pos = start + length
        if pos:
            del buf[:pos]
        return out
