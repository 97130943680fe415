"""One send in progress and its attempts, driven by response callbacks: no task, coroutine or timer per send.

An attempt picks a queue (round robin, avoiding the broker that just failed), builds the frame from the
producer's header template and hands it to the connection with ``Connection.start_request``; the broker's
answer (or the connection's timeout sweep, or its close) calls ``on_response``. A failure worth another broker
(a closed connection, a timeout, one of ``RETRY_CODES``) starts the next attempt right there, within
1 + ``retries`` attempts and the send's timeout, as ``Producer.send`` has always done; anything else fails the
send. Only when the route or the connection is not there yet does an attempt run as a task (it looks the route
up or connects, then goes on the same way).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from krocket.common.codes import ResponseCode
from krocket.common.errors import ConnectionClosedError, RemoteError, RemotingTimeoutError
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import encode_parts

from . import broker_api
from .send_frames import properties_json
from .types import MessageQueue, SendResult

if TYPE_CHECKING:
    from .producer import Producer, SendCallback

log = logging.getLogger(__name__)

# Broker answers that are worth another broker (RocketMQ's retryResponseCodes, plus SYSTEM_BUSY).
RETRY_CODES = frozenset(
    {
        ResponseCode.TOPIC_NOT_EXIST,
        ResponseCode.SERVICE_NOT_AVAILABLE,
        ResponseCode.SYSTEM_ERROR,
        ResponseCode.SYSTEM_BUSY,
        ResponseCode.NO_PERMISSION,
    }
)
# Failures of one attempt (another may help); any other exception fails the send at once.
ATTEMPT_ERRORS = (ConnectionClosedError, RemotingTimeoutError, RemoteError)


class PendingSend:
    """A send of ``body`` with ``props`` to ``topic`` until ``future`` has its result (and ``callback`` ran)."""

    __slots__ = (
        "attempt",
        "batch",
        "body",
        "callback",
        "cork",
        "deadline",
        "error",
        "flag",
        "future",
        "last_failed",
        "producer",
        "props",
        "queue",
        "starting",
        "sys_flag",
        "topic",
        "uniq",
        "_props_json",
    )

    def __init__(
        self,
        producer: Producer,
        topic: str,
        props: dict[str, str],
        body: bytes,
        sys_flag: int,
        flag: int,
        batch: bool,
        uniq: str,
        timeout: float,
        callback: SendCallback | None = None,
        cork: bool = True,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.props = props
        self.body = body
        self.sys_flag = sys_flag
        self.flag = flag
        self.batch = batch
        self.uniq = uniq
        self.callback = callback
        self.cork = cork
        self.deadline = time.monotonic() + timeout
        self.future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self.attempt = 0
        self.error: BaseException | None = None
        self.last_failed: str | None = None
        self.queue: MessageQueue | None = None
        self.starting = True
        self._props_json: bytes | None = None

    def start(self) -> asyncio.Future[SendResult]:
        self.next_attempt()
        self.starting = False
        return self.future

    # -- attempts -------------------------------------------------------------------------------------
    def next_attempt(self, queues: list[MessageQueue] | None = None) -> None:
        """Start the next attempt (on ``queues`` when the caller just looked them up), or fail the send when none
        is left. Never raises: what goes wrong (e.g. the producer was shut down meanwhile) fails the send."""
        if self.future.cancelled():  # the caller gave up waiting: no more attempts
            return
        try:
            self._next_attempt(queues)
        except Exception as exc:
            self.finish(None, exc)

    def _next_attempt(self, queues: list[MessageQueue] | None) -> None:
        producer = self.producer
        while True:
            remaining = self.deadline - time.monotonic()
            if self.attempt > producer.retries or remaining <= 0:
                self.finish(None, self.error or RemotingTimeoutError(f"send to topic {self.topic} timed out"))
                return
            if queues is None:
                queues = producer._cached_publish_info(self.topic)
            if queues is None:  # the route is not known yet: look it up first
                producer._keep(asyncio.get_running_loop().create_task(self._attempt_after_lookup()))
                return
            queue = self.queue = producer._selector.select(queues, self.last_failed)
            addr = producer.instance.broker_addr(queue.broker_name, only_this=True)
            if addr is None:
                error: BaseException = ConnectionClosedError(f"broker {queue.broker_name} has no master in the route")
            else:
                conn = producer.instance.pool.cached(addr)
                if conn is None or not conn.is_writable:  # connect, or wait for the peer to read, first
                    producer._keep(asyncio.get_running_loop().create_task(self._attempt_on(addr, queue)))
                    return
                try:
                    self.send_on(conn, queue, remaining)
                    return
                except ConnectionClosedError as exc:
                    error = exc
            if not self.attempt_failed(queue, error):
                return
            queues = None

    async def _attempt_after_lookup(self) -> None:
        try:
            queues = await self.producer._publish_info(self.topic)
        except BaseException as exc:  # no route at all (and no auto-create), or cancelled at shutdown
            self.finish(None, exc)
            return
        self.next_attempt(queues)

    async def _attempt_on(self, addr: str, queue: MessageQueue) -> None:
        try:
            conn = await self.producer.instance.pool.get(addr)
            if not conn.is_writable:
                await conn.wait_writable()
            self.send_on(conn, queue, max(self.deadline - time.monotonic(), 0.001))
        except ATTEMPT_ERRORS as exc:
            if self.attempt_failed(queue, exc):
                self.next_attempt()
        except BaseException as exc:  # e.g. a bad address: not worth another broker
            self.finish(None, exc)

    def send_on(self, conn: Connection, queue: MessageQueue, timeout: float) -> None:
        """Write this attempt's request on ``conn``; its answer comes to ``on_response``."""
        producer = self.producer
        opaque = conn.new_opaque()
        body = self.body
        hook = producer.instance.pool.request_hook
        if hook is None:
            template = producer._frame_template(self.topic, self.batch)
            props_json = self._props_json
            if props_json is None:
                props_json = self._props_json = properties_json(self.props)
            head = template.head(
                opaque, queue.queue_id, self.sys_flag, int(time.time() * 1000), self.flag, props_json, len(body)
            )
            code: int = template.code
        else:  # signed (ACL): the signature covers the header fields, so the command is built and signed
            header = producer._header(queue.topic, queue.queue_id, self.props, self.sys_flag, self.flag, self.batch)
            cmd: RemotingCommand = broker_api.send_command(header, body, self.batch)
            cmd.opaque = opaque
            hook(cmd)
            head, body = encode_parts(cmd)
            code = cmd.code
        conn.start_request(opaque, head, body, code, timeout, self.on_response, self.cork)

    def on_response(self, response: RemotingCommand | None, error: BaseException | None) -> None:
        queue = self.queue
        assert queue is not None
        if response is not None:
            try:
                result = broker_api.send_result(response, queue, self.uniq)
            except RemoteError as exc:
                error = exc
            else:
                self.producer._selector.faults.mark_ok(queue.broker_name)
                self.finish(result, None)
                return
        assert error is not None
        if self.attempt_failed(queue, error):
            self.next_attempt()

    def attempt_failed(self, queue: MessageQueue, error: BaseException) -> bool:
        """Note a failed attempt; True when another one may help (else the send has failed)."""
        if not isinstance(error, ATTEMPT_ERRORS) or (isinstance(error, RemoteError) and error.code not in RETRY_CODES):
            self.finish(None, error)
            return False
        self.error = error
        self.last_failed = self.producer._attempt_failed(queue, self.attempt, error)
        self.attempt += 1
        return True

    # -- the outcome ----------------------------------------------------------------------------------
    def finish(self, result: SendResult | None, error: BaseException | None) -> None:
        if self.starting:  # failed before start() returned: tell the caller from the loop, not from inside
            asyncio.get_running_loop().call_soon(self._deliver, result, error)
        else:
            self._deliver(result, error)

    def _deliver(self, result: SendResult | None, error: BaseException | None) -> None:
        deliver(self.future, self.callback, result, error)


def deliver(
    future: asyncio.Future[SendResult],
    callback: SendCallback | None,
    result: SendResult | None,
    error: BaseException | None,
) -> None:
    """Give a send's outcome to its future (unless cancelled meanwhile) and its callback."""
    if not future.done():
        if error is None:
            future.set_result(result)  # type: ignore[arg-type]
        elif isinstance(error, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(error)
            if callback is not None:
                future.exception()  # the callback hears of it: never "exception was never retrieved"
    if callback is not None:
        try:
            callback(result, error)
        except Exception:
            log.exception("send callback failed")


def failed_send(error: BaseException, callback: SendCallback | None) -> asyncio.Future[SendResult]:
    """A send that failed before it started (a message the broker would refuse): told from the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[SendResult] = loop.create_future()
    loop.call_soon(deliver, future, callback, None, error)
    return future
