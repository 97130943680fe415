"""The pop log's records, one JSON body per commit-log message of ``KROCKET_SYS_POP_LOG`` queue 0 (pure).

- checkpoint ``ck``: messages of one queue handed out to a group at ``p`` (ms) for ``i`` ms, with their delivery
  attempts; it supersedes any earlier delivery of the same offsets (a changed invisible time, a renewal, a FIFO
  redelivery in place).
- ``ack``: the delivery of one offset popped at ``p`` is settled (acked, forwarded to the DLQ, or redelivered
  through the retry topic).
- rewind ``rw``: the group pops that queue again from ``o`` (a FIFO queue whose batch timed out); deliveries at
  or past it are dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from krocket.common.errors import MessageIllegalError

POP_LOG_TOPIC = "KROCKET_SYS_POP_LOG"
CHECKPOINT, ACK, REWIND = "ck", "ack", "rw"


@dataclass(slots=True)
class PopRecord:
    kind: str
    group: str
    topic: str
    queue_id: int
    offsets: list[int]
    pop_ms: int = 0
    invisible_ms: int = 0
    attempts: list[int] = field(default_factory=list)
    client_id: str = ""
    auto_renew: bool = False
    first_pop_ms: int = 0  # a renewal keeps the pop time of the handle the client holds

    def encode(self) -> bytes:
        out: dict[str, Any] = {"k": self.kind, "g": self.group, "t": self.topic, "q": self.queue_id, "o": self.offsets}
        if self.kind != REWIND:
            out["p"] = self.pop_ms
        else:
            out["a"] = self.attempts
        if self.kind == CHECKPOINT:
            out.update(i=self.invisible_ms, a=self.attempts, c=self.client_id, r=self.auto_renew)
            if self.first_pop_ms and self.first_pop_ms != self.pop_ms:
                out["f"] = self.first_pop_ms
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> PopRecord:
        try:
            raw = json.loads(body)
            kind = raw["k"]
            if kind not in (CHECKPOINT, ACK, REWIND):
                raise ValueError(kind)
            offsets = [int(o) for o in raw["o"]]
            record = cls(
                kind,
                str(raw["g"]),
                str(raw["t"]),
                int(raw["q"]),
                offsets,
                pop_ms=int(raw.get("p", 0)),
                invisible_ms=int(raw.get("i", 0)),
                attempts=[int(a) for a in raw.get("a", [])],
                client_id=str(raw.get("c", "")),
                auto_renew=bool(raw.get("r", False)),
                first_pop_ms=int(raw.get("f", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageIllegalError(f"not a pop log record: {exc}") from None
        if kind == REWIND and not offsets:
            raise MessageIllegalError("not a pop log record: a rewind names no offset")
        if kind == CHECKPOINT and len(record.attempts) != len(offsets):
            record.attempts = [1] * len(offsets)
        return record
