"""Fuzz target of the C send fast path (``krocket.broker.fastpath._cserve.serve``) against its Python twin.

Each input is a receive buffer. It is driven through the C ``serve`` and through ``pure.serve``, each on its own
context over its own real consume queues, the way the glue drives them (call again after STOP_COMMIT, with the log
buffer committed; a declined frame is skipped so the walk goes on). The C path must never crash or read out of
bounds (run under AddressSanitizer by ``scripts/asan.sh``) and must leave exactly what the twin leaves: consumed
bytes, stops, counts, replies, log records, queue entries (pending and written out), index entries, touched queues,
round robin and the missing topic. The one difference allowed: the C scanner declines a frame the twin serves
when the frame's header repeats a JSON key (the twin keeps the last value, as ``json.loads`` does, and the slow
path decides such a frame the same way), or when its properties hold an empty item (the twin's check misses it;
reported to the lead). The comparison is then made on the input up to that frame.

Run it:

- ``python -m tests.fuzz.fastpath_target --runs N`` (or ``--seconds S``): with atheris (libFuzzer, seeded with
  producer-built frames) when it is installed, else a random-mutation driver over the same seeds;
- ``--driver random`` forces the mutation driver (what ``scripts/asan.sh`` runs under ASan);
- ``tests/unit/broker/test_fastpath_c.py`` runs a bounded number of the same cases in the unit suite.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krocket.broker.fastpath import pure
from krocket.broker.fastpath.context import STOP_COMMIT, STOP_SLOW, FastContext, TopicEntry
from krocket.broker.store.consume_queue import ConsumeQueueTable
from krocket.common.codes import RequestCode
from krocket.common.headers import SendMessageHeader
from krocket.common.message import PROPERTY_KEYS, PROPERTY_TAGS, PROPERTY_UNIQ_KEY, encode_properties, tags_code
from krocket.common.message_id import pack_host
from krocket.common.remoting import RemotingCommand, encode

from .mutations import MUTATIONS

Serve = Callable[[bytearray, FastContext, bytearray], int]

NOW_MS = 1_750_000_000_123
STORE_HOST = pack_host("10.0.0.7:10911")
BORN_HOST = pack_host("10.1.2.3:40404")
MAX_FRAME = 1 << 20
# topic -> (write queues, read queues); the last one is written in a non-ASCII script (index keys, prefixes)
TOPICS = {"FastTopic": (4, 4), "Wide_Topic": (2, 6), "Тема-1": (1, 1)}
_PREFIX = struct.Struct(">ii")


def c_serve() -> Serve | None:
    """The C ``serve``, None when the extension is not built."""
    try:
        from krocket.broker.fastpath import _cserve  # type: ignore[attr-defined]
    except ImportError:
        return None
    serve: Serve = _cserve.serve
    return serve


# -- contexts -----------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """How a context is made (both implementations get the same)."""

    index_enabled: bool = True
    commit_limit: int = 1 << 20
    pending_entries: int = 64  # a queue writes its entries out once this many are pending
    max_body: int = 8192
    log_room: int = 1 << 30
    roll_at: float = math.inf
    rr: int = 0


@dataclass
class Twin:
    """One implementation's context, its queues and what it committed."""

    ctx: FastContext
    table: ConsumeQueueTable
    root: Path
    committed: bytearray = field(default_factory=bytearray)


def make_twin(root: Path, setup: Setup) -> Twin:
    table = ConsumeQueueTable(root / "consumequeue", 1000, setup.pending_entries)
    ctx = FastContext(bytearray(), STORE_HOST, MAX_FRAME, setup.max_body, setup.commit_limit, tags_code, True)
    ctx.index_enabled = setup.index_enabled
    ctx.born_host = BORN_HOST
    ctx.now = NOW_MS
    ctx.log_wrote = 4096
    ctx.log_room = setup.log_room
    ctx.roll_at = setup.roll_at
    ctx.rr = setup.rr
    for topic, (write, read) in TOPICS.items():
        entry = TopicEntry(topic, write, max(write, read), table)
        entry.make_queue(0)  # queue 0 exists; the others are created by their first message
        ctx.add_topic(entry)
    return Twin(ctx, table, root)


def snapshot(twin: Twin) -> dict[str, Any]:
    ctx = twin.ctx
    files = {str(p.relative_to(twin.root)): p.read_bytes() for p in sorted(twin.root.rglob("*")) if p.is_file()}
    return {
        "log": bytes(twin.committed + ctx.log_buf),
        "log_wrote": ctx.log_wrote,
        "log_room": ctx.log_room,
        "rr": ctx.rr,
        "index": list(ctx.index_entries),
        "touched": [(q.topic, q.queue_id) for q in ctx.touched],
        "queues": {key: (q.max_offset, q.written, bytes(q._pending)) for key, q in sorted(twin.table.queues.items())},
        "files": files,
    }


# -- driving ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    calls: list[tuple[int, int, int, bytes | None]]  # per call: (absolute end, stop, count, missing topic)
    out: bytes
    state: dict[str, Any]
    declined_at: list[int]  # absolute offsets of the frames a call stopped at with STOP_SLOW


# Under ASan (scripts/asan.sh sets it), each call gets a copy of the buffer in memory of exactly its size: a
# bytearray keeps a NUL after its last byte, where a read one past the end would go unnoticed.
EXACT_BUFFERS = os.environ.get("KROCKET_FUZZ_EXACT_BUFFERS") == "1"


def _exact(buf: bytearray) -> Any:
    return (ctypes.c_char * len(buf)).from_buffer_copy(buf) if len(buf) > 16 else bytearray(buf)


def drive(serve: Serve, data: bytes, twin: Twin, max_calls: int = 10_000) -> Run:
    """Serve ``data`` the way the glue does: commit and call again after STOP_COMMIT; skip a declined frame."""
    ctx = twin.ctx
    buf = bytearray(data)
    out = bytearray()
    base = 0
    calls: list[tuple[int, int, int, bytes | None]] = []
    declined: list[int] = []
    exact = EXACT_BUFFERS and serve is not pure.serve
    for _ in range(max_calls):
        ctx.missing_topic = None
        pos = serve(_exact(buf) if exact else buf, ctx, out)
        assert 0 <= pos <= len(buf), f"serve returned {pos} for a buffer of {len(buf)}"
        calls.append((base + pos, ctx.stop, ctx.count, ctx.missing_topic))
        del buf[:pos]
        base += pos
        if ctx.stop == STOP_COMMIT:
            twin.committed += ctx.log_buf
            ctx.log_buf.clear()
            continue
        if ctx.stop != STOP_SLOW:
            break
        declined.append(base)
        if len(buf) < 8:
            break
        (length,) = struct.unpack_from(">i", buf)
        if length < 4 or length + 4 > len(buf):
            break
        del buf[: 4 + length]  # the slow path's frame
        base += 4 + length
    state = snapshot(twin)
    for queue in twin.table.queues.values():
        queue.abandon()  # closes its files (the snapshot has what they and the pending buffer held)
    return Run(calls, bytes(out), state, declined)


def frame_at(data: bytes, offset: int) -> tuple[bytes, bytes] | None:
    """(header, body) of the whole frame at ``offset``, None when there is none."""
    if offset + 8 > len(data):
        return None
    length, marker = _PREFIX.unpack_from(data, offset)
    header_len = marker & 0xFFFFFF
    if length < 4 or offset + 4 + length > len(data) or header_len > length - 4:
        return None
    return data[offset + 8 : offset + 8 + header_len], data[offset + 8 + header_len : offset + 4 + length]


def _repeats_a_key(header: bytes) -> bool:
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        if len({k for k, _ in items}) != len(items):
            repeated = True
        return dict(items)

    try:
        json.loads(header.decode(), object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return False
    return repeated


def _has_empty_property_item(header: bytes) -> bool:
    try:
        obj = json.loads(header.decode())
    except (ValueError, RecursionError):
        return False
    ext = obj.get("extFields") if isinstance(obj, dict) else None
    if not isinstance(ext, dict):
        return False
    for key in ("i", "properties"):
        props = ext.get(key)
        if isinstance(props, str) and props.endswith("\x02") and "" in props[:-1].split("\x02"):
            return True
    return False


def allowed_difference(data: bytes, offset: int) -> bool:
    """Whether the C path may decline the frame at ``offset`` that the twin serves (see the module docstring)."""
    frame = frame_at(data, offset)
    return frame is not None and (_repeats_a_key(frame[0]) or _has_empty_property_item(frame[0]))


class Mismatch(AssertionError):
    pass


def compare(data: bytes, setup: Setup | None = None, c: Serve | None = None) -> int:
    """Drive ``data`` through C and the twin and check they agree; returns the sends served. Raises Mismatch."""
    setup = setup or Setup()
    c = c or c_serve()
    if c is None:
        raise RuntimeError("the C extension krocket.broker.fastpath._cserve is not built")
    for _ in range(64):
        with tempfile.TemporaryDirectory(prefix="fastpath-c-") as a, tempfile.TemporaryDirectory(prefix="fp-py-") as b:
            got = drive(c, data, make_twin(Path(a), setup))
            want = drive(pure.serve, data, make_twin(Path(b), setup))
        if got.calls == want.calls and got.out == want.out and got.state == want.state:
            return sum(count for _, _, count, _ in got.calls)
        # The allowed difference: C declined, at a frame the twin went further with; compare up to that frame.
        first = next((i for i, (g, w) in enumerate(zip(got.calls, want.calls, strict=False)) if g != w), None)
        if first is not None:
            at, stop, _, _ = got.calls[first]
            if stop == STOP_SLOW and at < len(data) and allowed_difference(data, at):
                data = data[:at]
                continue
        raise Mismatch(
            f"C and Python differ (first differing call {first}):\n C:  {got.calls[:8]}\n Py: {want.calls[:8]}\n"
            f" out equal: {got.out == want.out}; state keys differing: "
            f"{[k for k in got.state if got.state[k] != want.state.get(k)]}"
        )
    raise Mismatch("too many allowed differences in one input")


# -- inputs -------------------------------------------------------------------------------------------------
def send_frame(
    rng: random.Random,
    opaque: int,
    *,
    topic: str | None = None,
    code: int | None = None,
    body: bytes | None = None,
    queue_id: int | None = None,
) -> bytes:
    """One send as krocket's producer builds it (SendMessageHeader, JSON header, ext fields as strings)."""
    pairs = {PROPERTY_UNIQ_KEY: f"0A0000070000{opaque:020X}", "WAIT": "true"}
    if rng.random() < 0.7:
        pairs[PROPERTY_TAGS] = rng.choice(("TagA", "TagB", "标签", "t|x", ""))
    if rng.random() < 0.4:
        pairs[PROPERTY_KEYS] = rng.choice(("k1", "k1 k2", " order-7  ключ ", "a b c d e"))
    if rng.random() < 0.1:
        pairs["user"] = 'quote " backslash \\ tab \t slash / é \u2028 😀'
    if rng.random() < 0.05:
        pairs.clear()
    header = SendMessageHeader(
        producer_group="fuzz-pg",
        topic=topic if topic is not None else rng.choice((*TOPICS, "NoSuchTopic")),
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=queue_id if queue_id is not None else rng.choice((-1, -1, 0, 1, 2, 3, 5)),
        sys_flag=rng.choice((0, 0, 0, 2)),
        born_timestamp=rng.choice((0, NOW_MS - 5, 1_700_000_000_000 + opaque)),
        flag=rng.choice((0, 0, 7, -3)),
        properties=encode_properties(pairs).decode(),
        reconsume_times=rng.choice((0, 0, 1, 16)),
    )
    if code is None:
        code = RequestCode.SEND_MESSAGE if rng.random() < 0.2 else RequestCode.SEND_MESSAGE_V2
    fields = header.to_v2_fields() if code == RequestCode.SEND_MESSAGE_V2 else header.to_fields()
    if body is None:
        size = rng.choice((1, 2, 17, 200, 1024, 3000))
        body = rng.randbytes(size)
    return encode(RemotingCommand(code, opaque=opaque, ext_fields=fields, body=body))


def _rewrite_header(frame: bytes, header: bytes) -> bytes:
    length, marker = _PREFIX.unpack_from(frame)
    old = frame[8 : 8 + (marker & 0xFFFFFF)]
    body = frame[8 + len(old) :]
    return _PREFIX.pack(4 + len(header) + len(body), len(header)) + header + body


def _header_of(frame: bytes) -> bytes:
    return frame[8 : 8 + (_PREFIX.unpack_from(frame)[1] & 0xFFFFFF)]


def _json_variant(rng: random.Random, frame: bytes) -> bytes:
    """The same header written another valid (or nearly valid) way: what other clients send."""
    header = _header_of(frame)
    obj = json.loads(header)
    ext = obj["extFields"]
    choice = rng.randrange(16)
    if choice == 0:  # ASCII escaped (\u00XX everywhere), key order shuffled
        items = list(obj.items())
        rng.shuffle(items)
        return _rewrite_header(frame, json.dumps(dict(items), ensure_ascii=True).encode())
    if choice == 1:  # whitespace everywhere
        return _rewrite_header(frame, json.dumps(obj, indent=rng.choice((1, 2, "\t")), ensure_ascii=False).encode())
    if choice == 2:  # a repeated key
        text = header.decode()
        return _rewrite_header(frame, (text[:-1] + ',"opaque":' + str(rng.randrange(100)) + "}").encode())
    if choice == 3:  # an unknown top-level key, or remark null / string
        obj[rng.choice(("remark", "unknown", "remark"))] = rng.choice((None, "r", 1))
    elif choice == 4:  # an ext value of another type
        key = rng.choice(list(ext))
        ext[key] = rng.choice((1, None, True, [], {}, 1.5))
    elif choice == 5:  # integer fields written oddly
        key = rng.choice([k for k in ("e", "f", "g", "h", "j", "d", "queueId", "sysFlag", "flag") if k in ext] or ["e"])
        ext[key] = rng.choice(
            ("", "-", "+1", "01", "-0", " 1", "1 ", "9223372036854775807", "9223372036854775808",
             "-9223372036854775808", "-9223372036854775809", "00000000000000000001", "000000000000000000001",
             "2147483648", "-2147483649", "-2", "1e3", "٣", "4", "1000", 5, -1, 2**63, 2**64 - 1)
        )  # fmt: skip
    elif choice == 6:  # top-level numbers written oddly
        key = rng.choice(("code", "flag", "opaque", "version"))
        raw = rng.choice(("-0", "0", "1", "310.0", "3.1e2", "2147483648", "-2147483649", "01", "true", '"310"', "10"))
        obj.pop(key, None)
        text = json.dumps(obj, ensure_ascii=False)
        return _rewrite_header(frame, (text[:-1] + f',"{key}":{raw}' + "}").encode())
    elif choice == 7:  # properties changed
        key = "i" if "i" in ext else "properties"
        ext[key] = rng.choice(
            ("", "\x02", "a\x01b", "a\x01b\x02\x02", "\x01b\x02", "a\x01b\x01c\x02", "a\x01b\x02a\x01c\x02",
             "DELAY\x013\x02", "TRAN_MSG\x01true\x02", "TIMER_DELAY_MS\x011\x02", "TAGS\x01x\x02KEYS\x01\x02",
             "a" * 40000 + "\x01b\x02", "UNIQ_KEY\x01\x02TAGS\x01T\x02", "k\x01😀\x02")
        )  # fmt: skip
    elif choice == 8:  # batch, flag, code
        obj[rng.choice(("flag", "code"))] = rng.choice((1, 2, 320, 10, 310, 0))
        ext[rng.choice(("m", "batch"))] = rng.choice(("true", "false", "", "FALSE"))
    elif choice == 9:  # both name sets, or the topic under the other name
        ext[rng.choice(("topic", "b"))] = rng.choice((*TOPICS, "Other"))
    elif choice == 10:  # escapes and surrogates written by hand into a string value
        text = header.decode()
        at = text.find('"b":"')
        if at < 0:
            at = text.find('"topic":"')
        if at >= 0:
            at = text.index(':"', at) + 2
            piece = rng.choice(("\\u0046", "\\ud800", "\\udc00x", "\\ud83d\\ude00", "\\x", "\\", "\x01", "\\/"))
            text = text[:at] + piece + text[at:]
        return _rewrite_header(frame, text.encode())
    elif choice == 11:  # raw bytes that are not UTF-8, or overlong / surrogate encodings
        spliced = bytearray(header)
        at = rng.randrange(len(spliced))
        spliced[at:at] = rng.choice(
            (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xc3\xa9")
        )
        return _rewrite_header(frame, bytes(spliced))
    elif choice == 12:  # a trailing comma, a missing brace, trailing data
        text = header.decode()
        text = rng.choice((text[:-1] + ",}", text[:-1], text + " ", text + "x", " " + text, text + "{}"))
        return _rewrite_header(frame, text.encode())
    elif choice == 13:  # ext fields empty or missing
        if rng.random() < 0.5:
            obj.pop("extFields")
        else:
            obj["extFields"] = {}
    elif choice == 14:  # a queue id out of range or negative
        ext["e" if "e" in ext else "queueId"] = str(rng.choice((-5, -1, 4, 5, 6, 100, 2**31)))
    else:  # many unknown ext keys
        for k in range(rng.randrange(1, 40)):
            ext[f"x{k}"] = "v"
    return _rewrite_header(frame, json.dumps(obj, ensure_ascii=rng.random() < 0.3).encode())


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """A hostile variant of ``frame``: a JSON-level change, or a byte-level one (``tests/fuzz/mutations.py``)."""
    if rng.random() < 0.6:
        return _json_variant(rng, frame)
    mutation = rng.choice(MUTATIONS)
    try:
        return bytes(mutation(rng, frame))
    except (ValueError, IndexError, KeyError, TypeError):
        return frame


def seed_frames(count: int = 40, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [send_frame(rng, i + 1) for i in range(count)]


def random_input(rng: random.Random, opaque: int) -> bytes:
    """A receive buffer: a few sends, some mutated, maybe cut short."""
    frames = []
    for i in range(rng.randint(1, 8)):
        frame = send_frame(rng, opaque + i)
        if rng.random() < 0.35:
            frame = mutate(rng, frame)
        frames.append(frame)
    data = b"".join(frames)
    if rng.random() < 0.15:
        data = data[: rng.randrange(len(data) + 1)]
    return data


def random_setup(rng: random.Random) -> Setup:
    return Setup(
        index_enabled=rng.random() < 0.8,
        commit_limit=rng.choice((1, 3000, 1 << 20)),
        pending_entries=rng.choice((1, 3, 64)),
        max_body=rng.choice((1024, 8192)),
        log_room=rng.choice((1 << 30, 1 << 30, 20000, 200)),
        roll_at=rng.choice((math.inf, math.inf, math.inf, float(NOW_MS), NOW_MS + 1)),
        rr=rng.choice((0, 7, 2**40)),
    )


def random_cases(seed: int, count: int) -> Iterator[tuple[bytes, Setup]]:
    rng = random.Random(seed)
    for n in range(count):
        yield random_input(rng, 1 + n * 10), random_setup(rng)


# -- the drivers --------------------------------------------------------------------------------------------
def run_random(runs: int, seconds: float, seed: int) -> int:
    deadline = time.monotonic() + seconds
    served = done = 0
    for data, setup in random_cases(seed, runs):
        served += compare(data, setup)
        done += 1
        if time.monotonic() > deadline:
            break
    print(f"fastpath fuzz (random mutations): {done} inputs, {served} sends served, C == Python", flush=True)
    return 0


def run_atheris(runs: int, seconds: float, seed: int) -> int:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    setups = [Setup(), Setup(commit_limit=3000, pending_entries=3), Setup(log_room=5000, index_enabled=False)]

    def one_input(data: bytes) -> None:
        if not data:
            return
        compare(data[1:], setups[data[0] % len(setups)])

    work = Path(tempfile.gettempdir(), "krocket-fastpath-fuzz")  # reused: the last run's crash file stays there
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    for i, frame in enumerate(seed_frames(60, seed)):
        (corpus / f"seed{i}").write_bytes(bytes([i % len(setups)]) + frame)
    for i, (data, _) in enumerate(random_cases(seed, 60)):
        (corpus / f"mut{i}").write_bytes(bytes([i % len(setups)]) + data)
    args = [sys.argv[0], f"-runs={runs}", f"-max_total_time={max(1, int(seconds))}", f"-seed={seed}",
            "-max_len=20000", "-rss_limit_mb=4096", f"-artifact_prefix={work}/", str(corpus)]  # fmt: skip
    atheris.instrument_func(pure.serve)
    atheris.Setup(args, one_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=int(os.environ.get("KROCKET_FUZZ_SEED", "1")))
    p.add_argument("--driver", choices=("auto", "atheris", "random"), default="auto")
    args = p.parse_args(argv)
    if c_serve() is None:
        print("fastpath fuzz: the C extension is not built", file=sys.stderr)
        return 2
    driver = args.driver
    if driver == "auto":
        try:
            import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401

            driver = "atheris"
        except ImportError:
            driver = "random"
    if driver == "atheris":
        return run_atheris(args.runs, args.seconds, args.seed)
    return run_random(args.runs, args.seconds, args.seed)


if __name__ == "__main__":
    sys.exit(main())
