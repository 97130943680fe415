"""The client's response fast path (orjson) decodes exactly what ``decode_frame`` decodes, or leaves the frame to it."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krocket.common.codes import FLAG_RESPONSE
from krocket.common.remoting.command import (
    SERIALIZE_ROCKETMQ,
    FrameDecoder,
    RemotingCommand,
    encode,
)
from krocket.common.remoting.response_path import AVAILABLE, decode_responses

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="orjson is not installed: the fast path is off")

INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


def fields(cmd: RemotingCommand) -> tuple[object, ...]:
    return (
        cmd.code,
        cmd.opaque,
        cmd.flag,
        cmd.ext_fields,
        cmd.remark,
        cmd.body,
        cmd.language,
        cmd.version,
        cmd.serialize,
    )


def assert_like_the_decoder(stream: bytes) -> int:
    """The fast path's commands are the decoder's first ones, the same in every field; returns how many it took."""
    consumed, fast = decode_responses(bytearray(stream), 16 * 1024 * 1024)
    expected = FrameDecoder().feed(stream)
    assert [fields(c) for c in fast] == [fields(c) for c in expected[: len(fast)]]
    assert consumed == frames_bytes(stream, len(fast))
    rest = FrameDecoder().feed(stream[consumed:])
    assert [fields(c) for c in fast + rest] == [fields(c) for c in expected]  # nothing lost or decoded twice
    return len(fast)


def frames_bytes(stream: bytes, count: int) -> int:
    """The bytes of the first ``count`` frames of ``stream``."""
    pos = 0
    for _ in range(count):
        pos += 4 + struct.unpack_from(">i", stream, pos)[0]
    return pos


def raw_frame(header: dict[str, object] | bytes, body: bytes = b"", serialize: int = 0) -> bytes:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">ii", 4 + len(head) + len(body), (serialize << 24) | len(head)) + head + body


def test_a_send_reply_is_decoded_here() -> None:
    reply = RemotingCommand(
        0, 77, FLAG_RESPONSE, {"msgId": "7F0000010000", "queueId": "2", "queueOffset": "12"}, None, b"", 0
    )
    assert assert_like_the_decoder(encode(reply)) == 1


def test_what_it_does_not_take_is_left_to_the_decoder() -> None:
    ok = encode(RemotingCommand(0, 1, FLAG_RESPONSE, {"a": "b"}, "fine", b"body", 0))
    left = [
        encode(RemotingCommand(310, 2, 0, {"a": "b"})),  # a request from the peer
        encode(RemotingCommand(0, 3, FLAG_RESPONSE, {"a": "b"}, serialize=SERIALIZE_ROCKETMQ)),  # binary header
        raw_frame({"code": 0, "flag": 1, "opaque": 4, "extFields": {"n": 5, "t": True, "z": None}}),  # non-strings
        raw_frame({"code": 0, "flag": 1, "opaque": 5, "language": "KLINGON"}),  # unknown language: OTHER there
        raw_frame({"code": 0, "flag": 1, "opaque": 6, "language": 3}),  # a numeric language
        raw_frame({"code": "0", "flag": 1, "opaque": 7}),  # a numeric string
        raw_frame({"code": 0, "flag": 1, "opaque": 2**40}),  # out of int32: the decoder's error
        raw_frame(b'{"code":0,"flag":1,"opaque":8,"remark":"\\ud800"}'),  # a lone surrogate orjson refuses
        raw_frame(b'{"code":0,"flag":1,"opaque":9,"remark":"\xff"}'),  # invalid UTF-8, replaced there
        raw_frame({"code": 0, "flag": 1, "opaque": 10, "extFields": []}),  # falsy, read as {} there
    ]
    for frame in left:
        stream = ok + frame + ok
        consumed, fast = decode_responses(bytearray(stream), 16 * 1024 * 1024)
        assert consumed == len(ok) and len(fast) == 1, frame
        try:
            assert_like_the_decoder(stream)
        except Exception as exc:  # the decoder refuses it: the fast path took only the frame before
            assert type(exc).__name__ == "FrameError", exc


def test_an_incomplete_frame_waits() -> None:
    frame = encode(RemotingCommand(0, 1, FLAG_RESPONSE, {"k": "v"}, None, b"xyz", 0))
    for cut in (0, 3, 7, len(frame) - 1):
        consumed, fast = decode_responses(bytearray(frame[:cut]), 16 * 1024 * 1024)
        assert (consumed, fast) == (0, [])
    consumed, fast = decode_responses(bytearray(frame + frame[:5]), 16 * 1024 * 1024)
    assert consumed == len(frame) and len(fast) == 1
    assert decode_responses(bytearray(frame), len(frame) - 5) == (0, [])  # over the frame limit: the decoder's error


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            INT32,
            INT32,
            st.integers(0, 7),
            st.dictionaries(TEXT, TEXT, max_size=5),
            st.none() | TEXT,
            st.binary(max_size=40),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_response_stream_decodes_as_the_decoder_decodes_it(
    commands: list[tuple[int, int, int, dict[str, str], str | None, bytes]],
) -> None:
    stream = b"".join(
        encode(RemotingCommand(code, opaque, flag | FLAG_RESPONSE, ext, remark, body, 0))
        for code, opaque, flag, ext, remark, body in commands
    )
    assert assert_like_the_decoder(stream) == len(commands)
