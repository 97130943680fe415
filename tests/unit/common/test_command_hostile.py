"""The frame codec against hostile input: replies always encode, malformed headers are FrameErrors only."""

from __future__ import annotations

import json
import struct
import time

import pytest

from krocket.common.codes import FLAG_RESPONSE
from krocket.common.errors import FrameError
from krocket.common.remoting import SERIALIZE_JSON, SERIALIZE_ROCKETMQ, FrameDecoder, RemotingCommand, decode_frame
from krocket.common.remoting.command import encode, encode_parts


def _json_frame(header: bytes | str, body: bytes = b"", serialize: int = SERIALIZE_JSON) -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack(">i", (serialize << 24) | len(raw)) + raw + body


@pytest.mark.parametrize("serialize", [SERIALIZE_JSON, SERIALIZE_ROCKETMQ])
def test_a_lone_surrogate_in_any_echoed_field_still_encodes(serialize: int) -> None:
    request = RemotingCommand(10, opaque=5, serialize=serialize)
    reply = request.response(1, "bad \ud800 remark", {"topic": "t\udfff", "k\ud83d": "v"})
    frame = encode(reply)
    got = decode_frame(frame[4:])
    assert got.opaque == 5 and got.flag == FLAG_RESPONSE
    if serialize == SERIALIZE_JSON:  # JSON carries the surrogate back as the \\ud800 escape it came in
        assert got.remark == "bad \ud800 remark" and got.ext_fields == {"topic": "t\udfff", "k\ud83d": "v"}
    else:  # the binary form carries the escape as text
        assert got.remark == "bad \\ud800 remark" and got.ext_fields["topic"] == "t\\udfff"


def test_a_surrogate_that_arrived_in_json_round_trips_to_the_peer() -> None:
    raw = '{"code":10,"opaque":3,"remark":"\\ud800","extFields":{"topic":"\\udc00x"}}'
    request = decode_frame(_json_frame(raw))
    assert request.remark == "\ud800" and request.ext_fields == {"topic": "\udc00x"}
    head, _ = encode_parts(request.response(1, request.remark, request.ext_fields))
    header = json.loads(head[8:])
    assert header["remark"] == "\ud800" and header["extFields"] == {"topic": "\udc00x"}


def test_invalid_utf8_is_decoded_with_replacement_characters() -> None:
    raw = b'{"code":10,"opaque":3,"remark":"\xff\xfe","extFields":{"topic":"a\xc3"}}'
    request = decode_frame(_json_frame(raw))
    assert request.remark == "\ufffd\ufffd" and request.ext_fields == {"topic": "a\ufffd"}
    binary = RemotingCommand(10, remark="r", ext_fields={"k": "v"}, serialize=SERIALIZE_ROCKETMQ)
    frame = bytearray(encode(binary))
    frame[frame.index(b"r")] = 0xFF
    assert decode_frame(bytes(frame[4:])).remark == "\ufffd"


HOSTILE_HEADERS = [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"code":1,"extFields":' + '{"a":' * 50_000 + "1" + "}" * 50_001, "nested too deeply"),
    ('{"code":1,"opaque":1e400}', "'opaque' is not an integer"),
    ('{"code":1,"flag":1e400}', "'flag' is not an integer"),
    ('{"code":1,"version":-1e400}', "'version' is not an integer"),
    ('{"code":1,"opaque":NaN}', "'opaque' is not an integer"),
    ('{"code":1e400}', "int32 'code'"),
    ('{"code":true}', "int32 'code'"),
    ('{"code":4294967296}', "int32 'code'"),
    ('{"code":1,"opaque":4294967296}', "'opaque' is outside int32"),
    ('{"code":1,"opaque":"x"}', "'opaque' is not an integer"),
    ('{"code":1,"opaque":[1]}', "'opaque' is not an integer"),
    ('{"code":1,"flag":{"a":1}}', "'flag' is not an integer"),
    ('{"code":1,"language":[1]}', "'language' is not an integer"),
    ('{"code":1,"remark":5}', "'remark' is not a string"),
    ('{"code":1,"extFields":[1]}', "'extFields' is not an object"),
    ('{"code":1,"extFields":{"a":{"b":1}}}', "'a' is not a string or a number"),
    ('{"code":1,"extFields":{"a":[1]}}', "'a' is not a string or a number"),
    ("null", "not an object"),
    ("{", "not valid JSON"),
]


@pytest.mark.parametrize(("header", "message"), HOSTILE_HEADERS)
def test_malformed_json_headers_are_frame_errors(header: str, message: str) -> None:
    with pytest.raises(FrameError, match=message.replace("[", r"\[")):
        decode_frame(_json_frame(header))


def test_lenient_where_java_is_lenient() -> None:
    cmd = decode_frame(_json_frame('{"code":1,"opaque":"12","flag":1.0,"extFields":{"n":3,"b":true,"z":null}}'))
    assert (cmd.opaque, cmd.flag, cmd.ext_fields) == (12, 1, {"n": "3", "b": "true"})


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00",  # shorter than the header length field
        struct.pack(">i", 100) + b"{}",  # header length beyond the frame
        struct.pack(">i", (7 << 24) | 2) + b"{}",  # unknown serialize type
        struct.pack(">i", (1 << 24) | 3) + b"abc",  # binary header too short
        # binary header whose ext field name length runs past the ext fields
        struct.pack(">i", (1 << 24) | 25)
        + struct.pack(">hbhii", 1, 0, 0, 0, 0)
        + struct.pack(">ii", 0, 8)
        + struct.pack(">h", 900)
        + b"abcdef",
    ],
)
def test_malformed_frames_are_frame_errors(frame: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(frame)


def test_a_declared_length_over_the_limit_is_refused_before_buffering_it() -> None:
    decoder = FrameDecoder(max_frame=1024)
    assert decoder.feed(struct.pack(">i", 1000) + b"x" * 10) == []
    assert decoder.pending_bytes == 14  # only what arrived is buffered
    with pytest.raises(FrameError, match="outside 4..1024"):
        FrameDecoder(max_frame=1024).feed(struct.pack(">i", 1025))
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">i", -1))


def test_the_encoder_fast_path_stays_fast() -> None:
    """A plain reply takes no slow path: encoding stays within a few microseconds (generous bound for CI)."""
    reply = RemotingCommand(0, 7, FLAG_RESPONSE, {"msgId": "A" * 32, "queueId": "1", "queueOffset": "123"})
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        encode_parts(reply)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    assert per_call_us < 50, per_call_us
