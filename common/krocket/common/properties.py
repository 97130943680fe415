"""Java properties text (``key=value`` lines): the body of GET_BROKER_CONFIG (26) and UPDATE_BROKER_CONFIG (25)."""

from __future__ import annotations

from krocket.common.errors import ConfigError


def properties_text(table: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in table.items())


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` (or ``key:value``) lines; ``#`` and ``!`` comments, blank lines and spaces around the
    separator allowed. ``ConfigError`` for a line without a key."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise ConfigError(f"properties line {line!r} is not key=value")
        out[key.strip()] = value.strip()
    return out
