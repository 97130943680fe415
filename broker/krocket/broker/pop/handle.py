"""Receipt handles: what a client acks a delivery by. Opaque to clients; here it names the delivery exactly (the
stored topic, queue and offset, the pop time) and says which broker holds it and until when it is valid."""

from __future__ import annotations

from dataclasses import dataclass

from krocket.common.errors import MessageIllegalError

HANDLE_VERSION = "k1"
MAX_HANDLE_LENGTH = 512


class InvalidReceiptHandle(MessageIllegalError):
    """A handle that does not parse, names another broker, or whose delivery is settled or expired."""


@dataclass(frozen=True, slots=True)
class ReceiptHandle:
    topic: str  # the stored topic (a pop retry topic when the message came from there)
    queue_id: int
    offset: int
    pop_ms: int  # when this delivery was handed out
    invisible_ms: int
    broker_name: str

    @property
    def due_ms(self) -> int:
        return self.pop_ms + self.invisible_ms

    def encode(self) -> str:
        return " ".join(
            (
                HANDLE_VERSION,
                str(self.pop_ms),
                str(self.invisible_ms),
                self.broker_name,
                str(self.queue_id),
                str(self.offset),
                self.topic,
            )
        )

    @classmethod
    def parse(cls, text: str) -> ReceiptHandle:
        if not text or len(text) > MAX_HANDLE_LENGTH:
            raise InvalidReceiptHandle("the receipt handle is empty or too long")
        parts = text.split(" ")
        if len(parts) != 7 or parts[0] != HANDLE_VERSION:
            raise InvalidReceiptHandle("the receipt handle was not given out by a krocket broker")
        try:
            pop_ms, invisible_ms, queue_id, offset = (int(parts[i]) for i in (1, 2, 4, 5))
        except ValueError:
            raise InvalidReceiptHandle("the receipt handle is malformed") from None
        if min(pop_ms, invisible_ms, queue_id, offset) < 0 or not parts[3] or not parts[6]:
            raise InvalidReceiptHandle("the receipt handle is malformed")
        return cls(parts[6], queue_id, offset, pop_ms, invisible_ms, parts[3])
