"""Raw remoting calls for tests that speak the protocol directly."""

from __future__ import annotations

from typing import Any

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.message import encode_properties
from krocket.common.record import decode_records
from krocket.common.remoting import ConnectionPool, RemotingCommand, header_fields


async def call(
    pool: ConnectionPool,
    addr: str,
    code: int,
    fields: dict[str, Any] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
) -> RemotingCommand:
    cmd = RemotingCommand(code, ext_fields=header_fields(fields or {}), body=body)
    return await pool.request(addr, cmd, timeout)


async def send(
    pool: ConnectionPool,
    addr: str,
    topic: str,
    body: bytes,
    queue_id: int = 0,
    properties: dict[str, str] | None = None,
) -> RemotingCommand:
    return await call(
        pool,
        addr,
        RequestCode.SEND_MESSAGE_V2,
        {
            "a": "test-producer",
            "b": topic,
            "c": "TBW102",
            "d": 4,
            "e": queue_id,
            "f": 0,
            "g": 0,
            "h": 0,
            "i": encode_properties(properties or {}).decode(),
            "j": 0,
            "k": False,
            "m": False,
        },
        body,
    )


async def pull(
    pool: ConnectionPool,
    addr: str,
    topic: str,
    queue_id: int,
    offset: int,
    max_nums: int = 32,
    suspend_ms: int = 0,
    expression: str = "*",
    group: str = "test-group",
    timeout: float = 30.0,
) -> RemotingCommand:
    sys_flag = 0x4 | (0x2 if suspend_ms else 0)
    return await call(
        pool,
        addr,
        RequestCode.PULL_MESSAGE,
        {
            "consumerGroup": group,
            "topic": topic,
            "queueId": queue_id,
            "queueOffset": offset,
            "maxMsgNums": max_nums,
            "sysFlag": sys_flag,
            "commitOffset": 0,
            "suspendTimeoutMillis": suspend_ms,
            "subscription": expression,
            "subVersion": 0,
            "expressionType": "TAG",
        },
        timeout=timeout,
    )


async def pull_all(pool: ConnectionPool, addr: str, topic: str, queue_id: int, offset: int = 0) -> list[Any]:
    """Every message of a queue from ``offset`` on."""
    out = []
    for _ in range(100_000):
        resp = await pull(pool, addr, topic, queue_id, offset)
        if resp.code != ResponseCode.SUCCESS:
            break
        out += decode_records(resp.body)
        offset = int(resp.ext_fields["nextBeginOffset"])
    return out
