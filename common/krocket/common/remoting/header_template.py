"""Header templates: the JSON header ``encode_header`` makes of a command, as a ``%`` format whose slots take the
values that change per request or reply (opaque, offsets, ids). A template is derived from the general encoder
itself, with marker values where the slots go, so it holds exactly what that encoder writes: key order,
separators, escapes, language, version. Formatting a template costs a fraction of building and encoding a header.
"""

from __future__ import annotations

from collections.abc import Sequence

from krocket.common.remoting.command import RemotingCommand, encode_header


def header_template(probe: RemotingCommand, slots: Sequence[tuple[bytes, bytes]], what: str) -> bytes:
    """``encode_header(probe)`` with each marker of ``slots`` (each there exactly once, in the order given, as the
    format arguments will be) replaced by its ``%`` slot; every other ``%`` is escaped. ``what`` names the
    template in the error raised when the markers are not found so."""
    raw = encode_header(probe).replace(b"%", b"%%")
    positions = []
    for marker, slot in slots:
        if raw.count(marker) != 1:
            raise AssertionError(f"{what} template: marker {marker!r} is not there exactly once")
        positions.append(raw.index(marker))
        raw = raw.replace(marker, slot)
    if positions != sorted(positions):
        raise AssertionError(f"{what} template: the fields are not in the expected order")
    return raw
