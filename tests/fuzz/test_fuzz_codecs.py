"""Bounded fuzz runs (hypothesis) of the codecs a peer's bytes reach: each raises only its own clean error.

The default run takes seconds; ``-m fuzz`` runs the same properties with many more examples.
"""

from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from krocket.common.batch import decode_batch, encode_batch
from krocket.common.errors import FrameError
from krocket.common.message import decode_properties, encode_properties
from krocket.common.record import RecordError, decode_records, encode_record, record_layout
from krocket.common.remoting import FrameDecoder, RemotingCommand, decode_frame, encode

from .mutations import MUTATIONS, broker_frames, namesrv_frames

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASES = namesrv_frames() + broker_frames()


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _frame_decoder_property(seed: int, count: int, cuts: list[int]) -> None:
    """Mutated frames, fed in arbitrary chunks: commands come out, or a FrameError, nothing else; the same
    frames fed whole or chunked decode to the same commands."""
    rng = random.Random(seed)
    stream = b"".join(
        MUTATIONS[rng.randrange(len(MUTATIONS))](rng, encode(BASES[rng.randrange(len(BASES))])) for _ in range(count)
    )
    whole: list[RemotingCommand] = []
    try:
        whole = FrameDecoder().feed(stream)
    except FrameError:
        whole = []
    chunked: list[RemotingCommand] = []
    decoder = FrameDecoder()
    try:
        for chunk in _chunks(stream, cuts):
            chunked += decoder.feed(chunk)
    except FrameError:
        return
    assert [(c.code, c.opaque, c.ext_fields, c.body) for c in chunked] == [
        (c.code, c.opaque, c.ext_fields, c.body) for c in whole
    ]
    for cmd in chunked:  # whatever decodes, a reply to it encodes
        encode(cmd.response(0, cmd.remark, cmd.ext_fields, cmd.body))


def _header_property(serialize: int, header: bytes, body: bytes) -> None:
    frame = struct.pack(">I", (serialize << 24) | len(header)) + header + body
    try:
        cmd = decode_frame(frame)
    except FrameError:
        return
    encode(cmd.response(0, cmd.remark, cmd.ext_fields))
    encode(cmd)


@QUICK
@given(st.integers(0, 2**32), st.integers(1, 6), st.lists(st.integers(0, 2**20), max_size=8))
def test_frame_decoder_with_arbitrary_chunking(seed: int, count: int, cuts: list[int]) -> None:
    _frame_decoder_property(seed, count, cuts)


@QUICK
@given(st.sampled_from([0, 1, 2, 255]), st.binary(max_size=300), st.binary(max_size=50))
def test_header_decoder_on_random_bytes(serialize: int, header: bytes, body: bytes) -> None:
    _header_property(serialize, header, body)


JSON_HEADERS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["code", "opaque", "flag", "version", "language", "remark", "extFields"])


@QUICK
@given(st.dictionaries(FIELDS, JSON_HEADERS, max_size=7), st.booleans())
def test_header_decoder_on_json_of_any_shape(fields: dict[str, object], ascii_only: bool) -> None:
    text = json.dumps(fields, ensure_ascii=ascii_only, allow_nan=True)
    _header_property(0, text.encode("utf-8", "surrogatepass"), b"")


def _record_property(data: bytes) -> None:
    try:
        decode_records(data)
    except RecordError:
        pass
    for pos in range(0, min(len(data), 64), 7):
        try:
            record_layout(data, pos)
        except RecordError:
            pass


_VALID_RECORDS = encode_record(topic=b"T", body=b"hello", properties=encode_properties({"TAGS": "a"})) + encode_record(
    topic=b"Topic", body=b"\x78\x9c", sys_flag=1, queue_offset=1
)


@QUICK
@given(st.binary(max_size=400), st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6))
def test_record_decoders_on_random_and_mutated_bytes(data: bytes, flips: list[tuple[int, int]]) -> None:
    valid = bytearray(_VALID_RECORDS)
    for at, value in flips:
        valid[at % len(valid)] = value
    _record_property(data)
    _record_property(bytes(valid))


@QUICK
@given(st.binary(max_size=400), st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), max_size=6))
def test_batch_decoder_on_random_and_mutated_bytes(data: bytes, flips: list[tuple[int, int]]) -> None:
    valid = bytearray(encode_batch([(b"body", {"KEYS": "k"}, 0), (b"two", {}, 1)]))
    for at, value in flips:
        valid[at % len(valid)] = value
    for candidate in (data, bytes(valid)):
        try:
            decode_batch(candidate)
        except RecordError:
            pass


@QUICK
@given(st.binary(max_size=300) | st.text(max_size=100))
def test_properties_decoder_on_anything(raw: bytes | str) -> None:
    props = decode_properties(raw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())


@pytest.mark.fuzz
@LONG
@given(st.integers(0, 2**32), st.integers(1, 12), st.lists(st.integers(0, 2**20), max_size=16))
def test_long_frame_decoder_run(seed: int, count: int, cuts: list[int]) -> None:
    _frame_decoder_property(seed, count, cuts)


@pytest.mark.fuzz
@LONG
@given(st.sampled_from([0, 1, 2, 255]), st.binary(max_size=2000), st.binary(max_size=50))
def test_long_header_decoder_run(serialize: int, header: bytes, body: bytes) -> None:
    _header_property(serialize, header, body)


@pytest.mark.fuzz
@LONG
@given(st.binary(max_size=4000))
def test_long_record_decoder_run(data: bytes) -> None:
    _record_property(data)
