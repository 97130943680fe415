"""Requests to brokers, one function per remoting code (RocketMQ's MQClientAPIImpl, thin).

Each function builds the request, sends it through a ``ConnectionPool`` and turns the response into a
value, raising ``RemoteError`` for response codes the caller cannot use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from krocket.common.codes import (
    PULL_FLAG_COMMIT_OFFSET,
    PULL_FLAG_SUBSCRIPTION,
    PULL_FLAG_SUSPEND,
    RequestCode,
    ResponseCode,
)
from krocket.common.errors import RemoteError
from krocket.common.headers import (
    ConsumerGroupHeader,
    ConsumerSendMsgBackHeader,
    GetMaxOffsetHeader,
    GetMinOffsetHeader,
    PullMessageHeader,
    QueryConsumerOffsetHeader,
    RequestHeader,
    SearchOffsetHeader,
    SendMessageHeader,
    UnregisterClientHeader,
    UpdateConsumerOffsetHeader,
)
from krocket.common.record import UndecodableRecord, decode_pulled_records
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.route import loads_lenient

from .subscription import SubscriptionData
from .types import MessageQueue, PullResult, PullStatus, SendResult, SendStatus

log = logging.getLogger(__name__)

SEND_STATUS_BY_CODE: dict[int, SendStatus] = {
    ResponseCode.SUCCESS: SendStatus.SEND_OK,
    ResponseCode.FLUSH_DISK_TIMEOUT: SendStatus.FLUSH_DISK_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: SendStatus.FLUSH_SLAVE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: SendStatus.SLAVE_NOT_AVAILABLE,
}

_PULL_STATUS_BY_CODE: dict[int, PullStatus] = {
    ResponseCode.SUCCESS: PullStatus.FOUND,
    ResponseCode.PULL_NOT_FOUND: PullStatus.NO_NEW_MSG,
    ResponseCode.PULL_RETRY_IMMEDIATELY: PullStatus.NO_MATCHED_MSG,
    ResponseCode.PULL_OFFSET_MOVED: PullStatus.OFFSET_ILLEGAL,
}


def command(code: int, header: RequestHeader | None = None, body: bytes = b"") -> RemotingCommand:
    return RemotingCommand(code, ext_fields=header.to_fields() if header is not None else {}, body=body)


def send_command(header: SendMessageHeader, body: bytes, batch: bool = False) -> RemotingCommand:
    """SEND_MESSAGE_V2 (or SEND_BATCH_MESSAGE), the header under its one-letter names."""
    code = RequestCode.SEND_BATCH_MESSAGE if batch else RequestCode.SEND_MESSAGE_V2
    return RemotingCommand(code, ext_fields=header.to_v2_fields(), body=body)


async def invoke(
    pool: ConnectionPool,
    addr: str,
    code: int,
    header: RequestHeader | None = None,
    body: bytes = b"",
    timeout: float = 3.0,
    accept: tuple[int, ...] = (ResponseCode.SUCCESS,),
) -> RemotingCommand:
    """Send a request; raise ``RemoteError`` unless the response code is in ``accept``."""
    response = await pool.request(addr, command(code, header, body), timeout)
    if response.code not in accept:
        raise RemoteError(response.code, response.remark or "")
    return response


def json_body(response: RemotingCommand) -> Any:
    return loads_lenient(response.body) if response.body else {}


def _int(fields: dict[str, str], key: str, default: int = 0) -> int:
    value = fields.get(key)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


# -- send -------------------------------------------------------------------------------------------
async def send_message(
    pool: ConnectionPool,
    addr: str,
    queue: MessageQueue,
    header: SendMessageHeader,
    body: bytes,
    timeout: float,
    batch: bool = False,
    oneway: bool = False,
    uniq_id: str = "",
) -> SendResult | None:
    cmd = send_command(header, body, batch)
    if oneway:
        await pool.oneway(addr, cmd)
        return None
    return send_result(await pool.request(addr, cmd, timeout), queue, uniq_id)


def send_result(response: RemotingCommand, queue: MessageQueue, uniq_id: str) -> SendResult:
    """A send's answer as a ``SendResult``; raises ``RemoteError`` for a code that is no send status."""
    status = SEND_STATUS_BY_CODE.get(response.code)
    if status is None:
        raise RemoteError(response.code, response.remark or "")
    ext = response.ext_fields
    queue_id = _int(ext, "queueId", queue.queue_id)
    if queue_id != queue.queue_id:  # the broker chose another queue (a new queue is not built per send otherwise)
        queue = MessageQueue(queue.topic, queue.broker_name, queue_id)
    return SendResult(status, uniq_id, ext.get("msgId", ""), queue, _int(ext, "queueOffset", -1))


# -- pull -------------------------------------------------------------------------------------------
async def pull_message(
    pool: ConnectionPool,
    addr: str,
    group: str,
    queue: MessageQueue,
    offset: int,
    subscription: SubscriptionData,
    max_nums: int,
    *,
    commit_offset: int = -1,
    suspend_ms: int = 0,
    timeout: float = 10.0,
    on_undecodable: Callable[[MessageQueue, UndecodableRecord], None] | None = None,
) -> PullResult:
    """One PULL_MESSAGE. A record that does not decode is reported to ``on_undecodable`` (by default one
    WARNING) and skipped: ``next_begin_offset`` is past it, so a poison record never stalls the queue."""
    sys_flag = PULL_FLAG_SUBSCRIPTION
    if commit_offset > 0:
        sys_flag |= PULL_FLAG_COMMIT_OFFSET
    if suspend_ms > 0:
        sys_flag |= PULL_FLAG_SUSPEND
    header = PullMessageHeader(
        consumer_group=group,
        topic=queue.topic,
        queue_id=queue.queue_id,
        queue_offset=offset,
        max_msg_nums=max_nums,
        sys_flag=sys_flag,
        commit_offset=max(commit_offset, 0),
        suspend_timeout_millis=suspend_ms,
        subscription=subscription.sub_string,
        sub_version=subscription.sub_version,
        expression_type="TAG",
    )
    response = await pool.request(addr, command(RequestCode.PULL_MESSAGE, header), timeout)
    status = _PULL_STATUS_BY_CODE.get(response.code)
    if status is None:
        raise RemoteError(response.code, response.remark or "")
    ext = response.ext_fields
    messages = []
    next_offset = _int(ext, "nextBeginOffset", offset)
    if status is PullStatus.FOUND and response.body:
        pulled = decode_pulled_records(response.body, offset)
        for bad in pulled.undecodable:
            (on_undecodable or log_undecodable)(queue, bad)
        if pulled.resume_at is not None:
            next_offset = pulled.resume_at
        messages = subscription.filter(pulled.messages)
    return PullResult(
        status,
        next_offset,
        _int(ext, "minOffset"),
        _int(ext, "maxOffset"),
        messages,
        _int(ext, "suggestWhichBrokerId"),
    )


def log_undecodable(queue: MessageQueue, bad: UndecodableRecord) -> None:
    log.warning(
        "skipping the record at queue offset %d of %s (commit log offset %d) that cannot be decoded: %s",
        bad.queue_offset,
        queue,
        bad.commit_log_offset,
        bad.reason,
    )


# -- offsets ----------------------------------------------------------------------------------------
async def query_consumer_offset(
    pool: ConnectionPool, addr: str, group: str, queue: MessageQueue, timeout: float = 3.0
) -> int:
    """The group's stored offset of ``queue``, or -1 when the broker has none.

    Sends ``setZeroIfNotFound=false``: without it a RocketMQ broker answers 0 for a group it has never
    seen on a young queue, and CONSUME_FROM_LAST would start at the beginning (brokers before 5.x ignore
    the field and keep doing that)."""
    response = await invoke(
        pool,
        addr,
        RequestCode.QUERY_CONSUMER_OFFSET,
        QueryConsumerOffsetHeader(group, queue.topic, queue.queue_id, set_zero_if_not_found=False),
        timeout=timeout,
        accept=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND),
    )
    if response.code == ResponseCode.QUERY_NOT_FOUND:
        return -1
    return _int(response.ext_fields, "offset", -1)


async def update_consumer_offset(
    pool: ConnectionPool, addr: str, group: str, queue: MessageQueue, offset: int, timeout: float = 3.0
) -> None:
    await invoke(
        pool,
        addr,
        RequestCode.UPDATE_CONSUMER_OFFSET,
        UpdateConsumerOffsetHeader(group, queue.topic, queue.queue_id, offset),
        timeout=timeout,
    )


async def _queue_offset(pool: ConnectionPool, addr: str, code: int, header: RequestHeader, timeout: float) -> int:
    response = await invoke(pool, addr, code, header, timeout=timeout)
    return _int(response.ext_fields, "offset")


async def max_offset(pool: ConnectionPool, addr: str, queue: MessageQueue, timeout: float = 3.0) -> int:
    header = GetMaxOffsetHeader(queue.topic, queue.queue_id)
    return await _queue_offset(pool, addr, RequestCode.GET_MAX_OFFSET, header, timeout)


async def min_offset(pool: ConnectionPool, addr: str, queue: MessageQueue, timeout: float = 3.0) -> int:
    header = GetMinOffsetHeader(queue.topic, queue.queue_id)
    return await _queue_offset(pool, addr, RequestCode.GET_MIN_OFFSET, header, timeout)


async def search_offset(
    pool: ConnectionPool, addr: str, queue: MessageQueue, timestamp_ms: int, timeout: float = 3.0
) -> int:
    header = SearchOffsetHeader(queue.topic, queue.queue_id, timestamp_ms)
    return await _queue_offset(pool, addr, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, header, timeout)


# -- membership -------------------------------------------------------------------------------------
async def heartbeat(pool: ConnectionPool, addr: str, data: dict[str, Any] | bytes, timeout: float = 3.0) -> None:
    """HEART_BEAT with ``data`` (its JSON, or the JSON already encoded: one body for every broker)."""
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    await invoke(pool, addr, RequestCode.HEART_BEAT, body=body, timeout=timeout)


async def unregister_client(
    pool: ConnectionPool,
    addr: str,
    client_id: str,
    producer_group: str | None,
    consumer_group: str | None,
    timeout: float = 3.0,
) -> None:
    await invoke(
        pool,
        addr,
        RequestCode.UNREGISTER_CLIENT,
        UnregisterClientHeader(client_id, producer_group, consumer_group),
        timeout=timeout,
    )


async def consumer_ids(pool: ConnectionPool, addr: str, group: str, timeout: float = 3.0) -> list[str]:
    response = await invoke(
        pool, addr, RequestCode.GET_CONSUMER_LIST_BY_GROUP, ConsumerGroupHeader(group), timeout=timeout
    )
    return [str(c) for c in json_body(response).get("consumerIdList") or []]


async def send_message_back(
    pool: ConnectionPool,
    addr: str,
    group: str,
    commit_log_offset: int,
    delay_level: int = 0,
    origin_msg_id: str | None = None,
    origin_topic: str | None = None,
    max_reconsume_times: int | None = None,
    timeout: float = 3.0,
) -> None:
    """CONSUMER_SEND_MSG_BACK (36): the broker moves the message to the group's retry topic or its DLQ."""
    header = ConsumerSendMsgBackHeader(
        offset=commit_log_offset,
        group=group,
        delay_level=delay_level,
        origin_msg_id=origin_msg_id,
        origin_topic=origin_topic,
        max_reconsume_times=max_reconsume_times,
    )
    await invoke(pool, addr, RequestCode.CONSUMER_SEND_MSG_BACK, header, timeout=timeout)
