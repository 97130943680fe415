"""What a broker tells the name servers about its topics: the full registration body, the topic delta, and the
data version both carry.

**Full registration** (REGISTER_BROKER, 103): RocketMQ's ``RegisterBrokerBody`` as JSON,
``{"topicConfigSerializeWrapper": {"topicConfigTable": {name: TopicConfig}, "dataVersion": DataVersion},
"filterServerList": []}``, plus krocket's extension fields, which RocketMQ's name server ignores:
``krocketHttpUrl`` (the broker's HTTP admin API, e.g. ``http://10.0.0.5:10880``, for the name server's console) and
``krocketGrpcAddr`` (its 5.x gRPC endpoint ``host:port`` when it serves one; routes hand it out as each BrokerData's
``grpcAddrs``, see ``krocket.common.route``). A body without them (a Java broker) leaves the broker without them.
With the header's ``compressed`` true krocket sends the same JSON deflated (zlib); a RocketMQ broker's compressed
body (``compressedRegister``: deflated, length-prefixed data version, topic count, ``TopicConfig.encode()``
strings, filter servers, queue mappings) is read too. A full registration of a master is the whole truth about
its group's topics: a topic it does not name is gone from that group.

**Topic delta** (REGISTER_TOPIC_IN_NAMESRV, 217, krocket's use of RocketMQ's code): the topics that changed since
data version ``fromVersion`` (created or updated ones in full, deleted ones by name) and the ``dataVersion`` they
lead to. A name server that holds ``fromVersion`` for the broker applies it and holds ``dataVersion`` after; one
that missed a change holds an older version, applies what it gets, and is caught up by the next full
registration (QUERY_DATA_VERSION tells the broker it differs).

**Data version**: RocketMQ's ``{"stateVersion", "timestamp", "counter"}``; krocket's ``timestamp`` is the
broker process's start (ms), so a restarted broker never matches what a name server remembers of the last one.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from krocket.common.addresses import is_host_port
from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError, MessageIllegalError
from krocket.common.route import dumps, loads_lenient
from krocket.common.topic import TopicConfig

log = logging.getLogger(__name__)

HTTP_URL_FIELD = "krocketHttpUrl"
GRPC_ADDR_FIELD = "krocketGrpcAddr"
COMPRESS_ABOVE_BYTES = 64 * 1024
"""A broker deflates a full registration body larger than this (a few hundred topics)."""
MAX_INFLATED_BYTES = 256 * 1024 * 1024
"""A name server refuses a compressed body that inflates past this (a deflate bomb, or over a million topics)."""

DataVersion = dict[str, Any]

# A slave's copy of its master's topic table (GET_ALL_TOPIC_CONFIG) names the data version it holds and that it
# takes a deflated body; the master answers "unchanged" with no body when that is still its version, and deflates
# a large table. Fields RocketMQ's brokers and tools neither send nor read.
KNOWN_VERSION_FIELD = "krocketKnownDataVersion"
ACCEPT_COMPRESSED_FIELD = "krocketAcceptCompressed"
UNCHANGED_FIELD = "krocketUnchanged"
COMPRESSED_FIELD = "krocketCompressed"


class RegisterBodyError(KrocketError):
    """A registration or delta body that cannot be read: the request is refused (SYSTEM_ERROR, as RocketMQ's name
    server answers a bad request), naming why."""

    code = ResponseCode.SYSTEM_ERROR


def data_version(counter: int, started_ms: int) -> DataVersion:
    return {"stateVersion": 0, "timestamp": started_ms, "counter": counter}


def version_key(version: DataVersion) -> str:
    """A data version as one comparable string (for a header field)."""
    return f"{version.get('timestamp', 0)}.{version.get('stateVersion', 0)}.{version.get('counter', 0)}"


def maybe_compress(body: bytes) -> tuple[bytes, bool]:
    """``body`` deflated when it is over ``COMPRESS_ABOVE_BYTES``, and whether it is."""
    if len(body) <= COMPRESS_ABOVE_BYTES:
        return body, False
    return zlib.compress(body, 6), True


@dataclass(slots=True)
class RegisterBody:
    """A full registration, read: the topics (None when the body has no topic table), the data version and the
    broker's extension fields ("" when absent or not valid)."""

    topic_configs: dict[str, TopicConfig] | None = None
    data_version: DataVersion | None = None
    http_url: str = ""
    grpc_addr: str = ""


@dataclass(slots=True)
class TopicDelta:
    """Topics changed on a broker between two data versions."""

    from_version: DataVersion
    to_version: DataVersion
    upserted: dict[str, TopicConfig] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


# -- full registration ----------------------------------------------------------------------------------------
def encode_register_body(
    topic_table: dict[str, dict[str, Any]], version: DataVersion, http_url: str = "", grpc_addr: str = ""
) -> tuple[bytes, bool]:
    """The body and whether it is compressed (deflated when over ``COMPRESS_ABOVE_BYTES``)."""
    body = dumps(
        {
            "topicConfigSerializeWrapper": {"topicConfigTable": topic_table, "dataVersion": version},
            "filterServerList": [],
            **({HTTP_URL_FIELD: http_url} if http_url else {}),
            **({GRPC_ADDR_FIELD: grpc_addr} if grpc_addr else {}),
        }
    )
    return maybe_compress(body)


def decode_register_body(body: bytes, compressed: bool = False) -> RegisterBody:
    """A REGISTER_BROKER body; ``RegisterBodyError`` when it cannot be read. Invalid topic configs are skipped."""
    if not body:
        return RegisterBody()
    if compressed:
        raw = inflate(body)
        if not raw.lstrip().startswith(b"{"):
            return _decode_rocketmq_compressed(raw)
        body = raw
    try:
        data = loads_lenient(body)
    except (UnicodeDecodeError, ValueError):
        raise RegisterBodyError(
            "REGISTER_BROKER body is not JSON" + ("" if compressed else " (a compressed body needs compressed=true)")
        ) from None
    if not isinstance(data, dict):
        raise RegisterBodyError("REGISTER_BROKER body is not a JSON object")
    out = RegisterBody(
        http_url=valid_http_url(data.get(HTTP_URL_FIELD)), grpc_addr=valid_grpc_addr(data.get(GRPC_ADDR_FIELD))
    )
    wrapper = data.get("topicConfigSerializeWrapper")
    if isinstance(wrapper, dict):
        version = wrapper.get("dataVersion")
        out.data_version = version if isinstance(version, dict) else None
        out.topic_configs = topic_configs(wrapper.get("topicConfigTable") or {})
    return out


def inflate(body: bytes, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """A deflated (zlib) body, refused with ``RegisterBodyError`` when it is not one or inflates past ``limit``."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, limit)
    except zlib.error as exc:
        raise RegisterBodyError(f"compressed registration body does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise RegisterBodyError(f"compressed registration body inflates past {limit} bytes: refused")
    return raw


def topic_configs(table: Any) -> dict[str, TopicConfig]:
    """``{name: TopicConfig JSON}`` read, skipping (and logging) entries that are not valid topic configs."""
    configs: dict[str, TopicConfig] = {}
    if not isinstance(table, dict):
        return configs
    for name, raw in table.items():
        try:
            config = TopicConfig.from_json({"topicName": name, **raw})
        except (KeyError, TypeError, ValueError, MessageIllegalError) as exc:
            log.warning("ignoring topic config %r in a registration: %s", name, exc)
            continue
        configs[config.topic_name] = config
    return configs


def _decode_rocketmq_compressed(raw: bytes) -> RegisterBody:
    """RocketMQ's compressed ``RegisterBrokerBody`` (``compressedRegister``): big-endian int lengths before the data
    version JSON, the topic count, each ``TopicConfig.encode()`` string (``name read write perm filterType
    [attributes JSON]``), then filter servers and queue mappings (not used here)."""
    pos = 0

    def chunk() -> bytes:
        nonlocal pos
        if pos + 4 > len(raw):
            raise RegisterBodyError("compressed REGISTER_BROKER body ends early")
        (length,) = struct.unpack_from(">i", raw, pos)
        if length < 0 or pos + 4 + length > len(raw):
            raise RegisterBodyError("compressed REGISTER_BROKER body has a bad length")
        pos += 4 + length
        return raw[pos - length : pos]

    try:
        version = json.loads(chunk())
        if pos + 4 > len(raw):
            raise RegisterBodyError("compressed REGISTER_BROKER body ends early")
        (count,) = struct.unpack_from(">i", raw, pos)
        pos += 4
        configs: dict[str, TopicConfig] = {}
        for _ in range(max(count, 0)):
            config = _decode_topic_config_string(chunk().decode())
            if config is not None:
                configs[config.topic_name] = config
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegisterBodyError(f"compressed REGISTER_BROKER body cannot be read: {exc}") from None
    return RegisterBody(configs, version if isinstance(version, dict) else None)


def _decode_topic_config_string(text: str) -> TopicConfig | None:
    parts = text.split(" ", 5)
    if len(parts) < 5:
        log.warning("ignoring topic config %r in a compressed registration: too few fields", text[:200])
        return None
    attributes: dict[str, str] = {}
    if len(parts) == 6 and parts[5]:
        try:
            loaded = json.loads(parts[5])
            attributes = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        except ValueError:
            attributes = {}
    try:
        return TopicConfig.from_json(
            {
                "topicName": parts[0],
                "readQueueNums": int(parts[1]),
                "writeQueueNums": int(parts[2]),
                "perm": int(parts[3]),
                "topicFilterType": parts[4],
                "attributes": attributes,
            }
        )
    except (TypeError, ValueError, MessageIllegalError) as exc:
        log.warning("ignoring topic config %r in a compressed registration: %s", parts[0], exc)
        return None


# -- topic delta ------------------------------------------------------------------------------------------------
def encode_topic_delta(delta: TopicDelta, topic_table: dict[str, dict[str, Any]]) -> tuple[bytes, bool]:
    """The delta's body (``topic_table``: the upserted topics as registered) and whether it is compressed."""
    body = dumps(
        {
            "fromVersion": delta.from_version,
            "dataVersion": delta.to_version,
            "topicConfigTable": topic_table,
            "deletedTopics": delta.deleted,
        }
    )
    return maybe_compress(body)


def decode_topic_delta(body: bytes, compressed: bool = False) -> TopicDelta:
    if compressed:
        body = inflate(body)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise RegisterBodyError("REGISTER_TOPIC_IN_NAMESRV body is not JSON") from None
    if not isinstance(data, dict):
        raise RegisterBodyError("REGISTER_TOPIC_IN_NAMESRV body is not a JSON object")
    from_version, to_version = data.get("fromVersion"), data.get("dataVersion")
    deleted = data.get("deletedTopics") or []
    if not isinstance(from_version, dict) or not isinstance(to_version, dict):
        raise RegisterBodyError("REGISTER_TOPIC_IN_NAMESRV body needs fromVersion and dataVersion objects")
    if not isinstance(deleted, list) or not all(isinstance(name, str) for name in deleted):
        raise RegisterBodyError("REGISTER_TOPIC_IN_NAMESRV deletedTopics must be a list of topic names")
    return TopicDelta(from_version, to_version, topic_configs(data.get("topicConfigTable") or {}), deleted)


# -- extension fields ---------------------------------------------------------------------------------------------
def valid_http_url(value: Any) -> str:
    """The broker's HTTP base URL, or "" when ``value`` is none."""
    return value if isinstance(value, str) and value.startswith(("http://", "https://")) else ""


def valid_grpc_addr(value: Any) -> str:
    """The broker's gRPC ``host:port``, or "" when ``value`` is none."""
    return value if isinstance(value, str) and is_host_port(value) else ""
