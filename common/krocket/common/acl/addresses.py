"""Remote address patterns of plain_acl.yml (``whiteRemoteAddress``, ``globalWhiteRemoteAddresses``).

RocketMQ's forms: ``*`` (any address), an exact address (``192.168.0.1``, IPv6 too), IPv4 with ``*`` or a
range ``a-b`` in a segment (``10.10.103.*``, ``10.10.1-20.*``), and a set in the last segment
(``192.168.0.{100,101}``). An empty pattern matches nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

Segment = Callable[[int], bool]


def _any(_: int) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class AddressPattern:
    text: str
    _segments: tuple[Segment, ...] | None  # None: ``*``; () : matches nothing
    _exact: str | None = None

    def matches(self, host: str) -> bool:
        if self._segments is None:
            return True
        if self._exact is not None:
            return _normalize(host) == self._exact
        parts = host.split(".")
        if len(parts) != 4 or not self._segments:
            return False
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            return False
        return all(seg(n) for seg, n in zip(self._segments, numbers, strict=True))


def _normalize(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


def _octet(text: str, pattern: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise ValueError(f"{pattern!r}: {text!r} is not a number from 0 to 255")
    return int(text)


def _segment(text: str, pattern: str, last: bool) -> Segment:
    if text == "*":
        return _any
    if text.startswith("{") and text.endswith("}"):
        if not last:
            raise ValueError(f"{pattern!r}: a {{...}} set is allowed in the last segment only")
        allowed = frozenset(_octet(t.strip(), pattern) for t in text[1:-1].split(","))
        return allowed.__contains__
    if "-" in text:
        low_text, _, high_text = text.partition("-")
        low, high = _octet(low_text, pattern), _octet(high_text, pattern)
        if low > high:
            raise ValueError(f"{pattern!r}: range {text!r} is empty")
        return lambda n: low <= n <= high
    value = _octet(text, pattern)
    return value.__eq__


def parse_pattern(text: str) -> AddressPattern:
    """One pattern; raises ``ValueError`` saying what is wrong with it."""
    pattern = text.strip()
    if not pattern:
        return AddressPattern(text, ())
    if pattern in ("*", "*.*.*.*", "*:*:*:*:*:*:*:*"):
        return AddressPattern(text, None)
    try:
        return AddressPattern(text, (), str(ipaddress.ip_address(pattern.strip("[]"))))
    except ValueError:
        pass
    parts = pattern.split(".")
    if len(parts) < 4 and parts[-1] == "*":
        parts += ["*"] * (4 - len(parts))
    if len(parts) != 4:
        raise ValueError(f"{pattern!r} is not an address pattern like 10.10.103.* or 192.168.0.{{100,101}}")
    segments = tuple(_segment(p, pattern, i == 3) for i, p in enumerate(parts))
    return AddressPattern(text, segments)


def host_of(peer: str) -> str:
    """The host part of a ``host:port`` peer (``[v6]:port`` and asyncio's ``v6:port`` too)."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")]
    return peer.rpartition(":")[0] if ":" in peer else peer
