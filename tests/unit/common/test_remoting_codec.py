import json
import struct

import pytest

from krocket.common.codes import FLAG_RESPONSE, LanguageCode
from krocket.common.errors import FrameError
from krocket.common.remoting import (
    SERIALIZE_ROCKETMQ,
    FrameDecoder,
    RemotingCommand,
    decode_frame,
    encode,
    header_fields,
)


def test_json_frame_round_trip_keeps_every_field():
    cmd = RemotingCommand(310, opaque=7, flag=0, ext_fields={"b": "TopicA", "e": "3"}, remark="hi", body=b"\x00body")
    frame = encode(cmd)
    (length,) = struct.unpack(">i", frame[:4])
    assert length == len(frame) - 4
    got = decode_frame(frame[4:])
    assert (got.code, got.opaque, got.flag, got.ext_fields, got.remark, got.body) == (
        310,
        7,
        0,
        {"b": "TopicA", "e": "3"},
        "hi",
        b"\x00body",
    )


def test_json_header_is_rocketmq_shaped():
    frame = encode(RemotingCommand(105, opaque=1, ext_fields={"topic": "T"}))
    header_len = struct.unpack(">i", frame[4:8])[0] & 0xFFFFFF
    header = json.loads(frame[8 : 8 + header_len])
    assert header["code"] == 105 and header["language"] == "PYTHON" and header["extFields"] == {"topic": "T"}
    assert header["serializeTypeCurrentRPC"] == "JSON"


def test_binary_header_round_trip_and_response_keeps_serialization():
    cmd = RemotingCommand(
        11,
        opaque=99,
        ext_fields={"topic": "T", "queueId": "1"},
        remark="r",
        body=b"x",
        language=LanguageCode.JAVA,
        serialize=SERIALIZE_ROCKETMQ,
    )
    got = decode_frame(encode(cmd)[4:])
    assert got.serialize == SERIALIZE_ROCKETMQ
    assert (got.code, got.opaque, got.ext_fields, got.remark, got.body) == (11, 99, cmd.ext_fields, "r", b"x")
    resp = got.response(0, None, {"offset": 5})
    assert resp.serialize == SERIALIZE_ROCKETMQ and resp.flag & FLAG_RESPONSE and resp.ext_fields == {"offset": "5"}
    assert decode_frame(encode(resp)[4:]).ext_fields == {"offset": "5"}


def test_decoder_splits_partial_and_coalesced_frames():
    frames = b"".join(encode(RemotingCommand(34, opaque=i, body=b"b" * i)) for i in range(5))
    decoder = FrameDecoder()
    got = []
    for i in range(0, len(frames), 7):
        got += decoder.feed(frames[i : i + 7])
    assert [c.opaque for c in got] == list(range(5))
    assert [len(c.body) for c in got] == list(range(5))


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">i", 17 * 1024 * 1024) + b"xxxx",  # over the 16 MiB limit
        struct.pack(">i", 2) + b"xx",  # shorter than the header length field
        struct.pack(">ii", 8, 100) + b"{}{}",  # header length past the frame
        struct.pack(">ii", 6, 2) + b"{}",  # JSON without a code
        struct.pack(">ii", 7, 3) + b"{x}",  # not JSON
        struct.pack(">ii", 6, (7 << 24) | 2) + b"{}",  # unknown serialization type
    ],
)
def test_malformed_frames_raise_frame_error(frame):
    with pytest.raises(FrameError):
        FrameDecoder().feed(frame)


def test_header_fields_are_strings_and_drop_none():
    assert header_fields({"a": 1, "b": True, "c": None, "d": "x"}) == {"a": "1", "b": "true", "d": "x"}
