"""Transactional messages (RocketMQ's TransactionMQProducer): a half message, a local transaction, an outcome.

``send_message_in_transaction`` sends the message as a half message (invisible to consumers), runs
``local_transaction(msg, arg)`` and sends END_TRANSACTION (37) to the broker that stored it: commit makes the
message visible, rollback discards it, unknown leaves it to the broker's check-back. For a half message left
undecided, the broker sends CHECK_TRANSACTION_STATE (39) to a live producer of the group, which answers by
calling ``checker(msg)`` and sending END_TRANSACTION with ``fromTransactionCheck``. Both callbacks may be plain
functions or coroutine functions and return a ``TransactionState``; one that raises counts as unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from krocket.common.codes import RequestCode
from krocket.common.errors import ConnectionClosedError, MessageIllegalError
from krocket.common.headers.transaction import CheckTransactionStateHeader, EndTransactionHeader
from krocket.common.message import (
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_TRANSACTION_ID,
    PROPERTY_TRANSACTION_PREPARED,
    Message,
    MessageExt,
)
from krocket.common.message_checks import check_transaction
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.record import SYSFLAG_TRANSACTION_PREPARED, RecordError, decode_record
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.transaction import TransactionState

from . import broker_api
from .producer import Producer
from .sync import _Sync
from .types import SendResult, SendStatus

log = logging.getLogger(__name__)

LocalTransaction = Callable[[Message, Any], TransactionState | Awaitable[TransactionState]]
TransactionChecker = Callable[[MessageExt], TransactionState | Awaitable[TransactionState]]

__all__ = ["SyncTransactionProducer", "TransactionProducer", "TransactionSendResult", "TransactionState"]


@dataclass(slots=True)
class TransactionSendResult:
    """The half message's send result and the outcome the local transaction gave."""

    send_result: SendResult
    state: TransactionState

    @property
    def msg_id(self) -> str:
        return self.send_result.msg_id


async def _call(fn: Callable[..., Any], *args: Any) -> TransactionState:
    """Run a callback (a coroutine function awaited; a plain one in a worker thread); an error or a value
    that is no TransactionState is unknown."""
    try:
        if inspect.iscoroutinefunction(fn):
            state = await fn(*args)
        else:
            state = await asyncio.to_thread(fn, *args)
            if inspect.isawaitable(state):
                state = await state
    except Exception:
        log.exception("transaction callback %r failed; the outcome is unknown", fn)
        return TransactionState.UNKNOWN
    if not isinstance(state, TransactionState):
        log.warning("transaction callback %r returned %r, not a TransactionState; unknown", fn, state)
        return TransactionState.UNKNOWN
    return state


class TransactionProducer(Producer):
    def __init__(
        self,
        group: str,
        namesrv: str | None = None,
        *,
        local_transaction: LocalTransaction,
        checker: TransactionChecker,
        topics: Sequence[str] = (),
        heartbeat_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        """``topics``: the routes to learn at start, so the brokers that hold this group's half messages know
        this producer at once (a restarted producer gets their check-backs without sending first).
        ``heartbeat_interval``: how often the brokers are told again (a restarted broker forgets producers)."""
        super().__init__(group, namesrv, **kwargs)
        self.local_transaction = local_transaction
        self.checker = checker
        self.topics = list(topics)
        self.heartbeat_interval = heartbeat_interval
        self._checks: set[asyncio.Task[None]] = set()
        self._heartbeats: asyncio.Task[None] | None = None
        self._told: set[str] = set()  # broker addresses told of this producer since start

    async def start(self) -> None:
        await super().start()
        self.instance.request_handlers[RequestCode.CHECK_TRANSACTION_STATE] = self._on_check
        for topic in self.topics:
            await self._publish_info(topic)
        await self._heartbeat()
        self._heartbeats = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def shutdown(self) -> None:
        for task in [*self._checks, *([self._heartbeats] if self._heartbeats else [])]:
            task.cancel()
        self._heartbeats = None
        await super().shutdown()

    async def _heartbeat(self) -> None:
        self._told |= self.instance.all_broker_addrs()
        await self.instance.send_heartbeats()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat()
            except Exception as exc:
                log.warning("heartbeat of transaction producer %s failed: %s", self.group, exc)

    async def send_message_in_transaction(
        self, msg: Message, arg: Any = None, timeout: float | None = None
    ) -> TransactionSendResult:
        """Send ``msg`` as a half message, run the local transaction, send its outcome. A half message the
        broker did not store raises (the local transaction is not run)."""
        self._check(msg)
        uniq, props, body, sys_flag = self._prepare(msg)
        props[PROPERTY_TRANSACTION_PREPARED] = "true"
        props[PROPERTY_PRODUCER_GROUP] = self.group
        sys_flag |= SYSFLAG_TRANSACTION_PREPARED
        check_transaction(sys_flag, props)
        result = await self._send_with_retries(msg.topic, props, body, sys_flag, msg.flag, False, uniq, timeout)
        if result.status is not SendStatus.SEND_OK:
            raise MessageIllegalError(f"the half message was not stored as it should be: {result.status.name}")
        msg.properties.setdefault(PROPERTY_TRANSACTION_ID, uniq)
        if not self.instance.all_broker_addrs() <= self._told:  # a new broker: it learns of this producer now
            with contextlib.suppress(Exception):
                await self._heartbeat()
        state = await _call(self.local_transaction, msg, arg)
        try:
            await self._end(result, msg.topic, state, uniq)
        except Exception as exc:  # the broker's check-back decides, as RocketMQ's clients do
            log.warning("END_TRANSACTION for %s failed (%s); the broker will check back", uniq, exc)
        return TransactionSendResult(result, state)

    async def _end(self, result: SendResult, topic: str, state: TransactionState, uniq: str) -> None:
        addr = self.instance.broker_addr(result.queue.broker_name, only_this=True)
        if addr is None:
            raise ConnectionClosedError(f"broker {result.queue.broker_name} has no master in the route")
        _, commit_log_offset = decode_offset_msg_id(result.offset_msg_id)
        header = EndTransactionHeader(
            producer_group=self.group,
            tran_state_table_offset=result.queue_offset,
            commit_log_offset=commit_log_offset,
            commit_or_rollback=state.commit_or_rollback,
            from_transaction_check=False,
            msg_id=uniq,
            transaction_id=uniq,
            topic=topic,
        )
        await broker_api.invoke(
            self.instance.pool, addr, RequestCode.END_TRANSACTION, header, timeout=self.send_timeout
        )

    # -- check-back -----------------------------------------------------------------------------------
    async def _on_check(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand | None:
        """CHECK_TRANSACTION_STATE (oneway): ask the checker in the background, answer with END_TRANSACTION."""
        task = asyncio.get_running_loop().create_task(self._answer_check(conn, cmd))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return None

    async def _answer_check(self, conn: Connection, cmd: RemotingCommand) -> None:
        try:
            header = CheckTransactionStateHeader.from_fields(cmd.ext_fields)
            msg = decode_record(cmd.body)
        except (RecordError, ValueError) as exc:
            log.warning("unreadable CHECK_TRANSACTION_STATE from %s: %s", conn.peer, exc)
            return
        state = await _call(self.checker, msg)
        end = EndTransactionHeader(
            producer_group=self.group,
            tran_state_table_offset=header.tran_state_table_offset,
            commit_log_offset=header.commit_log_offset,
            commit_or_rollback=state.commit_or_rollback,
            from_transaction_check=True,
            msg_id=header.msg_id or msg.msg_id,
            transaction_id=header.transaction_id,
            topic=msg.topic,
        )
        request = broker_api.command(RequestCode.END_TRANSACTION, end)
        pool = self.instance.pool
        if pool.request_hook is not None:
            pool.request_hook(request)
        try:
            response = await conn.request(request, self.send_timeout)
        except Exception as exc:
            log.warning("END_TRANSACTION after a check of %s failed: %s", header.msg_id, exc)
            return
        if response.code != 0:
            log.warning("END_TRANSACTION after a check of %s refused: %s", header.msg_id, response.remark)


class SyncTransactionProducer(_Sync):
    """The blocking form: callbacks are plain functions (run in worker threads of the client's loop)."""

    def __init__(
        self,
        group: str,
        namesrv: str | None = None,
        *,
        local_transaction: LocalTransaction,
        checker: TransactionChecker,
        **kwargs: Any,
    ) -> None:
        super().__init__(f"krocket-tx-producer-{group}")
        self._client = self.producer = TransactionProducer(
            group, namesrv, local_transaction=local_transaction, checker=checker, **kwargs
        )

    def send_message_in_transaction(
        self, msg: Message, arg: Any = None, timeout: float | None = None
    ) -> TransactionSendResult:
        return self._loop.call(self.producer.send_message_in_transaction(msg, arg, timeout))

    def send(self, msg: Message, timeout: float | None = None) -> SendResult:
        return self._loop.call(self.producer.send(msg, timeout=timeout))
