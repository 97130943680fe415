"""Headers of the requests a broker serves besides sends: pulls, offsets, clients, topics, messages.

Defaults are what the broker assumes for a field the request leaves out; a field without one is required.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from krocket.common.codes import PERM_READ_WRITE
from krocket.common.headers.fields import (
    RequestHeader,
    decode_fields,
    missing_field,
    missing_int_field,
    wire_name,
    wire_names,
)


@dataclass(slots=True)
class PullMessageHeader(RequestHeader):
    """PULL_MESSAGE (11)."""

    consumer_group: str
    topic: str
    queue_id: int
    queue_offset: int
    max_msg_nums: int = 32
    sys_flag: int = 0  # PULL_FLAG_* bits of krocket.common.codes
    commit_offset: int = -1
    suspend_timeout_millis: int = 0
    subscription: str | None = None
    sub_version: int = 0
    expression_type: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> PullMessageHeader:
        """Straight-line: the broker decodes this on every pull."""
        return _decode_pull(fields)


def _pull_decoder() -> Callable[[Mapping[str, str]], PullMessageHeader]:
    (
        k_consumer_group,
        k_topic,
        k_queue_id,
        k_queue_offset,
        k_max_msg_nums,
        k_sys_flag,
        k_commit_offset,
        k_suspend_timeout_millis,
        k_subscription,
        k_sub_version,
        k_expression_type,
    ) = wire_names(PullMessageHeader)
    header = PullMessageHeader

    def decode(fields: Mapping[str, str]) -> PullMessageHeader:
        get = fields.get
        consumer_group = get(k_consumer_group)
        if consumer_group is None:
            raise missing_field(k_consumer_group)
        topic = get(k_topic)
        if topic is None:
            raise missing_field(k_topic)
        queue_id = get(k_queue_id)
        if not queue_id:
            raise missing_int_field(k_queue_id)
        queue_offset = get(k_queue_offset)
        if not queue_offset:
            raise missing_int_field(k_queue_offset)
        max_msg_nums = get(k_max_msg_nums)
        sys_flag = get(k_sys_flag)
        commit_offset = get(k_commit_offset)
        suspend_timeout_millis = get(k_suspend_timeout_millis)
        sub_version = get(k_sub_version)
        try:
            return header(
                consumer_group,
                topic,
                int(queue_id),
                int(queue_offset),
                int(max_msg_nums) if max_msg_nums else 32,
                int(sys_flag) if sys_flag else 0,
                int(commit_offset) if commit_offset else -1,
                int(suspend_timeout_millis) if suspend_timeout_millis else 0,
                get(k_subscription),
                int(sub_version) if sub_version else 0,
                get(k_expression_type),
            )
        except ValueError:
            return decode_fields(header, fields)  # raises the error that names the field

    return decode


_decode_pull = _pull_decoder()


@dataclass(slots=True)
class QueryConsumerOffsetHeader(RequestHeader):
    """QUERY_CONSUMER_OFFSET (14)."""

    consumer_group: str
    topic: str
    queue_id: int
    set_zero_if_not_found: bool = True


@dataclass(slots=True)
class UpdateConsumerOffsetHeader(RequestHeader):
    """UPDATE_CONSUMER_OFFSET (15)."""

    consumer_group: str
    topic: str
    queue_id: int
    commit_offset: int


@dataclass(slots=True)
class QueueHeader(RequestHeader):
    """GET_MAX_OFFSET (30), GET_MIN_OFFSET (31) and GET_EARLIEST_MSG_STORETIME (32): one queue."""

    topic: str
    queue_id: int


GetMaxOffsetHeader = QueueHeader
GetMinOffsetHeader = QueueHeader
GetEarliestMsgStoretimeHeader = QueueHeader


@dataclass(slots=True)
class SearchOffsetHeader(RequestHeader):
    """SEARCH_OFFSET_BY_TIMESTAMP (29)."""

    topic: str
    queue_id: int
    timestamp: int


@dataclass(slots=True)
class UnregisterClientHeader(RequestHeader):
    """UNREGISTER_CLIENT (35)."""

    client_id: str = field(default="", metadata=wire_name("clientID"))
    producer_group: str | None = None
    consumer_group: str | None = None


@dataclass(slots=True)
class ConsumerGroupHeader(RequestHeader):
    """GET_CONSUMER_LIST_BY_GROUP (38)."""

    consumer_group: str


@dataclass(slots=True)
class NotifyConsumerIdsChangedHeader(RequestHeader):
    """NOTIFY_CONSUMER_IDS_CHANGED (40), from a broker to its clients."""

    consumer_group: str = ""


@dataclass(slots=True)
class CreateTopicHeader(RequestHeader):
    """UPDATE_AND_CREATE_TOPIC (17)."""

    topic: str
    default_topic: str | None = None
    read_queue_nums: int = 8
    write_queue_nums: int = 8
    perm: int = PERM_READ_WRITE
    topic_filter_type: str = "SINGLE_TAG"
    topic_sys_flag: int = 0
    order: bool = False
    attributes: str | None = None
    """Attribute changes, ``+key=value,-key`` (``krocket.common.topic_attributes``); None keeps the topic's."""


@dataclass(slots=True)
class TopicHeader(RequestHeader):
    """DELETE_TOPIC_IN_BROKER (215) and GET_TOPIC_CONFIG (351): one topic."""

    topic: str


DeleteTopicInBrokerHeader = TopicHeader
GetTopicConfigHeader = TopicHeader


@dataclass(slots=True)
class ViewMessageHeader(RequestHeader):
    """VIEW_MESSAGE_BY_ID (33): a commit log offset, or an offset message id that holds one."""

    offset: int = -1
    msg_id: str | None = None


@dataclass(slots=True)
class QueryMessageHeader(RequestHeader):
    """QUERY_MESSAGE (12): messages of a topic by key, stored in a time range."""

    topic: str
    key: str
    max_num: int = 32
    begin_timestamp: int = 0
    end_timestamp: int = 2**62
