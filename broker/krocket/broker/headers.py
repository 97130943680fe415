"""Reading request headers (extFields) with clear errors for missing or malformed fields."""

from __future__ import annotations

import builtins

from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError

# SEND_MESSAGE_V2 (310) uses one-letter names for SEND_MESSAGE's header fields.
SEND_V2_NAMES = {
    "a": "producerGroup",
    "b": "topic",
    "c": "defaultTopic",
    "d": "defaultTopicQueueNums",
    "e": "queueId",
    "f": "sysFlag",
    "g": "bornTimestamp",
    "h": "flag",
    "i": "properties",
    "j": "reconsumeTimes",
    "k": "unitMode",
    "l": "maxReconsumeTimes",
    "m": "batch",
    "n": "brokerName",
}


class HeaderError(KrocketError):
    code = ResponseCode.SYSTEM_ERROR


_SEND_V2_SHORT = {long: short for short, long in SEND_V2_NAMES.items()}


class Header:
    """A request's extFields read by field name; SEND_MESSAGE_V2's one-letter names are read by their long
    names through ``names`` (no copy of the fields)."""

    __slots__ = ("_fields", "_names")

    def __init__(self, fields: dict[str, str], names: dict[str, str] | None = None) -> None:
        self._fields = fields
        self._names = names

    @classmethod
    def for_send(cls, fields: dict[str, str]) -> Header:
        if "b" in fields and "topic" not in fields:
            return cls(fields, _SEND_V2_SHORT)
        return cls(fields)

    def _get(self, name: str) -> str | None:
        names = self._names
        return self._fields.get(names.get(name, name) if names is not None else name)

    def str(self, name: str, default: str | None = None) -> str:
        value = self._get(name)
        if value is None:
            if default is None:
                raise HeaderError(f"request header lacks the field {name!r}")
            return default
        return value

    def opt(self, name: builtins.str) -> builtins.str | None:
        return self._get(name)

    def int(self, name: builtins.str, default: builtins.int | None = None) -> builtins.int:
        value = self._get(name)
        if value is None or value == "":
            if default is None:
                raise HeaderError(f"request header lacks the integer field {name!r}")
            return default
        try:
            return int(value)
        except ValueError:
            raise HeaderError(f"request header field {name!r} must be an integer, got {value!r}") from None

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self._get(name)
        if value is None:
            return default
        return value.lower() in ("true", "1")  # the C++ client sends "1"
