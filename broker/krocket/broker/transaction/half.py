"""Pure transforms between a producer's half message, the record kept in the half topic, and the message a
commit delivers."""

from __future__ import annotations

from dataclasses import dataclass

from krocket.common.message import (
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TRANSACTION_CHECK_TIMES,
    PROPERTY_TRANSACTION_PREPARED,
    MessageExt,
)
from krocket.common.record import SYSFLAG_TRANSACTION_COMMIT, SYSFLAG_TRANSACTION_MASK
from krocket.common.transaction import HALF_TOPIC


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a message is stored and what it carries: topic, queue, properties, sysFlag."""

    topic: str
    queue_id: int
    properties: dict[str, str]
    sys_flag: int


def half_message(topic: str, queue_id: int, properties: dict[str, str], sys_flag: int) -> Placement:
    """A half message waits in the half topic's queue 0 as an ordinary record (no transaction type, so it is
    in that queue), its real topic and queue in REAL_TOPIC / REAL_QID."""
    props = dict(properties)
    props[PROPERTY_REAL_TOPIC] = topic
    props[PROPERTY_REAL_QUEUE_ID] = str(max(queue_id, 0))
    return Placement(HALF_TOPIC, 0, props, sys_flag & ~SYSFLAG_TRANSACTION_MASK)


def committed_message(half: MessageExt) -> Placement:
    """The message a commit stores: the real topic and queue, the commit type, and the producer's properties
    (UNIQ_KEY kept, so the id the producer saw finds it) without the half-message bookkeeping."""
    props = dict(half.properties)
    topic = props.pop(PROPERTY_REAL_TOPIC, half.topic)
    queue_id = int(props.pop(PROPERTY_REAL_QUEUE_ID, "0") or 0)
    props.pop(PROPERTY_TRANSACTION_PREPARED, None)
    props.pop(PROPERTY_TRANSACTION_CHECK_TIMES, None)
    sys_flag = (half.sys_flag & ~SYSFLAG_TRANSACTION_MASK) | SYSFLAG_TRANSACTION_COMMIT
    return Placement(topic, queue_id, props, sys_flag)


def check_times(half: MessageExt) -> int:
    """How often the half message was checked (TRANSACTION_CHECK_TIMES, carried by each put-back copy)."""
    try:
        return int(half.properties.get(PROPERTY_TRANSACTION_CHECK_TIMES, "0"))
    except ValueError:
        return 0


def checked_copy_properties(half: MessageExt) -> dict[str, str]:
    """The properties of the copy put back into the half topic when it is checked once more."""
    props = dict(half.properties)
    props[PROPERTY_TRANSACTION_CHECK_TIMES] = str(check_times(half) + 1)
    return props
