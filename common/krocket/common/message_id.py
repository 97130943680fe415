"""Message ids and the 8-byte host form of records: offset ids (store host + commit log offset) and the
producer's unique ids, both 32 upper-case hex characters as RocketMQ writes them."""

from __future__ import annotations

import itertools
import os
import random
import socket
import struct
import time

HOST_BYTES = 8  # IPv4 address + big-endian i32 port
LOOPBACK_HOST = b"\x7f\x00\x00\x01"


def pack_host(addr: tuple[str, int] | str) -> bytes:
    """IPv4 host and port in a record's 8-byte form."""
    if isinstance(addr, str):
        host, _, port = addr.rpartition(":")
        addr = (host, int(port))
    try:
        ip = socket.inet_aton(addr[0])
    except OSError:
        try:
            ip = socket.inet_aton(socket.gethostbyname(addr[0]))
        except OSError:
            ip = LOOPBACK_HOST
    return ip + struct.pack(">i", addr[1])


def unpack_host(raw: bytes) -> str:
    return f"{socket.inet_ntoa(raw[:4])}:{struct.unpack('>i', raw[4:8])[0]}"


_HOST_CACHE: dict[bytes, str] = {}


def host_text(raw: bytes) -> str:
    """``ip:port`` of a record's 8-byte host field (cached: a consumer sees few distinct hosts)."""
    text = _HOST_CACHE.get(raw)
    if text is None:
        if len(_HOST_CACHE) > 4096:
            _HOST_CACHE.clear()
        text = _HOST_CACHE[raw] = unpack_host(raw)
    return text


def offset_msg_id(store_host: bytes, commit_log_offset: int) -> str:
    """The offset message id: store host (ip + port) and the commit log offset, in upper-case hex."""
    return f"{store_host.hex().upper()}{commit_log_offset & 0xFFFFFFFFFFFFFFFF:016X}"


def decode_offset_msg_id(msg_id: str) -> tuple[str, int]:
    raw = bytes.fromhex(msg_id)
    if len(raw) != 16:
        raise ValueError(f"message id {msg_id!r} is not 32 hex characters")
    return unpack_host(raw[:8]), struct.unpack(">q", raw[8:])[0]


class UniqueIdGenerator:
    """Client-side unique message ids in RocketMQ's 32-hex-character layout."""

    def __init__(self) -> None:
        try:
            ip = socket.inet_aton(socket.gethostbyname(socket.gethostname()))
        except OSError:
            ip = LOOPBACK_HOST
        self._prefix = (
            (ip + struct.pack(">H", os.getpid() & 0xFFFF) + struct.pack(">I", random.getrandbits(32))).hex().upper()
        )
        self._counter = itertools.count(random.randrange(0, 0xFFFF))
        now = time.localtime()
        self._month_start = time.mktime((now.tm_year, now.tm_mon, 1, 0, 0, 0, 0, 0, -1))

    def next_id(self) -> str:
        millis = int((time.time() - self._month_start) * 1000) & 0xFFFFFFFF
        return f"{self._prefix}{millis:08X}{next(self._counter) & 0xFFFF:04X}"
