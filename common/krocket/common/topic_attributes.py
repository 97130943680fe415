"""Topic attributes (RocketMQ 5's ``TopicConfig.attributes``), and their form in UPDATE_AND_CREATE_TOPIC's
``attributes`` header: ``+key=value`` sets a key, ``-key`` removes one, comma separated (RocketMQ's
``AttributeParser``). krocket knows ``message.type`` (``krocket.common.message_type``); other keys are refused,
as RocketMQ refuses keys it does not support."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from krocket.common.errors import MessageIllegalError
from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE, TOPIC_MESSAGE_TYPES

SUPPORTED_VALUES: Final[dict[str, tuple[str, ...]]] = {MESSAGE_TYPE_ATTRIBUTE: TOPIC_MESSAGE_TYPES}
"""Attribute key -> the values it takes."""


def validate_attributes(attributes: Mapping[str, str]) -> None:
    """``MessageIllegalError`` naming an unknown key or a value the key does not take."""
    for key, value in attributes.items():
        allowed = SUPPORTED_VALUES.get(key)
        if allowed is None:
            raise MessageIllegalError(f"unsupported topic attribute {key!r}; supported: {', '.join(SUPPORTED_VALUES)}")
        if value not in allowed:
            raise MessageIllegalError(f"topic attribute {key} must be one of {', '.join(allowed)}, got {value!r}")


def format_attribute_changes(set_values: Mapping[str, str], remove: tuple[str, ...] = ()) -> str:
    """The header form of setting ``set_values`` and removing ``remove``."""
    return ",".join([*(f"+{k}={v}" for k, v in sorted(set_values.items())), *(f"-{k}" for k in remove)])


def apply_attribute_changes(current: Mapping[str, str], changes: str | None) -> dict[str, str]:
    """``current`` with the header's changes applied (None or "": unchanged); ``MessageIllegalError`` on a
    malformed entry, an unknown key or a wrong value."""
    result = dict(current)
    for entry in (changes or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("+") and "=" in entry:
            key, _, value = entry[1:].partition("=")
            if not key:
                raise MessageIllegalError(f"topic attribute entry {entry!r} has no key")
            result[key] = value
        elif entry.startswith("-") and "=" not in entry and len(entry) > 1:
            result.pop(entry[1:], None)
        else:
            raise MessageIllegalError(f"topic attribute entry {entry!r} must be +key=value or -key")
    validate_attributes(result)
    return result
