"""Raw remoting calls for tests that speak the protocol directly."""

from __future__ import annotations

from typing import Any

from krocket.common.codes import PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND, RequestCode, ResponseCode
from krocket.common.headers import PullMessageHeader, RequestHeader, SendMessageHeader
from krocket.common.message import encode_properties
from krocket.common.record import decode_records
from krocket.common.remoting import ConnectionPool, RemotingCommand, header_fields


async def call(
    pool: ConnectionPool,
    addr: str,
    code: int,
    fields: RequestHeader | dict[str, Any] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
) -> RemotingCommand:
    """One request; ``fields`` is a typed header, or a raw dict for a request a test builds by hand."""
    ext = fields.to_fields() if isinstance(fields, RequestHeader) else header_fields(fields or {})
    return await pool.request(addr, RemotingCommand(code, ext_fields=ext, body=body), timeout)


async def send(
    pool: ConnectionPool,
    addr: str,
    topic: str,
    body: bytes,
    queue_id: int = 0,
    properties: dict[str, str] | None = None,
) -> RemotingCommand:
    header = SendMessageHeader(
        producer_group="test-producer",
        topic=topic,
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=queue_id,
        sys_flag=0,
        born_timestamp=0,
        flag=0,
        properties=encode_properties(properties or {}).decode(),
        reconsume_times=0,
        unit_mode=False,
        batch=False,
    )
    cmd = RemotingCommand(RequestCode.SEND_MESSAGE_V2, ext_fields=header.to_v2_fields(), body=body)
    return await pool.request(addr, cmd, 5.0)


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
    header = PullMessageHeader(
        consumer_group=group,
        topic=topic,
        queue_id=queue_id,
        queue_offset=offset,
        max_msg_nums=max_nums,
        sys_flag=PULL_FLAG_SUBSCRIPTION | (PULL_FLAG_SUSPEND if suspend_ms else 0),
        commit_offset=0,
        suspend_timeout_millis=suspend_ms,
        subscription=expression,
        sub_version=0,
        expression_type="TAG",
    )
    return await call(pool, addr, RequestCode.PULL_MESSAGE, header, timeout=timeout)


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
