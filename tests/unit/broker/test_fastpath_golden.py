"""Golden bytes: the same frames through today's path, the Python fast path and the C fast path (when built) leave
byte-identical commit logs, consume queues, index files and checkpoints, and answer with byte-identical replies.

Each run is a broker's service over a real store (small segments and index files, so the walk meets segment and
index rolls) behind a real ``Connection`` whose transport records what is written. The clock is fixed, so that
store timestamps agree. The frames mix what the fast path serves (SEND_MESSAGE_V2 and SEND_MESSAGE, every queue and
round robin, tags, keys, unique keys, non-ASCII properties) with what it leaves to today's code (delays, half
messages, auto-created topics, batches, refusals, other request codes), split into reads in several ways.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.fastpath import FastSendPath, Serve, pure
from krocket.common.batch import encode_batch
from krocket.common.codes import RequestCode
from krocket.common.headers import SendMessageHeader
from krocket.common.message import (
    PROPERTY_DELAY,
    PROPERTY_KEYS,
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_TAGS,
    PROPERTY_TRANSACTION_PREPARED,
    PROPERTY_UNIQ_KEY,
    encode_properties,
)
from krocket.common.remoting import Connection, RemotingCommand, encode
from krocket.common.remoting.command import MAX_FRAME_BYTES
from krocket.common.topic import TopicConfig

from tests.unit.broker.broker_rig import BrokerRig, make_rig

FIXED_NOW_S = 1_750_000_000.123


def _implementations() -> Iterator[Any]:
    yield pytest.param(pure.serve, id="python")
    yield pytest.param("stdlib", id="python-stdlib-json")  # the twin without orjson
    try:
        from krocket.broker.fastpath import _cserve  # type: ignore[attr-defined]
    except ImportError:
        return
    yield pytest.param(_cserve.serve, id="c")


class RecordingTransport(asyncio.Transport):
    """What a connection writes, kept in order."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, list_of_data: Any) -> None:
        for part in list_of_data:
            self.data += part

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.1.2.3", 40404) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _props(**pairs: str) -> str:
    return encode_properties(pairs).decode()


def _send(opaque: int, topic: str, queue_id: int, body: bytes, props: str, code: int = 310, **extra: Any) -> bytes:
    header = SendMessageHeader(
        producer_group="golden-pg",
        topic=topic,
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=queue_id,
        born_timestamp=1_700_000_000_000 + opaque,
        properties=props,
        **extra,
    )
    fields = header.to_v2_fields() if code == RequestCode.SEND_MESSAGE_V2 else header.to_fields()
    return encode(RemotingCommand(code, opaque=opaque, ext_fields=fields, body=body))


def _cpp_send(opaque: int, topic: str, queue_id: int, body: bytes, props: str) -> bytes:
    """A send as RocketMQ's C++ client 0.4.4 writes it: SEND_MESSAGE, long names, some values as JSON numbers."""
    ext = {
        "AccessKey": "",
        "batch": "0",
        "bornTimestamp": str(1_700_000_000_000 + opaque),
        "defaultTopic": "TBW102",
        "defaultTopicQueueNums": 4,
        "flag": 0,
        "producerGroup": "cpp-pg",
        "properties": props,
        "queueId": queue_id,
        "reconsumeTimes": "0",
        "sysFlag": 0,
        "topic": topic,
        "unitMode": "0",
    }
    header = {"code": 10, "extFields": ext, "flag": 0, "language": "CPP", "opaque": opaque, "remark": "", "version": 63}
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">ii", 4 + len(raw) + len(body), len(raw)) + raw + body


def golden_frames() -> list[bytes]:
    """Frames served by the fast path, with the ones it must leave to today's code among them."""
    rng = random.Random(7)
    frames: list[bytes] = []
    opaque = 0

    def add(frame_of: Any) -> None:
        nonlocal opaque
        opaque += 1
        frames.append(frame_of(opaque))

    for i in range(700):
        size = rng.choice((1, 17, 200, 1024, 3000))
        body = bytes(rng.getrandbits(8) for _ in range(size)) if i % 50 == 0 else bytes([i % 256]) * size
        pairs = {PROPERTY_UNIQ_KEY: f"UNIQ{i:06d}", "WAIT": "true"}
        if i % 3:
            pairs[PROPERTY_TAGS] = rng.choice(("TagA", "TagB", "标签", "t|x"))
        if i % 4 == 0:
            pairs[PROPERTY_KEYS] = f"k{i}  order-{i % 7} ключ"
        if i % 11 == 0:
            pairs["user"] = 'quote " backslash \\ tab \t é'
        props = "" if i % 97 == 5 else _props(**pairs)
        topic = "GoldenA" if i % 5 else "GoldenB"
        queue_id = -1 if i % 6 == 0 else i % 3
        code = RequestCode.SEND_MESSAGE if i % 13 == 0 else RequestCode.SEND_MESSAGE_V2
        if i % 17 == 2:
            add(lambda o, t=topic, q=queue_id, b=body, p=props: _cpp_send(o, t, q, b, p))
        else:
            add(lambda o, t=topic, q=queue_id, b=body, p=props, c=code: _send(o, t, q, b, p, c))
        if i % 37 == 3:  # a delayed message: stored in the schedule topic by today's code
            delayed = _props(**{PROPERTY_UNIQ_KEY: f"D{i}", PROPERTY_DELAY: "2"})
            add(lambda o, b=body, p=delayed: _send(o, "GoldenA", 1, b, p))
        if i % 41 == 4:  # a half message
            half = {PROPERTY_UNIQ_KEY: f"H{i}", PROPERTY_TRANSACTION_PREPARED: "true", PROPERTY_PRODUCER_GROUP: "pg"}
            add(lambda o, h=half: _send(o, "GoldenA", 0, b"half", _props(**h), sys_flag=4))
        if i % 53 == 6:  # refusals: an empty body, a queue out of range, a topic that does not exist
            add(lambda o: _send(o, "GoldenA", 0, b"", _props(**{PROPERTY_UNIQ_KEY: "E"})))
            add(lambda o: _send(o, "GoldenA", 9, b"x", _props(**{PROPERTY_UNIQ_KEY: "R"})))
            add(lambda o: _send(o, "NoSuchTopic", 0, b"x", _props(**{PROPERTY_UNIQ_KEY: "N"})))
            for bad in ("a\x01b\x02\x02", "\x02", "a\x01b", "a\x01b\x01c\x02", "\x01b\x02", "a\x01b\x02a\x01c\x02"):
                add(lambda o, p=bad: _send(o, "GoldenA", 0, b"x", p))  # properties the general path refuses
        if i % 59 == 7:  # a batch and another request code
            items = [(b"b1", {PROPERTY_UNIQ_KEY: "B1"}, 0), (b"b2", {PROPERTY_UNIQ_KEY: "B2"}, 0)]
            add(lambda o, it=items: _send(o, "GoldenA", 2, encode_batch(it), "", RequestCode.SEND_BATCH_MESSAGE))
            add(lambda o: encode(RemotingCommand(RequestCode.GET_ALL_TOPIC_CONFIG, opaque=o)))
    return frames


def _reads(stream: bytes, frames: list[bytes], how: str) -> list[bytes]:
    if how == "one read":
        return [stream]
    if how == "frame by frame":
        return frames
    rng = random.Random(11)
    out, pos = [], 0
    while pos < len(stream):
        step = rng.randint(1, 5000)
        out.append(stream[pos : pos + step])
        pos += step
    return out


def _replies(data: bytes) -> dict[int, bytes]:
    """Reply frames by opaque (today's path answers some later, from a task)."""
    from krocket.common.remoting import decode_frame

    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        frame = data[pos : pos + 4 + length]
        out[decode_frame(frame[4:]).opaque] = frame
        pos += 4 + length
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("lock", "abort")
    }


Outcome = tuple[dict[int, bytes], dict[str, bytes], int]  # replies by opaque, store files, sends served fast


async def _run(tmp_path: Path, reads: list[bytes], serve: Serve | None, expected: int) -> Outcome:
    rig: BrokerRig = make_rig(tmp_path, auto_create_topic_enable=True)
    rig.topics.upsert(TopicConfig("GoldenA", 3, 3))
    rig.topics.upsert(TopicConfig("GoldenB", 2, 4))
    store = rig.store
    store.space.interval_s = 3600.0  # the disk is sampled once here (the rig samples it before every put)
    store.space.sample()

    def handle(conn: Connection, cmd: RemotingCommand) -> Any:
        store.hold_commit()
        return rig.handler(conn, cmd)

    fast = FastSendPath(rig.service, MAX_FRAME_BYTES, serve=serve) if serve is not None else None
    conn = Connection(handle, before_reply=store.commit, fast_path=fast)
    transport = RecordingTransport()
    conn.connection_made(transport)
    for data in reads:
        conn.data_received(data)
        await asyncio.sleep(0)
    # Sends that created their topic are answered later, from a task: wait until every frame has its reply.
    deadline = time.monotonic() + 10
    while len(_replies(bytes(transport.data))) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    store.close()
    return _replies(bytes(transport.data)), _files(tmp_path / "store"), fast.served if fast is not None else 0


@pytest.mark.parametrize("how", ["one read", "frame by frame", "random reads"])
@pytest.mark.parametrize("serve", list(_implementations()))
async def test_fast_paths_store_and_answer_what_todays_path_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Serve | str, how: str
) -> None:
    monkeypatch.setattr(time, "time", lambda: FIXED_NOW_S)
    if serve == "stdlib":
        monkeypatch.setattr(pure, "_loads", pure.loads_stdlib)
        serve = pure.serve
    frames = golden_frames()
    reads = _reads(b"".join(frames), frames, how)
    slow_replies, slow_files, _ = await _run(tmp_path / "slow", reads, None, len(frames))
    fast_replies, fast_files, served = await _run(tmp_path / "fast", reads, serve, len(frames))

    assert len(slow_replies) == len(frames)
    assert served >= 600  # most sends took the fast path
    assert sorted(fast_replies) == sorted(slow_replies)
    for opaque, reply in slow_replies.items():
        assert fast_replies[opaque] == reply, f"reply to opaque {opaque} differs"
    assert sorted(fast_files) == sorted(slow_files)
    assert any(name.startswith("commitlog/") for name in slow_files)
    assert len([n for n in slow_files if n.startswith("commitlog/")]) > 3  # the walk met segment rolls
    assert len([n for n in slow_files if n.startswith("index/")]) > 1  # and index rolls
    for name, data in slow_files.items():
        assert fast_files[name] == data, f"{name} differs"
