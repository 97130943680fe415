"""Hostile remoting frames for the fuzz tests: valid frames of real requests, then mutated (fixed seeds).

Each mutation is one of what an attacker or a broken client sends: bit flips, truncation, lengths that lie,
a random or deeply nested JSON header, lone surrogates, ``1e400`` and out-of-range integers in the integer
fields, wrong types, an unknown serialize type, random binary headers, random bodies.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

from krocket.common.codes import RequestCode
from krocket.common.message import encode_properties
from krocket.common.remoting import SERIALIZE_JSON, SERIALIZE_ROCKETMQ, RemotingCommand, encode

_PREFIX = struct.Struct(">iI")


def _frame(code: int, fields: dict[str, str], body: bytes = b"", serialize: int = SERIALIZE_JSON) -> RemotingCommand:
    return RemotingCommand(code, ext_fields=fields, body=body, serialize=serialize)


def namesrv_frames() -> list[RemotingCommand]:
    """Valid requests a name server serves."""
    cluster = {"clusterName": "FuzzCluster", "brokerName": "fuzz-b", "brokerId": "0", "brokerAddr": "127.0.0.1:1"}
    register_body = json.dumps({"topicConfigSerializeWrapper": {"topicConfigTable": {}}, "filterServerList": []})
    version = {"stateVersion": 0, "timestamp": 1, "counter": 1}
    delta_body = json.dumps(
        {"fromVersion": version, "dataVersion": {**version, "counter": 2}, "topicConfigTable": {}, "deletedTopics": []}
    )
    frames = [
        _frame(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "FuzzTopic"}),
        _frame(RequestCode.GET_BROKER_CLUSTER_INFO, {}),
        _frame(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER, {}),
        _frame(RequestCode.GET_KV_CONFIG, {"namespace": "ns", "key": "k"}),
        _frame(RequestCode.PUT_KV_CONFIG, {"namespace": "ns", "key": "k", "value": "v"}),
        _frame(RequestCode.GET_KVLIST_BY_NAMESPACE, {"namespace": "ns"}),
        _frame(RequestCode.GET_TOPICS_BY_CLUSTER, {"cluster": "FuzzCluster"}),
        _frame(RequestCode.REGISTER_BROKER, {**cluster, "haServerAddr": "127.0.0.1:2"}, register_body.encode()),
        _frame(RequestCode.UNREGISTER_BROKER, cluster),
        _frame(RequestCode.QUERY_DATA_VERSION, cluster, b'{"stateVersion":0,"timestamp":1,"counter":1}'),
        _frame(RequestCode.REGISTER_TOPIC_IN_NAMESRV, cluster, delta_body.encode()),
        _frame(RequestCode.REGISTER_BROKER, {**cluster, "compressed": "true"}, zlib.compress(register_body.encode())),
        _frame(9999, {"x": "y"}),
    ]
    return frames + [_frame(105, {"topic": "FuzzTopic"}, serialize=SERIALIZE_ROCKETMQ)]


def broker_frames() -> list[RemotingCommand]:
    """Valid requests a broker serves (no long polling: a held pull would only be slow, not wrong)."""
    props = encode_properties({"TAGS": "a", "KEYS": "k"}).decode()
    send = {"a": "fuzz-producer", "b": "FuzzTopic", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "0"}
    send |= {"h": "0", "i": props, "j": "0", "k": "false", "m": "false"}
    heartbeat = {
        "clientID": "fuzz-client",
        "producerDataSet": [{"groupName": "fuzz-producer"}],
        "consumerDataSet": [{"groupName": "fuzz-group", "subscriptionDataSet": [{"topic": "FuzzTopic"}]}],
    }
    pull = {"consumerGroup": "fuzz-group", "topic": "FuzzTopic", "queueId": "0", "queueOffset": "0"}
    pull |= {"maxMsgNums": "4", "sysFlag": "0", "commitOffset": "0", "suspendTimeoutMillis": "0"}
    pull |= {"subscription": "*", "subVersion": "0"}
    queue = {"topic": "FuzzTopic", "queueId": "0"}
    frames = [
        _frame(RequestCode.SEND_MESSAGE_V2, send, b"fuzz body"),
        _frame(RequestCode.HEART_BEAT, {}, json.dumps(heartbeat).encode()),
        _frame(RequestCode.PULL_MESSAGE, pull),
        _frame(RequestCode.GET_MAX_OFFSET, queue),
        _frame(RequestCode.GET_MIN_OFFSET, queue),
        _frame(RequestCode.QUERY_CONSUMER_OFFSET, {"consumerGroup": "fuzz-group", **queue}),
        _frame(RequestCode.UPDATE_CONSUMER_OFFSET, {"consumerGroup": "fuzz-group", **queue, "commitOffset": "1"}),
        _frame(RequestCode.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "fuzz-group"}),
        _frame(RequestCode.GET_BROKER_RUNTIME_INFO, {}),
        _frame(RequestCode.GET_ALL_TOPIC_CONFIG, {}),
        _frame(RequestCode.VIEW_MESSAGE_BY_ID, {"offset": "0"}),
        _frame(RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, {**queue, "timestamp": "0"}),
        _frame(RequestCode.UNREGISTER_CLIENT, {"clientID": "fuzz-client", "consumerGroup": "fuzz-group"}),
    ]
    return frames + [_frame(RequestCode.GET_MAX_OFFSET, queue, serialize=SERIALIZE_ROCKETMQ)]


# -- mutations ---------------------------------------------------------------------------------------------
HOSTILE_NUMBERS = ["1e400", "-1e400", "NaN", "Infinity", "4294967296", "-2147483649", "1.5", "true", "null", '"7"']
HOSTILE_STRINGS = ["\\ud800", "\\udfff\\ud800", "a\\u0000b", "\\ud83d", "\u00ff\u4e2d", "%RETRY%x", "x" * 300]


def _split(frame: bytes) -> tuple[int, bytes, bytes]:
    _, marker = _PREFIX.unpack_from(frame, 0)
    header_len = marker & 0xFFFFFF
    return marker >> 24, frame[8 : 8 + header_len], frame[8 + header_len :]


def _join(serialize: int, header: bytes, body: bytes) -> bytes:
    return _PREFIX.pack(4 + len(header) + len(body), (serialize << 24) | len(header)) + header + body


def _json_object(serialize: int, header: bytes) -> dict[str, Any] | None:
    """The header as a JSON object, None when it is not one (a frame mutated before)."""
    if serialize != SERIALIZE_JSON:
        return None
    try:
        obj = json.loads(header)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _bit_flips(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def _truncate(rng: random.Random, frame: bytes) -> bytes:
    cut = frame[: rng.randrange(1, len(frame))]
    if rng.random() < 0.5 and len(cut) >= 8:  # a consistent length for the cut frame: the header is torn
        cut = struct.pack(">i", len(cut) - 4) + cut[4:]
    return cut


def _lying_length(rng: random.Random, frame: bytes) -> bytes:
    length = rng.choice([0, 1, 3, -1, -(2**31), 2**31 - 1, 16 * 1024 * 1024 + 1, rng.randrange(2**31)])
    return struct.pack(">i", length) + frame[4:]


def _lying_header_length(rng: random.Random, frame: bytes) -> bytes:
    serialize, header, body = _split(frame)
    header_len = rng.choice([0, len(header) + len(body) + 1, 0xFFFFFF, rng.randrange(len(header) + 1)])
    return frame[:4] + struct.pack(">I", (serialize << 24) | header_len) + frame[8:]


def _serialize_type(rng: random.Random, frame: bytes) -> bytes:
    _, header, body = _split(frame)
    return _join(rng.choice([1, 2, 7, 0xFF]), header, body)


def _random_json(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice(HOSTILE_NUMBERS + [str(rng.randint(-(2**40), 2**40))])
    if kind == 1:
        return '"' + rng.choice(HOSTILE_STRINGS) + '"'
    if kind == 2:
        return rng.choice(["true", "false", "null", "[]", "{}"])
    if kind == 3:
        return json.dumps(rng.choice(["code", "opaque", "flag", "extFields", "remark"]))
    if kind == 4:
        return "[" + ",".join(_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))) + "]"
    fields = ["code", "opaque", "flag", "version", "language", "remark", "extFields", "serializeTypeCurrentRPC"]
    items = [f'"{rng.choice(fields)}":{_random_json(rng, depth + 1)}' for _ in range(rng.randint(0, 5))]
    return "{" + ",".join(items) + "}"


def _random_header(rng: random.Random, frame: bytes) -> bytes:
    _, _, body = _split(frame)
    return _join(SERIALIZE_JSON, _random_json(rng, 1).encode(), body)


def _deep_nesting(rng: random.Random, frame: bytes) -> bytes:
    _, header, body = _split(frame)
    depth = rng.choice([1_000, 10_000, 100_000])
    nested = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
    if rng.random() < 0.5:
        return _join(SERIALIZE_JSON, nested.encode(), body)
    return _join(SERIALIZE_JSON, b'{"code":105,"opaque":1,"extFields":{"topic":' + nested.encode() + b"}}", body)


def _json_field(rng: random.Random, frame: bytes) -> bytes:
    """Replace one field of a valid JSON header with a hostile value."""
    serialize, header, body = _split(frame)
    obj = _json_object(serialize, header)
    if obj is None:
        return _bit_flips(rng, frame)
    text = json.dumps(obj)
    name = rng.choice(["code", "opaque", "flag", "version", "language", "remark", "extFields"])
    value = rng.choice(HOSTILE_NUMBERS) if rng.random() < 0.6 else _random_json(rng, 2)
    if name == "remark" or rng.random() < 0.3:
        value = '"' + rng.choice(HOSTILE_STRINGS) + '"'
    obj.pop(name, None)
    text = json.dumps(obj)[:-1] + (", " if len(obj) else "") + f'"{name}": {value}' + "}"
    return _join(SERIALIZE_JSON, text.encode(), body)


def _ext_value(rng: random.Random, frame: bytes) -> bytes:
    """A surrogate, invalid UTF-8, a number, a list or a huge string in one ext field value."""
    serialize, header, body = _split(frame)
    obj = _json_object(serialize, header)
    if obj is None:
        return _bit_flips(rng, frame)
    ext = obj.get("extFields")
    if not isinstance(ext, dict) or not ext:
        ext = obj["extFields"] = {"topic": "x"}
    key = rng.choice(sorted(ext))
    choice = rng.randrange(4)
    if choice == 0:  # invalid UTF-8 bytes right in the JSON text
        ext[key] = "__RAW__"
        text = json.dumps(obj).encode().replace(b"__RAW__", rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"]))
        return _join(SERIALIZE_JSON, text, body)
    ext[key] = "__HOSTILE__"
    hostile = '"' + rng.choice(HOSTILE_STRINGS) + '"' if choice == 1 else _random_json(rng, 2)
    text = json.dumps(obj).replace('"__HOSTILE__"', hostile)
    return _join(SERIALIZE_JSON, text.encode(), body)


def _random_body(rng: random.Random, frame: bytes) -> bytes:
    serialize, header, _ = _split(frame)
    size = rng.choice([0, 1, 100, 5000])
    body = rng.randbytes(size) if rng.random() < 0.5 else _random_json(rng, 0).encode()
    return _join(serialize, header, body)


def _deep_body(rng: random.Random, frame: bytes) -> bytes:
    """A body of deeply nested JSON (heartbeats and registrations carry JSON bodies)."""
    serialize, header, _ = _split(frame)
    depth = rng.choice([1_000, 100_000])
    return _join(serialize, header, ("[" * depth + "]" * depth).encode())


def _random_binary_header(rng: random.Random, frame: bytes) -> bytes:
    _, _, body = _split(frame)
    return _join(SERIALIZE_ROCKETMQ, rng.randbytes(rng.randrange(0, 64)), body)


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    _bit_flips,
    _truncate,
    _lying_length,
    _lying_header_length,
    _serialize_type,
    _random_header,
    _deep_nesting,
    _json_field,
    _json_field,
    _ext_value,
    _ext_value,
    _random_body,
    _deep_body,
    _random_binary_header,
]


def mutated(rng: random.Random, bases: list[RemotingCommand], opaque: int) -> bytes:
    """One hostile frame made from a valid request with ``opaque``; now and then the valid one itself, so each
    connection also serves ordinary requests."""
    base = rng.choice(bases)
    base.opaque = opaque
    frame = encode(base)
    if rng.random() < 0.1:
        return frame
    frame = rng.choice(MUTATIONS)(rng, frame)
    if rng.random() < 0.15 and len(frame) >= 8:
        frame = rng.choice(MUTATIONS)(rng, frame)
    return frame
