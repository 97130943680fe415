"""Commit log bytes copied from a master: checked record by record before a slave appends them.

The master streams raw log bytes in chunks that may end inside a record; the splitter carries the incomplete
last record over to the next chunk, so every whole record is validated with the one record codec (and BLANK
padding must end a segment of this store's size) before it is dispatched.
"""

from __future__ import annotations

from krocket.common.errors import MessageIllegalError
from krocket.common.record import (
    BLANK_MAGIC,
    BLANK_MIN_BYTES,
    RECORD_MIN_BYTES,
    RecordError,
    RecordMeta,
    parse_record,
    peek_head,
)


class ReplicaRecordSplitter:
    def __init__(self, segment_bytes: int) -> None:
        self.segment_bytes = segment_bytes
        self._tail = bytearray()  # bytes of a record that the chunks so far hold only part of

    def split(self, at_offset: int, data: bytes) -> list[RecordMeta]:
        """Validate whole records in (carried tail + data); keeps an incomplete last record as the tail."""
        seg_bytes = self.segment_bytes
        buf = bytes(self._tail) + data if self._tail else data
        base = at_offset - len(self._tail)
        metas: list[RecordMeta] = []
        pos = 0
        n = len(buf)
        while n - pos >= BLANK_MIN_BYTES:
            phy = base + pos
            total, magic = peek_head(buf, pos)
            if magic == BLANK_MAGIC:
                if total != seg_bytes - phy % seg_bytes:
                    raise MessageIllegalError(
                        f"raw data has a BLANK record at {phy} that does not end a "
                        f"segment of {seg_bytes} bytes (segment sizes differ?)"
                    )
                if n - pos < total:
                    break
                pos += total
                continue
            if total < RECORD_MIN_BYTES:
                raise MessageIllegalError(f"raw data has an impossible record size {total} at {phy}")
            if n - pos < total:
                break
            try:
                metas.append(parse_record(buf, pos, phy, False))
            except RecordError as exc:
                raise MessageIllegalError(f"raw data is not valid commit log records: {exc}") from None
            pos += total
        self._tail = bytearray(buf[pos:])
        return metas
