"""The C send fast path (``krocket.broker.fastpath._cserve``) against its Python twin, frame by frame.

Both run on their own context over their own real consume queues (tmp directories) with the same frames; they must
leave the same bytes everywhere: consumed offsets, stops, counts, replies, log records, queue entries (pending and
written out), index entries, touched queues, round robin, the missing topic (``tests/fuzz/fastpath_target.py``
compares them). Malformed input is declined with nothing changed; an internal error raises after what was served is
written back. The files through the real broker are compared by ``test_fastpath_golden.py``.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.fastpath import pure
from krocket.broker.fastpath.context import STOP_COMMIT, STOP_END, STOP_SLOW
from krocket.client.send_frames import SendFrameTemplate, properties_json
from krocket.common.codes import RequestCode
from krocket.common.message import PROPERTY_TAGS, PROPERTY_UNIQ_KEY, encode_properties
from krocket.common.record import decode_records
from krocket.common.remoting import RemotingCommand, decode_frame, encode

from tests.fuzz import fastpath_target as target
from tests.fuzz.fastpath_target import Setup, compare, make_twin, random_cases, send_frame

C_SERVE = target.c_serve()
pytestmark = pytest.mark.skipif(C_SERVE is None, reason="the C extension krocket.broker.fastpath._cserve is not built")
ROOT = Path(__file__).resolve().parents[3]


def _frames(count: int, seed: int, **kwargs: Any) -> list[bytes]:
    rng = random.Random(seed)
    return [send_frame(rng, i + 1, **kwargs) for i in range(count)]


def _serve_c(data: bytes, tmp_path: Path, setup: Setup | None = None) -> tuple[int, target.Twin, bytearray]:
    assert C_SERVE is not None
    twin = make_twin(tmp_path, setup or Setup())
    out = bytearray()
    pos = C_SERVE(bytearray(data), twin.ctx, out)
    return pos, twin, out


def _untouched(twin: target.Twin, out: bytearray, rr: int = 0) -> None:
    ctx = twin.ctx
    assert (ctx.count, bytes(ctx.log_buf), bytes(out), ctx.index_entries, ctx.touched) == (0, b"", b"", [], [])
    assert (ctx.log_wrote, ctx.rr) == (4096, rr)
    assert all(q.max_offset == 0 and not q._pending for q in twin.table.queues.values())


# -- equality with the twin ---------------------------------------------------------------------------------
def test_c_matches_the_twin_on_producer_built_sends():
    frames = [f for f in _frames(400, 3) if b"NoSuchTopic" not in f]
    served = compare(b"".join(frames), Setup())
    assert served >= len(frames) // 2  # the rest: queue ids out of range for the smaller topics


def test_c_matches_the_twin_on_the_producers_template_frames():
    """Frames as krocket.client's producer writes them now (SendFrameTemplate: a bytes template per topic)."""
    rng = random.Random(21)
    frames = []
    for i in range(120):
        template = SendFrameTemplate("template-pg", rng.choice(("FastTopic", "Тема-1")))
        props: dict[str, str] = {PROPERTY_UNIQ_KEY: f"0A0000070000{i:020X}", "WAIT": "true"}
        if i % 3 == 0:
            props = {PROPERTY_TAGS: rng.choice(("TagA", "标签")), **props, "KEYS": f"k{i} order-{i % 5}"}
        body = rng.randbytes(rng.choice((1, 100, 1024)))
        frames.append(template.head(i, 0, 0, target.NOW_MS - i, 0, properties_json(props), len(body)) + body)
    assert compare(b"".join(frames), Setup(pending_entries=7)) == 120


@pytest.mark.parametrize("code", [RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_MESSAGE], ids=["v2", "long names"])
def test_c_serves_every_queue_and_round_robin_as_the_twin(code):
    rng = random.Random(5)
    frames = [
        send_frame(rng, i + 1, topic="FastTopic", code=code, queue_id=rng.choice((-1, 0, 1, 2, 3))) for i in range(200)
    ]
    assert compare(b"".join(frames), Setup(rr=2**40 + 3)) == 200


def test_c_matches_the_twin_across_commit_stops_and_queue_write_outs():
    data = b"".join(_frames(300, 4, topic="Wide_Topic", queue_id=-1))
    assert compare(data, Setup(commit_limit=3000, pending_entries=3)) == 300
    assert compare(data, Setup(commit_limit=1, pending_entries=1, index_enabled=False)) == 300


def test_c_matches_the_twin_when_the_segment_runs_out_or_rolls():
    data = b"".join(_frames(50, 6, topic="FastTopic", queue_id=0))
    assert 0 < compare(data, Setup(log_room=20_000)) < 50
    assert compare(data, Setup(roll_at=float(target.NOW_MS))) == 0
    assert compare(data, Setup(roll_at=target.NOW_MS + 1)) == 50


def test_c_matches_the_twin_on_mutated_frames():
    for data, setup in random_cases(seed=2026, count=400):
        compare(data, setup)


def test_c_matches_the_twin_on_reads_cut_anywhere():
    data = b"".join(_frames(6, 8, topic="FastTopic"))
    for cut in range(0, len(data) + 1, 97):
        compare(data[:cut], Setup())


# -- what is served, read back --------------------------------------------------------------------------------
def test_served_records_parse_back_and_replies_are_todays(tmp_path):
    frames = _frames(20, 9, topic="FastTopic", queue_id=1)
    pos, twin, out = _serve_c(b"".join(frames), tmp_path)
    assert (pos, twin.ctx.stop, twin.ctx.count) == (sum(map(len, frames)), STOP_END, 20)
    records = list(decode_records(bytes(twin.ctx.log_buf)))
    assert [r.queue_offset for r in records] == list(range(20))
    assert all(r.queue_id == 1 and r.topic == "FastTopic" and r.store_timestamp == target.NOW_MS for r in records)
    for frame, record in zip(frames, records, strict=True):
        request = decode_frame(frame[4:])
        assert record.body == request.body
        assert zlib.crc32(record.body) & 0x7FFFFFFF == record.body_crc
    replies, at = [], 0
    while at < len(out):
        (length,) = struct.unpack_from(">i", out, at)
        replies.append(decode_frame(bytes(out[at + 4 : at + 4 + length])))
        at += 4 + length
    assert [r.ext_fields["queueOffset"] for r in replies] == [str(i) for i in range(20)]
    assert all(r.code == 0 and r.is_response and r.ext_fields["queueId"] == "1" for r in replies)
    assert replies[0].ext_fields["msgId"] == target.STORE_HOST.hex().upper() + f"{4096:016X}"


def test_crc32_is_zlibs():
    cserve = pytest.importorskip("krocket.broker.fastpath._cserve")
    rng = random.Random(1)
    for n in (0, 1, 7, 8, 9, 63, 64, 1024, 4099):
        data = rng.randbytes(n)
        assert cserve.crc32(data) == zlib.crc32(data)


# -- malformed input is declined, untouched -------------------------------------------------------------------
def _valid_header() -> dict[str, Any]:
    frame = send_frame(random.Random(1), 1, topic="FastTopic", queue_id=0, body=b"x", code=RequestCode.SEND_MESSAGE_V2)
    header = decode_frame(frame[4:])
    return {
        "code": header.code,
        "extFields": dict(header.ext_fields),
        "flag": 0,
        "language": "PYTHON",
        "opaque": 1,
        "serializeTypeCurrentRPC": "JSON",
        "version": 479,
    }


def _raw(header: bytes, body: bytes = b"body") -> bytes:
    return struct.pack(">ii", 4 + len(header) + len(body), len(header)) + header + body


def _with(**changes: Any) -> bytes:
    header = _valid_header()
    for key, value in changes.items():
        if key.startswith("ext_"):
            if value is None:
                header["extFields"].pop(key[4:], None)
            else:
                header["extFields"][key[4:]] = value
        else:
            header[key] = value
    return _raw(json.dumps(header).encode())


MALFORMED = {
    "not json": _raw(b"not json"),
    "empty header": _raw(b""),
    "json array": _raw(b"[1,2]"),
    "trailing comma": _raw(json.dumps(_valid_header()).encode()[:-1] + b",}"),
    "trailing bytes": _raw(json.dumps(_valid_header()).encode() + b"x"),
    "repeated top-level key": _raw(json.dumps(_valid_header()).encode()[:-1] + b',"opaque":2}'),
    "repeated ext key": _raw(json.dumps(_valid_header()).encode().replace(b'"a":', b'"e":"1","a":', 1)),
    "unknown top-level key": _with(extra=1),
    "response flag": _with(flag=1),
    "oneway flag": _with(flag=2),
    "another code": _with(code=320),
    "code as a string": _with(code="310"),
    "code as a float": _raw(json.dumps(_valid_header()).encode().replace(b'"code": 310', b'"code": 310.0')),
    "opaque beyond int32": _with(opaque=2**31),
    "version beyond int32": _with(version=-(2**31) - 1),
    "leading zero": _raw(json.dumps(_valid_header()).encode().replace(b'"opaque": 1', b'"opaque": 01')),
    "language not a string": _with(language=1),
    "remark a number": _with(remark=5),
    "ext not an object": _with(extFields=[1]),
    "ext value null": _raw(b'{"code":310,"extFields":{"b":"FastTopic","e":null}}'),
    "ext value float": _with(ext_e=1.5),
    "ext value huge integer": _with(ext_a=2**64),
    "no topic": _with(ext_b=None),
    "topic not a string": _with(ext_b=7),
    "queue id out of range": _with(ext_e="4"),
    "queue id not a number": _with(ext_e="1x"),
    "queue id with a plus": _with(ext_e="+1"),
    "born timestamp beyond int64": _with(ext_g="9223372036854775808"),
    "integer of 21 characters": _with(ext_g="000000000000000000001"),
    "flag beyond int32": _with(ext_h="2147483648"),
    "reconsume times beyond int32": _with(ext_j="-2147483649"),
    "sys flag compressed": _with(ext_f="1"),
    "sys flag prepared": _with(ext_f="4"),
    "a batch": _with(ext_m="true"),
    "properties a number": _with(ext_i=3),
    "properties without the last separator": _with(ext_i="a\x01b"),
    "a property without a value separator": _with(ext_i="ab\x02"),
    "a property with two value separators": _with(ext_i="a\x01b\x01c\x02"),
    "a property with an empty key": _with(ext_i="\x01b\x02"),
    "a property twice": _with(ext_i="a\x01b\x02a\x01c\x02"),
    "an empty property item": _with(ext_i="a\x01b\x02\x02"),
    "only a separator": _with(ext_i="\x02"),
    "a delay": _with(ext_i="DELAY\x013\x02"),
    "a half message": _with(ext_i="TRAN_MSG\x01true\x02"),
    "a timer": _with(ext_i="TIMER_DELIVER_MS\x011\x02"),
    "properties too long": _with(ext_i="k\x01" + "v" * 32767 + "\x02"),
    "lone high surrogate": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\\ud800', 1)),
    "lone low surrogate": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\\udc00', 1)),
    "bad escape": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\\x', 1)),
    "control character": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\x01', 1)),
    "invalid UTF-8": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\xff', 1)),
    "overlong UTF-8": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\xc0\xaf', 1)),
    "UTF-8 surrogate": _raw(json.dumps(_valid_header()).encode().replace(b'"a": "', b'"a": "\xed\xa0\x80', 1)),
    "truncated UTF-8": _raw(json.dumps(_valid_header()).encode()[:-3] + b'\xe2"}'),
    "unterminated string": _raw(b'{"code":310,"extFields":{"b":"FastTopic'),
    "empty body": _raw(json.dumps(_valid_header()).encode(), b""),
    "body too large": _raw(json.dumps(_valid_header()).encode(), b"x" * 8193),
    "binary serialize type": struct.pack(">ii", 12, (1 << 24) | 4) + b"abcdefgh",
    "header longer than the frame": struct.pack(">ii", 8, 100) + b"abcd",
    "length below 4": struct.pack(">i", 3) + b"abc",
    "negative length": struct.pack(">i", -1) + b"abcd",
    "length beyond max_frame": struct.pack(">i", target.MAX_FRAME + 1) + b"abcd",
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_c_declines_malformed_input_and_changes_nothing(frame, tmp_path):
    pos, twin, out = _serve_c(frame + _frames(1, 1, topic="FastTopic", queue_id=0)[0], tmp_path)
    assert (pos, twin.ctx.stop) == (0, STOP_SLOW)
    _untouched(twin, out)
    assert twin.ctx.missing_topic is None


@pytest.mark.parametrize("repeat", [False, True], ids=["distinct", "one repeated"])
def test_thousands_of_properties_and_ext_fields_are_checked_as_the_twin_checks_them(repeat):
    """Long key lists take the hash-table duplicate check; a repeated key among them still declines."""
    props = "".join(f"k{i}\x01v\x02" for i in range(3000)) + ("k7\x01w\x02" if repeat else "")
    header = _valid_header()
    header["extFields"]["i"] = props
    header["extFields"].update({f"x{i}": "v" for i in range(2000)})
    frame = _raw(json.dumps(header).encode())
    assert compare(frame, Setup()) == (0 if repeat else 1)


def test_an_unknown_topic_is_reported_to_the_glue(tmp_path):
    pos, twin, out = _serve_c(_frames(1, 1, topic="NoSuchTopic")[0], tmp_path)
    assert (pos, twin.ctx.stop, twin.ctx.missing_topic) == (0, STOP_SLOW, b"NoSuchTopic")
    _untouched(twin, out)


def test_incomplete_frames_stop_at_the_end(tmp_path):
    frame = _frames(1, 2, topic="FastTopic", queue_id=0)[0]
    for cut in range(len(frame)):
        pos, twin, out = _serve_c(frame[:cut], tmp_path / str(cut))
        assert (pos, twin.ctx.stop) == (0, STOP_END)
        _untouched(twin, out)


def test_the_commit_limit_stops_after_the_frame_that_reached_it(tmp_path):
    frames = _frames(5, 3, topic="FastTopic", queue_id=2)
    pos, twin, _ = _serve_c(b"".join(frames), tmp_path, Setup(commit_limit=1))
    assert (pos, twin.ctx.stop, twin.ctx.count) == (len(frames[0]), STOP_COMMIT, 1)


# -- the C API side: errors, types, references ----------------------------------------------------------------
def test_a_failing_callback_raises_after_writing_back_what_was_served(tmp_path):
    def fail(tags: str) -> int:
        raise RuntimeError("tags")

    rng = random.Random(1)
    ascii_tags = encode_properties({PROPERTY_TAGS: "TagA", PROPERTY_UNIQ_KEY: "U1"})
    other_tags = encode_properties({PROPERTY_TAGS: "标签", PROPERTY_UNIQ_KEY: "U2"})
    frames = [
        encode(RemotingCommand(310, opaque=i, ext_fields={"b": "FastTopic", "e": "0", "i": p.decode()}, body=b"x"))
        for i, p in enumerate((ascii_tags, other_tags))
    ]
    twin = make_twin(tmp_path, Setup())
    twin.ctx.tags_code = fail
    out = bytearray()
    assert C_SERVE is not None
    with pytest.raises(RuntimeError, match="tags"):
        C_SERVE(bytearray(b"".join(frames)), twin.ctx, out)
    ctx = twin.ctx
    (record,) = decode_records(bytes(ctx.log_buf))
    assert (ctx.count, ctx.log_wrote, record.properties[PROPERTY_UNIQ_KEY]) == (1, 4096 + record.store_size, "U1")
    assert ctx.log_room == (1 << 30) - record.store_size
    queue = twin.table.get("FastTopic", 0)
    assert queue is not None and queue.max_offset == 1 and len(queue._pending) == 20
    assert [key for key, _ in ctx.index_entries] == ["FastTopic#U1"]
    assert decode_frame(bytes(out[4:])).ext_fields["queueOffset"] == "0"
    assert rng is not None


def test_wrong_context_types_raise_type_errors(tmp_path):
    assert C_SERVE is not None
    frame = bytearray(_frames(1, 1, topic="FastTopic", queue_id=0)[0])
    twin = make_twin(tmp_path, Setup())
    with pytest.raises(TypeError):
        C_SERVE(frame, twin.ctx, b"not a bytearray")  # type: ignore[arg-type]
    twin.ctx.log_buf = b""  # type: ignore[assignment]
    with pytest.raises(TypeError):
        C_SERVE(frame, twin.ctx, bytearray())
    with pytest.raises(TypeError):
        C_SERVE(frame, twin.ctx)  # type: ignore[call-arg]


def test_reference_counts_do_not_drift(tmp_path):
    assert C_SERVE is not None
    data = b"".join(_frames(30, 12, topic="FastTopic")) + MALFORMED["repeated ext key"]
    twin = make_twin(tmp_path, Setup(pending_entries=1_000_000))
    ctx = twin.ctx
    entry = ctx.topics[b"FastTopic"]
    watched = [ctx.log_buf, ctx.topics, entry, entry.queues, entry.prefix, ctx.slow_keys, ctx.tags_code, *ctx.topics]
    for _ in range(3):  # warm up: queues created, caches filled
        C_SERVE(bytearray(data), ctx, bytearray())
        ctx.index_entries.clear()
        ctx.touched.clear()
    queues = [q for q in entry.queues if q is not None]
    before = [sys.getrefcount(o) for o in watched + queues]
    for _ in range(200):
        C_SERVE(bytearray(data), ctx, bytearray())
        ctx.index_entries.clear()
        ctx.touched.clear()
    assert [sys.getrefcount(o) for o in watched + queues] == before


def test_the_twin_and_c_agree_with_stdlib_json_headers_too(tmp_path):
    """Headers written by the stdlib encoder with its default separators and ASCII escapes (other clients)."""
    frames = []
    for frame in _frames(40, 13, topic="Тема-1", queue_id=0):
        request = decode_frame(frame[4:])
        header = {"code": request.code, "extFields": request.ext_fields, "opaque": request.opaque, "flag": 0}
        frames.append(_raw(json.dumps(header).encode(), request.body))
    assert compare(b"".join(frames), Setup()) == 40


# -- the build: the wheel carries the extension only when it was built -----------------------------------------
@pytest.mark.parametrize(
    "build_env",
    [{}, {"KROCKET_NO_EXTENSIONS": "1"}, {"CC": "/nonexistent/cc"}],
    ids=["compiled", "KROCKET_NO_EXTENSIONS=1", "no compiler"],
)
def test_the_wheel_is_platform_tagged_only_with_the_extension(build_env, tmp_path):
    """``pip wheel`` never fails for lack of a compiler: it builds the pure-Python wheel instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("KROCKET_NO_EXTENSIONS", "CC")} | build_env
    no_extensions = bool(build_env)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300, env=env,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("krocket-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        modules = [
            n for n in archive.namelist() if n.startswith("krocket/broker/fastpath/_cserve") and n.endswith(".so")
        ]
        tags = archive.read("krocket-0.1.0.dist-info/WHEEL").decode()
    if no_extensions:
        assert wheel.name.endswith("-py3-none-any.whl") and not modules and "Root-Is-Purelib: true" in tags
    else:
        assert "-cp3" in wheel.name and not wheel.name.endswith("-none-any.whl"), wheel.name
        assert len(modules) == 1 and "Root-Is-Purelib: false" in tags


def test_pure_is_what_runs_with_no_extensions():
    code = "from krocket.broker.fastpath import load_serve; print(load_serve()[1])"
    env = {**os.environ, "KROCKET_NO_EXTENSIONS": "1"}
    forced = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    env.pop("KROCKET_NO_EXTENSIONS")
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert forced.stdout.startswith("Python") and default.stdout.strip() == "C extension", (forced, default)
    assert pure.serve is not None
