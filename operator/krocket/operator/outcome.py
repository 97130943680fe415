"""What a reconcile returns: the status to write, the events to emit and when to retry.

The reconcilers run the same way on create, update, resume, timers and child events (level-based);
the kopf handlers only relay their `Outcome`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    retry_after: float | None = None
    retry_message: str = ""
