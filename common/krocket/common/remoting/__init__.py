"""RocketMQ 4.x remoting: frame codec and asyncio transport."""

from krocket.common.remoting.command import (
    MAX_FRAME_BYTES,
    SERIALIZE_JSON,
    SERIALIZE_ROCKETMQ,
    FrameDecoder,
    RemotingCommand,
    decode_frame,
    encode,
    header_fields,
)
from krocket.common.remoting.transport import Connection, ConnectionPool, RemotingServer

__all__ = [
    "MAX_FRAME_BYTES",
    "SERIALIZE_JSON",
    "SERIALIZE_ROCKETMQ",
    "Connection",
    "ConnectionPool",
    "FrameDecoder",
    "RemotingCommand",
    "RemotingServer",
    "decode_frame",
    "encode",
    "header_fields",
]
