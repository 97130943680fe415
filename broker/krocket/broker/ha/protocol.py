"""HA wire format (RocketMQ's shape): the slave reports its commit log end as one big-endian i64; the master
sends frames of ``phyOffset:i64 | size:i32 | bytes`` (size 0 is a heartbeat)."""

from __future__ import annotations

import struct

REPORT = struct.Struct(">q")
FRAME_HEADER = struct.Struct(">qi")
MAX_FRAME_BYTES = 1024 * 1024
HEARTBEAT_S = 5.0
