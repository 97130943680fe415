"""Reading request headers (extFields) with clear errors for missing or malformed fields."""

from __future__ import annotations

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


class Header:
    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields

    @classmethod
    def for_send(cls, fields: dict[str, str]) -> Header:
        if "b" in fields and "topic" not in fields:
            return _SendV2Header(fields)
        return cls(fields)

    def str(self, name: str, default: str | None = None) -> str:
        value = self._fields.get(name)
        if value is None:
            if default is None:
                raise HeaderError(f"request header lacks the field {name!r}")
            return default
        return value

    def opt(self, name: str) -> str | None:
        return self._fields.get(name)

    def int(self, name: str, default: int | None = None) -> int:
        value = self._fields.get(name)
        if value is None or value == "":
            if default is None:
                raise HeaderError(f"request header lacks the integer field {name!r}")
            return default
        try:
            return int(value)
        except ValueError:
            raise HeaderError(f"request header field {name!r} must be an integer, got {value!r}") from None

    def bool(self, name: str, default: bool = False) -> bool:
        value = self._fields.get(name)
        if value is None:
            return default
        return value.lower() in ("true", "1")  # the C++ client sends "1"


_SEND_V2_SHORT = {long: short for short, long in SEND_V2_NAMES.items()}


class _SendV2Header(Header):
    """SEND_MESSAGE_V2's one-letter fields read by their long names, without copying the dict."""

    __slots__ = ()

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(_ShortNames(fields))


class _ShortNames(dict):  # type: ignore[type-arg]
    __slots__ = ("_short",)

    def __init__(self, short: dict[str, str]) -> None:
        super().__init__()
        self._short = short

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._short.get(_SEND_V2_SHORT.get(name, name))
        return default if value is None else value
