"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320): one header, two sets of names.

SEND_MESSAGE names its fields in full; SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE use one letter per field
(``SEND_V2_NAMES``). The broker decodes this header on every send, so the codec is written straight-line,
once, over a ``SendHeaderNames`` (no loop over fields, no per-field call).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from krocket.common.errors import HeaderError
from krocket.common.headers.fields import TRUE_WORDS, missing_field, not_an_int


@dataclass(frozen=True, slots=True)
class SendHeaderNames:
    """The wire name of each field of ``SendMessageHeader``."""

    producer_group: str
    topic: str
    default_topic: str
    default_topic_queue_nums: str
    queue_id: str
    sys_flag: str
    born_timestamp: str
    flag: str
    properties: str
    reconsume_times: str
    unit_mode: str
    max_reconsume_times: str
    batch: str
    broker_name: str


SEND_LONG_NAMES = SendHeaderNames(
    producer_group="producerGroup",
    topic="topic",
    default_topic="defaultTopic",
    default_topic_queue_nums="defaultTopicQueueNums",
    queue_id="queueId",
    sys_flag="sysFlag",
    born_timestamp="bornTimestamp",
    flag="flag",
    properties="properties",
    reconsume_times="reconsumeTimes",
    unit_mode="unitMode",
    max_reconsume_times="maxReconsumeTimes",
    batch="batch",
    broker_name="brokerName",
)

# SEND_MESSAGE_V2's names (RocketMQ's SendMessageRequestHeaderV2).
SEND_V2_NAMES = SendHeaderNames(
    producer_group="a",
    topic="b",
    default_topic="c",
    default_topic_queue_nums="d",
    queue_id="e",
    sys_flag="f",
    born_timestamp="g",
    flag="h",
    properties="i",
    reconsume_times="j",
    unit_mode="k",
    max_reconsume_times="l",
    batch="m",
    broker_name="n",
)


@dataclass(slots=True)
class SendMessageHeader:
    """A send's header. The defaults are what the broker assumes for a field the request leaves out."""

    producer_group: str
    topic: str
    default_topic: str | None = None
    default_topic_queue_nums: int = 4
    queue_id: int = -1  # -1: the broker picks the queue
    sys_flag: int = 0
    born_timestamp: int = 0
    flag: int = 0
    properties: str = ""  # encoded as by krocket.common.message.encode_properties
    reconsume_times: int = 0
    unit_mode: bool = False
    max_reconsume_times: int | None = None
    batch: bool = False
    broker_name: str | None = None

    def to_fields(self) -> dict[str, str]:
        """The header under SEND_MESSAGE's long names."""
        return _encode_long(self)

    def to_v2_fields(self) -> dict[str, str]:
        """The header under SEND_MESSAGE_V2's one-letter names, as krocket's producer sends it."""
        return _encode_v2(self)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> SendMessageHeader:
        """Decode either form: one-letter names when ``b`` (the topic) is there and ``topic`` is not."""
        if _V2_TOPIC in fields and _LONG_TOPIC not in fields:
            return _decode_v2(fields)
        return _decode_long(fields)


# The integer fields in the order their errors are reported, by long name.
_INT_FIELDS = (
    "queue_id",
    "sys_flag",
    "born_timestamp",
    "default_topic_queue_nums",
    "flag",
    "reconsume_times",
    "max_reconsume_times",
)


def _bad_int(fields: Mapping[str, str], names: SendHeaderNames) -> HeaderError:
    """The error for the first integer field that is none (the fast decoder only knows one failed)."""
    for attr in _INT_FIELDS:
        value = fields.get(getattr(names, attr))
        if value:
            try:
                int(value)
            except ValueError:
                return not_an_int(getattr(SEND_LONG_NAMES, attr), value)
    raise AssertionError("no integer field of the send header is malformed")


def _decoder(names: SendHeaderNames) -> Callable[[Mapping[str, str]], SendMessageHeader]:
    (
        k_producer_group,
        k_topic,
        k_default_topic,
        k_default_topic_queue_nums,
        k_queue_id,
        k_sys_flag,
        k_born_timestamp,
        k_flag,
        k_properties,
        k_reconsume_times,
        k_unit_mode,
        k_max_reconsume_times,
        k_batch,
        k_broker_name,
    ) = dataclasses.astuple(names)
    true_words = TRUE_WORDS
    header = SendMessageHeader

    def decode(fields: Mapping[str, str]) -> SendMessageHeader:
        get = fields.get
        topic = get(k_topic)
        if topic is None:
            raise missing_field(SEND_LONG_NAMES.topic)
        default_topic_queue_nums = get(k_default_topic_queue_nums)
        queue_id = get(k_queue_id)
        sys_flag = get(k_sys_flag)
        born_timestamp = get(k_born_timestamp)
        flag = get(k_flag)
        reconsume_times = get(k_reconsume_times)
        unit_mode = get(k_unit_mode)
        max_reconsume_times = get(k_max_reconsume_times)
        batch = get(k_batch)
        try:
            return header(
                get(k_producer_group, ""),
                topic,
                get(k_default_topic),
                int(default_topic_queue_nums) if default_topic_queue_nums else 4,
                int(queue_id) if queue_id else -1,
                int(sys_flag) if sys_flag else 0,
                int(born_timestamp) if born_timestamp else 0,
                int(flag) if flag else 0,
                get(k_properties, ""),
                int(reconsume_times) if reconsume_times else 0,
                unit_mode.lower() in true_words if unit_mode else False,
                int(max_reconsume_times) if max_reconsume_times else None,
                batch.lower() in true_words if batch else False,
                get(k_broker_name),
            )
        except ValueError:
            raise _bad_int(fields, names) from None

    return decode


def _encoder(names: SendHeaderNames) -> Callable[[SendMessageHeader], dict[str, str]]:
    (
        k_producer_group,
        k_topic,
        k_default_topic,
        k_default_topic_queue_nums,
        k_queue_id,
        k_sys_flag,
        k_born_timestamp,
        k_flag,
        k_properties,
        k_reconsume_times,
        k_unit_mode,
        k_max_reconsume_times,
        k_batch,
        k_broker_name,
    ) = dataclasses.astuple(names)

    def encode(h: SendMessageHeader) -> dict[str, str]:
        fields = {k_producer_group: h.producer_group, k_topic: h.topic}
        if h.default_topic is not None:
            fields[k_default_topic] = h.default_topic
        fields[k_default_topic_queue_nums] = str(h.default_topic_queue_nums)
        fields[k_queue_id] = str(h.queue_id)
        fields[k_sys_flag] = str(h.sys_flag)
        fields[k_born_timestamp] = str(h.born_timestamp)
        fields[k_flag] = str(h.flag)
        fields[k_properties] = h.properties
        fields[k_reconsume_times] = str(h.reconsume_times)
        fields[k_unit_mode] = "true" if h.unit_mode else "false"
        if h.max_reconsume_times is not None:
            fields[k_max_reconsume_times] = str(h.max_reconsume_times)
        fields[k_batch] = "true" if h.batch else "false"
        if h.broker_name is not None:
            fields[k_broker_name] = h.broker_name
        return fields

    return encode


_V2_TOPIC = SEND_V2_NAMES.topic
_LONG_TOPIC = SEND_LONG_NAMES.topic
_decode_v2 = _decoder(SEND_V2_NAMES)
_decode_long = _decoder(SEND_LONG_NAMES)
_encode_v2 = _encoder(SEND_V2_NAMES)
_encode_long = _encoder(SEND_LONG_NAMES)
