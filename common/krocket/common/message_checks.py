"""What a send may carry: the checks that make "acked" mean "can be read back as sent".

Pure functions, used at the broker's door (before anything is stored) and by krocket.client (before anything is
sent). A refusal is an ``InvalidMessageError`` (MESSAGE_ILLEGAL) or, for a commit or rollback transaction type
on a send, a ``TransactionNotSupportedError`` (NO_PERMISSION: those types come only with END_TRANSACTION);
both are ``ValueError``s whose ``field`` names what is wrong. A half message (``TRAN_MSG=true`` with a ``PGROUP``;
the prepared type only with them) is allowed: ``check_transaction``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from krocket.common.errors import MessageIllegalError, NoPermissionError
from krocket.common.message import (
    MAX_PROPERTIES_BYTES,
    NAME_VALUE_SEPARATOR,
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_SEPARATOR,
    PROPERTY_TRANSACTION_PREPARED,
)
from krocket.common.record import (
    SYSFLAG_ALLOWED,
    SYSFLAG_COMPRESSED,
    SYSFLAG_COMPRESSION_TYPE_MASK,
    SYSFLAG_COMPRESSION_ZLIB,
    SYSFLAG_HOSTS_V6,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_PREPARED,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TRANSACTIONS_NOT_SUPPORTED = "a transaction's commit or rollback is sent with END_TRANSACTION (37), not as a message"


class InvalidMessageError(MessageIllegalError, ValueError):
    """A message that would not be read back as it was sent; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class TransactionNotSupportedError(NoPermissionError, ValueError):
    """A commit or rollback transaction type on a send: only END_TRANSACTION decides a half message."""

    def __init__(self, sys_flag: int) -> None:
        super().__init__(f"sysFlag 0x{sys_flag:x}: {TRANSACTIONS_NOT_SUPPORTED}")
        self.field = "sysFlag"


# -- sysFlag -----------------------------------------------------------------------------------------------
def check_sys_flag(sys_flag: int) -> int:
    """The sysFlag to store for a send that says ``sys_flag``. Only RocketMQ's message bits are allowed; the
    IPv6 host bits are cleared, because the broker records the hosts itself, in the IPv4 layout."""
    if sys_flag < 0 or sys_flag & ~SYSFLAG_ALLOWED:
        raise InvalidMessageError("sysFlag", f"0x{sys_flag & 0xFFFFFFFF:x} has bits a message may not carry")
    if (sys_flag & SYSFLAG_TRANSACTION_MASK) not in (0, SYSFLAG_TRANSACTION_PREPARED):
        raise TransactionNotSupportedError(sys_flag)
    kind = sys_flag & SYSFLAG_COMPRESSION_TYPE_MASK
    if kind and (kind != SYSFLAG_COMPRESSION_ZLIB or not sys_flag & SYSFLAG_COMPRESSED):
        raise InvalidMessageError("sysFlag", f"0x{sys_flag:x}: only zlib compression is supported")
    return sys_flag & ~SYSFLAG_HOSTS_V6


def check_transaction(sys_flag: int, properties: Mapping[str, str], batch: bool = False) -> bool:
    """Whether a send (its sysFlag already through ``check_sys_flag``) is a half message: ``TRAN_MSG=true`` says
    so, as Apache RocketMQ's broker decides (its clients set the prepared type too), and it needs a producer
    group (PGROUP) to check back with. The prepared type without ``TRAN_MSG`` is refused: stored, it would
    never be read. A batch holds no half message."""
    flagged = sys_flag & SYSFLAG_TRANSACTION_MASK == SYSFLAG_TRANSACTION_PREPARED
    marked = properties.get(PROPERTY_TRANSACTION_PREPARED, "").lower() == "true"
    if not flagged and not marked:
        return False
    if batch:
        raise InvalidMessageError("sysFlag", "a batch may not hold transactional (half) messages")
    if not marked:
        raise InvalidMessageError("sysFlag", f"0x{sys_flag:x} is a half message but TRAN_MSG is not true")
    if not properties.get(PROPERTY_PRODUCER_GROUP):
        raise InvalidMessageError("properties", "a half message needs its producer group (PGROUP)")
    return True


def check_int32(field: str, value: int) -> int:
    if not INT32_MIN <= value <= INT32_MAX:
        raise InvalidMessageError(field, f"{value} does not fit a 32-bit integer")
    return value


def check_int64(field: str, value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidMessageError(field, f"{value} does not fit a 64-bit integer")
    return value


# -- properties --------------------------------------------------------------------------------------------
def check_property(key: str, value: str) -> None:
    """One property as a producer means it: a non-empty key, neither part holding a separator, both UTF-8."""
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidMessageError(f"property {key!r}", "keys and values must be strings")
    if not key:
        raise InvalidMessageError("property ''", "a property key must not be empty")
    for part, text in (("key", key), ("value", value)):
        if NAME_VALUE_SEPARATOR in text or PROPERTY_SEPARATOR in text:
            raise InvalidMessageError(f"property {key!r}", f"the {part} contains a property separator (\\x01 or \\x02)")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidMessageError(f"property {key!r}", f"the {part} is not encodable as UTF-8") from None


def check_properties(properties: Mapping[str, str]) -> None:
    """The properties a producer sends (krocket.client): each pair, and their encoded size."""
    size = 0
    for key, value in properties.items():
        check_property(key, value)
        size += len(key.encode()) + len(value.encode()) + 2
    if size > MAX_PROPERTIES_BYTES:
        raise InvalidMessageError("properties", f"{size} bytes encoded; at most {MAX_PROPERTIES_BYTES} allowed")


def check_raw_properties(raw: str | bytes) -> dict[str, str]:
    """The properties of a send as encoded on the wire (``k\\x01v\\x02`` pairs), decoded, when they decode to
    pairs that encode back to the same text: every pair has exactly one ``\\x01``, keys are non-empty and
    distinct, nothing but the last separator is empty, and the text is valid UTF-8."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidMessageError("properties", f"not valid UTF-8 at byte {exc.start}") from None
        size = len(raw)
    else:
        text = raw
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:
            raise InvalidMessageError("properties", f"not encodable as UTF-8 at character {exc.start}") from None
    if size > MAX_PROPERTIES_BYTES:
        raise InvalidMessageError("properties", f"{size} bytes encoded; at most {MAX_PROPERTIES_BYTES} allowed")
    result: dict[str, str] = {}
    if not text:
        return result
    items = text.split(PROPERTY_SEPARATOR)
    if items[-1] == "":
        items.pop()
    for index, item in enumerate(items):
        key, sep, value = item.partition(NAME_VALUE_SEPARATOR)
        name = f"property {key!r}" if key else f"property #{index}"
        if not sep:
            raise InvalidMessageError(name, "a pair without a name-value separator (\\x01)")
        if not key:
            raise InvalidMessageError(name, "a property key must not be empty")
        if NAME_VALUE_SEPARATOR in value:
            raise InvalidMessageError(name, "more than one name-value separator (\\x01) in a pair")
        if key in result:
            raise InvalidMessageError(name, "the key appears twice")
        result[key] = value
    return result


# -- bodies ------------------------------------------------------------------------------------------------
def check_compressed_body(body: bytes | bytearray | memoryview, limit: int) -> int:
    """The inflated size of a body flagged compressed: it must be one whole zlib stream, nothing after it,
    inflating to at most ``limit`` bytes (inflated with that bound, so a zlib bomb costs nothing)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidMessageError("body", f"flagged compressed but does not inflate: {exc}") from None
    if len(out) > limit:
        raise InvalidMessageError("body", f"inflates to more than {limit} bytes (maxMessageSize)")
    if not inflater.eof:
        raise InvalidMessageError("body", "flagged compressed but the zlib stream is incomplete")
    if inflater.unused_data:
        raise InvalidMessageError("body", f"{len(inflater.unused_data)} bytes follow the zlib stream")
    return len(out)
