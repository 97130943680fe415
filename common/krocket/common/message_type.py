"""RocketMQ 5's topic message types: a topic's ``message.type`` attribute says which kinds of 5.x messages it takes
(RocketMQ's proxy refuses others with MESSAGE_PROPERTY_CONFLICT_WITH_TYPE); unset means NORMAL, as in RocketMQ."""

from __future__ import annotations

from typing import Any, Final

MESSAGE_TYPE_ATTRIBUTE: Final = "message.type"
NORMAL: Final = "NORMAL"
FIFO: Final = "FIFO"
DELAY: Final = "DELAY"
TRANSACTION: Final = "TRANSACTION"
MIXED: Final = "MIXED"
TOPIC_MESSAGE_TYPES: Final = (NORMAL, FIFO, DELAY, TRANSACTION, MIXED)
DEFAULT_TOPIC_MESSAGE_TYPE: Final = NORMAL

_ACCEPTED: Final[dict[str, frozenset[str]]] = {
    NORMAL: frozenset({NORMAL}),
    FIFO: frozenset({FIFO}),
    DELAY: frozenset({DELAY}),
    TRANSACTION: frozenset({TRANSACTION}),
    MIXED: frozenset({NORMAL, FIFO, DELAY, TRANSACTION}),
}


def accepted_message_types(topic_type: str | None) -> frozenset[str]:
    """The 5.x message types a topic of ``topic_type`` takes (None or unknown: NORMAL's)."""
    return _ACCEPTED.get(topic_type or DEFAULT_TOPIC_MESSAGE_TYPE, _ACCEPTED[DEFAULT_TOPIC_MESSAGE_TYPE])


def topic_message_type(config: Any) -> str:
    """A topic config's ``message.type`` attribute, NORMAL when it has none."""
    attributes = getattr(config, "attributes", None) or {}
    return str(attributes.get(MESSAGE_TYPE_ATTRIBUTE) or DEFAULT_TOPIC_MESSAGE_TYPE)
