"""Registration bodies: the full body (JSON, deflated when large, RocketMQ's own compressed layout read too), the
topic delta, and the limits a name server holds a compressed body to."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from krocket.common.register_body import (
    COMPRESS_ABOVE_BYTES,
    RegisterBodyError,
    TopicDelta,
    data_version,
    decode_register_body,
    decode_topic_delta,
    encode_register_body,
    encode_topic_delta,
    inflate,
)
from krocket.common.topic import TopicConfig


def table(n: int) -> dict[str, dict]:
    return {f"Topic{i}": TopicConfig(f"Topic{i}", 8, 8, topic_sys_flag=i % 2).to_json() for i in range(n)}


def test_a_small_body_is_plain_json_with_the_extension_fields() -> None:
    body, compressed = encode_register_body(table(2), data_version(3, 99), "http://h:1", "h:8081")
    assert not compressed and json.loads(body)["krocketGrpcAddr"] == "h:8081"
    read = decode_register_body(body)
    assert read.topic_configs is not None and sorted(read.topic_configs) == ["Topic0", "Topic1"]
    assert read.topic_configs["Topic1"].topic_sys_flag == 1
    assert (read.data_version, read.http_url, read.grpc_addr) == (data_version(3, 99), "http://h:1", "h:8081")


def test_a_large_body_is_deflated_and_reads_back_the_same() -> None:
    body, compressed = encode_register_body(table(5000), data_version(1, 1), "http://h:1")
    plain = json.dumps({"topics": table(5000)}).encode()
    assert compressed and len(plain) > COMPRESS_ABOVE_BYTES and len(body) < len(plain) / 5
    read = decode_register_body(body, compressed=True)
    assert read.topic_configs is not None and len(read.topic_configs) == 5000
    assert read.http_url == "http://h:1"
    with pytest.raises(RegisterBodyError, match="compressed=true"):
        decode_register_body(body)  # deflated bytes without the header's flag


def rocketmq_compressed(version: dict, topics: list[str]) -> bytes:
    """A body laid out as RocketMQ's RegisterBrokerBody.encode(true) lays it out."""

    def chunk(data: bytes) -> bytes:
        return struct.pack(">i", len(data)) + data

    raw = chunk(json.dumps(version).encode()) + struct.pack(">i", len(topics))
    raw += b"".join(chunk(t.encode()) for t in topics)
    raw += chunk(b"[]") + struct.pack(">i", 0)
    return zlib.compress(raw)


def test_rocketmqs_compressed_layout_is_read() -> None:
    version = {"stateVersion": 0, "timestamp": 1700000000000, "counter": 7}
    body = rocketmq_compressed(
        version,
        ["Orders 8 8 6 SINGLE_TAG", 'Typed 4 4 6 SINGLE_TAG {"message.type":"FIFO"}', "broken", "Bad! 1 1 6 X"],
    )
    read = decode_register_body(body, compressed=True)
    assert read.data_version == version
    assert read.topic_configs is not None and sorted(read.topic_configs) == ["Orders", "Typed"]
    assert read.topic_configs["Orders"].write_queue_nums == 8
    assert read.topic_configs["Typed"].attributes == {"message.type": "FIFO"}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not deflated", "does not inflate"),
        (zlib.compress(b"\x00\x00\x00\x10{}"), "bad length"),
        (zlib.compress(b"\x00\x00"), "ends early"),
    ],
)
def test_broken_compressed_bodies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(RegisterBodyError, match=why):
        decode_register_body(body, compressed=True)


def test_a_deflate_bomb_is_refused_at_the_limit() -> None:
    bomb = zlib.compress(b"{" + b" " * (8 * 1024 * 1024) + b"}")
    assert len(bomb) < 64 * 1024
    with pytest.raises(RegisterBodyError, match="inflates past 1048576 bytes"):
        inflate(bomb, limit=1024 * 1024)


def test_a_delta_round_trips_plain_and_compressed() -> None:
    small = TopicDelta(data_version(1, 5), data_version(2, 5), {}, ["Gone"])
    body, compressed = encode_topic_delta(small, table(1))
    read = decode_topic_delta(body, compressed)
    assert not compressed and (read.from_version, read.to_version, read.deleted) == (
        data_version(1, 5),
        data_version(2, 5),
        ["Gone"],
    )
    assert list(read.upserted) == ["Topic0"]
    big_body, big_compressed = encode_topic_delta(small, table(3000))
    assert big_compressed and len(decode_topic_delta(big_body, True).upserted) == 3000


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"dataVersion": {}}', "fromVersion and dataVersion"),
        (b'{"fromVersion": {}, "dataVersion": {}, "deletedTopics": [1]}', "list of topic names"),
    ],
)
def test_bad_deltas_are_refused_naming_why(body: bytes, why: str) -> None:
    with pytest.raises(RegisterBodyError, match=why):
        decode_topic_delta(body)
