"""Headers of the requests a broker serves besides sends: pulls, offsets, clients, topics, messages.

Defaults are what the broker assumes for a field the request leaves out; a field without one is required.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from krocket.common.codes import PERM_READ_WRITE
from krocket.common.headers.fields import RequestHeader, wire_name


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
