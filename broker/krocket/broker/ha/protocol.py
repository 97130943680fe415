"""HA wire format (RocketMQ's shape): the slave reports its commit log end as one big-endian i64; the master
sends frames of ``phyOffset:i64 | size:i32 | bytes`` (size 0 is a heartbeat).

A krocket slave says its broker id right after its first report, as one more i64: ``HELLO_BASE - brokerId``, so
the master labels its replication metrics by the slave's broker id rather than its ephemeral client port. The
value is negative, so no offset is ever mistaken for it, and a master from before the hello ignores it (a report
counts only when it is above the offset already acked): slaves can be upgraded before their master, as the
operator rolls them. A slave that sends no hello (an older one) is served as before, its id unknown.
"""

from __future__ import annotations

import struct

REPORT = struct.Struct(">q")
HELLO_BASE = -0x4B524F434B4554  # "KROCKET", negated; a hello is HELLO_BASE - brokerId (brokerId >= 0)


def hello(broker_id: int) -> int:
    """The report value that says ``broker_id``."""
    return HELLO_BASE - broker_id


def hello_broker_id(report: int) -> int | None:
    """The broker id a report says, or None when it is an offset."""
    return HELLO_BASE - report if report <= HELLO_BASE else None


FRAME_HEADER = struct.Struct(">qi")
MAX_FRAME_BYTES = 1024 * 1024
HEARTBEAT_S = 5.0
