"""HA wire format (RocketMQ's shape): the slave reports its commit log end as one big-endian i64; the master
sends frames of ``phyOffset:i64 | size:i32 | bytes`` (size 0 is a heartbeat).

krocket's slaves open with a hello, ``HELLO:i64 | brokerId:i64``, before their first report, so the master labels
its replication metrics by the slave's broker id rather than its ephemeral client port. ``HELLO`` is negative, so
no offset is ever mistaken for it; a slave that sends no hello (an older one) is served as before, its id unknown.
"""

from __future__ import annotations

import struct

REPORT = struct.Struct(">q")
HELLO = -0x4B524F434B4554  # "KROCKET", negated: the first i64 of a slave that says its broker id next
FRAME_HEADER = struct.Struct(">qi")
MAX_FRAME_BYTES = 1024 * 1024
HEARTBEAT_S = 5.0
