"""Topic configuration and name rules (RocketMQ's ``TopicConfig`` and topic validation)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from krocket.common.codes import PERM_READ, PERM_READ_WRITE, PERM_WRITE
from krocket.common.errors import MessageIllegalError
from krocket.common.topic_attributes import validate_attributes

AUTO_CREATE_TOPIC_KEY = "TBW102"
DEFAULT_QUEUE_NUMS = 8
MAX_QUEUE_NUMS = 1024
MAX_TOPICS_PER_BATCH = 1000
"""Topics in one bulk request (UPDATE_AND_CREATE_TOPIC_LIST, the HTTP batch): clients send more in several."""
MAX_TOPIC_LENGTH = 127
MAX_GROUP_LENGTH = 120
RETRY_GROUP_PREFIX = "%RETRY%"
DLQ_GROUP_PREFIX = "%DLQ%"
SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"  # delayed messages wait here, queue = delay level - 1
TIMER_TOPIC = "KROCKET_SYS_TIMER"  # krocket's 5.x timers: queue k delays 100 ms * 2**k (see broker schedule/)

# Topics the brokers own: refused by ``krocket topic create|update|delete`` unless ``--force``. The names of
# krocket.common.transaction's topics are repeated here (that module imports this one).
SYSTEM_TOPICS = frozenset(
    {
        AUTO_CREATE_TOPIC_KEY,
        SCHEDULE_TOPIC,
        TIMER_TOPIC,
        "RMQ_SYS_TRANS_HALF_TOPIC",
        "RMQ_SYS_TRANS_OP_HALF_TOPIC",
        "TRANS_CHECK_MAX_TIME_TOPIC",
        "RMQ_SYS_TRACE_TOPIC",
        "OFFSET_MOVED_EVENT",
        "SELF_TEST_TOPIC",
    }
)
SYSTEM_TOPIC_PREFIXES = ("RMQ_SYS_", "rmq_sys_", "KROCKET_SYS_", RETRY_GROUP_PREFIX, DLQ_GROUP_PREFIX)

_TOPIC_RE = re.compile(r"^[%|a-zA-Z0-9_-]+$")
_GROUP_RE = re.compile(r"^[%|a-zA-Z0-9_.:-]+$")
_BROKER_NAME_RE = re.compile(r"^[a-zA-Z0-9_.:-]+$")
MAX_BROKER_NAME_LENGTH = 127


def validate_topic(topic: str) -> None:
    """Raise ``MessageIllegalError`` naming the rule when ``topic`` is not a legal topic name."""
    if not topic:
        raise MessageIllegalError("topic name is empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise MessageIllegalError(f"topic name is {len(topic)} characters; at most {MAX_TOPIC_LENGTH} allowed")
    if not _TOPIC_RE.match(topic):
        raise MessageIllegalError(f"topic name {topic!r} may only contain letters, digits, '%', '|', '-', '_'")


def validate_group(group: str) -> None:
    if not group:
        raise MessageIllegalError("group name is empty")
    if len(group) > MAX_GROUP_LENGTH:
        raise MessageIllegalError(f"group name is {len(group)} characters; at most {MAX_GROUP_LENGTH} allowed")
    if not _GROUP_RE.match(group):
        raise MessageIllegalError(f"group name {group!r} contains illegal characters")


def validate_broker_name(what: str, name: str) -> None:
    """A broker or cluster name as a registration carries it (``what`` says which): letters, digits, '_', '.',
    ':' and '-', as Kubernetes object names and RocketMQ's defaults (``broker-a``, ``DefaultCluster``) use."""
    if not name:
        raise MessageIllegalError(f"{what} is empty")
    if len(name) > MAX_BROKER_NAME_LENGTH:
        raise MessageIllegalError(f"{what} is {len(name)} characters; at most {MAX_BROKER_NAME_LENGTH} allowed")
    if not _BROKER_NAME_RE.match(name):
        raise MessageIllegalError(f"{what} {name!r} may only contain letters, digits, '_', '.', ':', '-'")


def is_system_topic(topic: str) -> bool:
    """A topic the brokers create and use themselves (the auto-create template, delays, timers, transactions,
    retries and dead letters, RocketMQ's RMQ_SYS_* topics)."""
    return topic in SYSTEM_TOPICS or topic.startswith(SYSTEM_TOPIC_PREFIXES)


def check_queue_nums(read_queue_nums: int, write_queue_nums: int) -> None:
    """The broker's rule for a topic's queue counts (``BrokerService.create_topic``): at least one read queue,
    write queues between 1 and the read queues (a producer writes only queues consumers read)."""
    if not 1 <= read_queue_nums <= MAX_QUEUE_NUMS:
        raise MessageIllegalError(f"readQueueNums must be between 1 and {MAX_QUEUE_NUMS}, got {read_queue_nums}")
    if not 1 <= write_queue_nums <= read_queue_nums:
        raise MessageIllegalError(
            f"writeQueueNums must be between 1 and readQueueNums ({read_queue_nums}), got {write_queue_nums}"
        )


def retry_topic(group: str) -> str:
    return RETRY_GROUP_PREFIX + group


def is_readable(perm: int) -> bool:
    return bool(perm & PERM_READ)


def is_writeable(perm: int) -> bool:
    return bool(perm & PERM_WRITE)


@dataclass(slots=True)
class TopicConfig:
    topic_name: str
    read_queue_nums: int = DEFAULT_QUEUE_NUMS
    write_queue_nums: int = DEFAULT_QUEUE_NUMS
    perm: int = PERM_READ_WRITE
    topic_filter_type: str = "SINGLE_TAG"
    topic_sys_flag: int = 0
    order: bool = False
    attributes: dict[str, str] = field(default_factory=dict)
    """RocketMQ 5's topic attributes (``krocket.common.topic_attributes``), e.g. ``message.type``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "topicName": self.topic_name,
            "readQueueNums": self.read_queue_nums,
            "writeQueueNums": self.write_queue_nums,
            "perm": self.perm,
            "topicFilterType": self.topic_filter_type,
            "topicSysFlag": self.topic_sys_flag,
            "order": self.order,
            "attributes": dict(sorted(self.attributes.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TopicConfig:
        config = cls(
            topic_name=str(data["topicName"]),
            read_queue_nums=int(data.get("readQueueNums", DEFAULT_QUEUE_NUMS)),
            write_queue_nums=int(data.get("writeQueueNums", DEFAULT_QUEUE_NUMS)),
            perm=int(data.get("perm", PERM_READ_WRITE)),
            topic_filter_type=str(data.get("topicFilterType", "SINGLE_TAG")),
            topic_sys_flag=int(data.get("topicSysFlag", 0)),
            order=_as_bool(data.get("order", False)),
            attributes=_attributes(data.get("attributes")),
        )
        config.validate()
        return config

    def validate(self) -> None:
        validate_topic(self.topic_name)
        for name, value in (("readQueueNums", self.read_queue_nums), ("writeQueueNums", self.write_queue_nums)):
            if not 0 <= value <= MAX_QUEUE_NUMS:
                raise MessageIllegalError(f"{name} must be between 0 and {MAX_QUEUE_NUMS}, got {value}")
        if not 0 <= self.perm <= 15:
            raise MessageIllegalError(f"perm must be a combination of READ=4, WRITE=2, INHERIT=1, got {self.perm}")
        validate_attributes(self.attributes)


def _attributes(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageIllegalError(f"topic attributes must be an object, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
