"""Producer: sync, oneway, batch and ordered (selector) sends with retries on another broker.

Routes are looked up lazily: a topic's on the first send to it. The refresh task keeps the routes of the topics
sent to recently current and forgets those not sent to for ``ROUTE_IDLE_S`` (the next send looks them up again).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from krocket.common.acl import Credentials, resolve_credentials
from krocket.common.batch import encode_batch
from krocket.common.errors import (
    ConnectionClosedError,
    KrocketError,
    MessageIllegalError,
    RemoteError,
    RemotingTimeoutError,
    ServiceNotAvailableError,
    TopicNotExistError,
)
from krocket.common.headers import SendMessageHeader
from krocket.common.message import (
    COMPRESS_OVER_BYTES,
    MAX_MESSAGE_BYTES,
    PROPERTY_UNIQ_KEY,
    PROPERTY_WAIT,
    Message,
    encode_properties,
)
from krocket.common.message_checks import check_int32, check_properties
from krocket.common.message_id import UniqueIdGenerator
from krocket.common.record import SYSFLAG_COMPRESSED
from krocket.common.remoting import RemotingCommand
from krocket.common.remoting.blocking import BlockingConnectionPool
from krocket.common.remoting.tls import client_tls
from krocket.common.topic import AUTO_CREATE_TOPIC_KEY, validate_group, validate_topic

from . import broker_api
from .instance import ClientInstance
from .pending_send import RETRY_CODES, PendingSend, failed_send
from .selector import DEFAULT_TOPIC_QUEUE_NUMS, QueueSelector, publish_queues
from .send_frames import SendFrameTemplate
from .types import MessageQueue, SendResult

log = logging.getLogger(__name__)

Selector = Callable[[list[MessageQueue], Message, Any], MessageQueue]
BlockingRequest = Callable[[str, RemotingCommand, float], RemotingCommand]  # (addr, command, timeout) -> answer

COMPRESS_LEVEL = 5
_BODY_TYPES = (bytes, bytearray, memoryview)
MAX_FRAME_TEMPLATES = 1024  # pre-encoded send headers kept (one per topic sent to); all dropped past this
ROUTE_IDLE_S = 300.0  # the route of a topic not sent to for this long is forgotten (looked up again on use)


SendCallback = Callable[[SendResult | None, BaseException | None], None]


class Producer:
    def __init__(
        self,
        group: str,
        namesrv: str | None = None,
        send_timeout: float = 3.0,
        retries: int = 2,
        *,
        compress_over: int = COMPRESS_OVER_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        instance_name: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        validate_group(group)
        self.group = group
        self.send_timeout = send_timeout
        self.retries = retries
        self.compress_over = compress_over
        self.max_message_bytes = max_message_bytes
        self._namesrv = namesrv
        self._instance_name = instance_name
        self.ssl_context = client_tls(tls, tls_ca)  # TLS when told, or by KROCKET_TLS_ENABLE / KROCKET_TLS_CA
        # ACL (RocketMQ 4.x): every request signed; default from KROCKET_ACCESS_KEY / KROCKET_SECRET_KEY.
        self.credentials = resolve_credentials(credentials)
        self._instance: ClientInstance | None = None
        self._ids = UniqueIdGenerator()
        self._selector = QueueSelector()
        # topics without a route yet -> queues taken from the auto-create topic's route
        self._via_default: dict[str, list[MessageQueue]] = {}
        self._publish_cache: dict[str, tuple[Any, list[MessageQueue]]] = {}
        self._inflight: set[asyncio.Task[Any]] = set()  # tasks of sends (route lookups, connects), kept referenced
        self._frame_templates: dict[tuple[str, bool], SendFrameTemplate] = {}
        self._valid_topics: set[str] = set()  # topic names validate_topic accepted (checked once each)

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise KrocketError(f"producer {self.group} is not started; call start() first")
        return self._instance

    @property
    def client_id(self) -> str:
        return self.instance.client_id

    async def start(self) -> None:
        if self._instance is not None:
            return
        self._instance = ClientInstance(
            self._namesrv,
            instance_name=self._instance_name,
            timeout=self.send_timeout,
            ssl_context=self.ssl_context,
            credentials=self.credentials,
        )
        self._instance.producer_groups.add(self.group)
        self._instance.route_idle_s = ROUTE_IDLE_S
        self._instance.forget_hooks.append(self._forget_route)
        await self._instance.start()
        log.info(
            "producer %s started as %s (name servers %s)",
            self.group,
            self._instance.client_id,
            ";".join(self._instance.namesrv.addresses),
        )

    async def shutdown(self) -> None:
        if self._instance is None:
            return
        instance, self._instance = self._instance, None
        await instance.shutdown()
        log.info("producer %s stopped", self.group)

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- routes --------------------------------------------------------------------------------------
    async def queues(self, topic: str) -> list[MessageQueue]:
        """The topic's writable queues (those of the auto-create topic when it does not exist yet)."""
        return await self._publish_info(topic)

    def _forget_route(self, topic: str) -> None:
        """The instance forgot the topic's route (unused for ``ROUTE_IDLE_S``): drop what was derived from it."""
        self._publish_cache.pop(topic, None)
        self._via_default.pop(topic, None)

    def _cached_publish_info(self, topic: str) -> list[MessageQueue] | None:
        """The topic's queues from the cached route (or the auto-create topic's), None when unknown; marks the
        topic used (its route is kept current while it is)."""
        instance = self.instance
        instance.used_topics.add(topic)
        route = instance.namesrv.cached_route(topic)
        if route is not None:
            cached = self._publish_cache.get(topic)
            if cached is not None and cached[0] is route:  # same route object: same queues
                return cached[1]
            queues = publish_queues(topic, route)
            if queues:
                self._via_default.pop(topic, None)
                self._publish_cache[topic] = (route, queues)
                return queues
        return self._via_default.get(topic)

    async def _publish_info(self, topic: str) -> list[MessageQueue]:
        queues = self._cached_publish_info(topic)
        if queues is not None:
            return queues
        instance = self.instance
        try:
            route = await instance.route(topic, fresh=True)
        except TopicNotExistError:
            route = None
        if route is not None:
            queues = publish_queues(topic, route)
            if not queues:  # it exists: never auto-create it elsewhere, like RocketMQ
                raise ServiceNotAvailableError(
                    f"topic {topic!r} has no writable queue on a broker with a master online"
                )
            return queues
        # Not created yet: send to brokers that may auto-create it; the refresh task keeps asking for the
        # topic's own route, which the broker registers once it has created the topic.
        default = await instance.route(AUTO_CREATE_TOPIC_KEY)
        queues = publish_queues(topic, default, DEFAULT_TOPIC_QUEUE_NUMS)
        if not queues:
            raise TopicNotExistError(f"topic {topic!r} has no route and no broker allows auto-creating it")
        if topic not in self._via_default:  # sends that waited for the same lookup log it once
            log.info("topic %s has no route yet; sending through %s", topic, AUTO_CREATE_TOPIC_KEY)
        self._via_default[topic] = queues
        return queues

    # -- building requests ---------------------------------------------------------------------------------
    def _check(self, msg: Message, topic_checked: bool = False, props: dict[str, str] | None = None) -> None:
        """Refuse what the broker would refuse or not read back as sent (``message_checks``: a ValueError
        naming the field); ``props``: the message's wire properties when the caller has them already."""
        check_properties(msg.wire_properties() if props is None else props)
        check_int32("flag", msg.flag)
        if not topic_checked and msg.topic not in self._valid_topics:
            validate_topic(msg.topic)
            if len(self._valid_topics) < MAX_FRAME_TEMPLATES:
                self._valid_topics.add(msg.topic)
        if not isinstance(msg.body, _BODY_TYPES):
            raise MessageIllegalError("message body must be bytes")
        if len(msg.body) == 0:
            raise MessageIllegalError("message body is empty")
        if len(msg.body) > self.max_message_bytes:
            raise MessageIllegalError(
                f"message body is {len(msg.body)} bytes; at most {self.max_message_bytes} allowed"
            )

    def _prepare(self, msg: Message, props: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes, int]:
        """(unique id, wire properties, body, sysFlag) of one message (``props``: its wire properties, which this
        completes, when the caller has them already)."""
        if props is None:
            props = msg.wire_properties()
        uniq = props.get(PROPERTY_UNIQ_KEY) or self._ids.next_id()
        props[PROPERTY_UNIQ_KEY] = uniq
        props.setdefault(PROPERTY_WAIT, "true")
        body = bytes(msg.body)
        sys_flag = 0
        if len(body) > self.compress_over:
            body = zlib.compress(body, COMPRESS_LEVEL)
            sys_flag |= SYSFLAG_COMPRESSED
        return uniq, props, body, sys_flag

    def _header(
        self, topic: str, queue_id: int, props: dict[str, str], sys_flag: int, flag: int, batch: bool
    ) -> SendMessageHeader:
        return SendMessageHeader(
            producer_group=self.group,
            topic=topic,
            default_topic=AUTO_CREATE_TOPIC_KEY,
            default_topic_queue_nums=DEFAULT_TOPIC_QUEUE_NUMS,
            queue_id=queue_id,
            sys_flag=sys_flag,
            born_timestamp=int(time.time() * 1000),
            flag=flag,
            properties=encode_properties(props).decode(),
            reconsume_times=0,
            unit_mode=False,
            batch=batch,
        )

    # -- sending ---------------------------------------------------------------------------------------
    async def send(
        self, msg: Message, selector: Selector | None = None, arg: Any = None, timeout: float | None = None
    ) -> SendResult:
        """Send and wait for the broker's answer. With ``selector``, the message goes to the queue it picks
        (ordered messages): no retry on another queue, so order is kept."""
        props = msg.wire_properties()
        self._check(msg, props=props)
        uniq, props, body, sys_flag = self._prepare(msg, props)
        if selector is not None:
            queues = await self._publish_info(msg.topic)
            queue = selector(list(queues), msg, arg)
            return await self._send_to(
                queue, props, body, sys_flag, msg.flag, False, uniq, timeout or self.send_timeout
            )  # type: ignore[return-value]
        return await self._start_send(msg.topic, props, body, sys_flag, msg.flag, False, uniq, timeout, cork=False)

    def send_async(
        self,
        msg: Message,
        callback: SendCallback | None = None,
        selector: Selector | None = None,
        arg: Any = None,
        timeout: float | None = None,
    ) -> asyncio.Future[SendResult]:
        """Start a send and return at once (RocketMQ's async send). ``callback(result, error)`` runs when the
        broker answers or the send fails for good (after the retries ``send`` makes); the returned future can be
        awaited instead. No task or coroutine per send (unless the topic's route or the broker's connection must
        be looked up first): the request is written with the others of this loop pass and its answer calls back.
        With ``selector`` it runs ``send`` as a task."""
        if selector is not None:
            task = asyncio.get_running_loop().create_task(self.send(msg, selector, arg, timeout))
            self._keep(task)
            if callback is not None:
                task.add_done_callback(_calling_back(callback))
            return task
        try:
            props = msg.wire_properties()
            self._check(msg, props=props)
            uniq, props, body, sys_flag = self._prepare(msg, props)
        except Exception as exc:  # told like any other failure: through the future and the callback
            return failed_send(exc, callback)
        timeout = timeout or self.send_timeout
        return PendingSend(self, msg.topic, props, body, sys_flag, msg.flag, False, uniq, timeout, callback).start()

    async def send_oneway(self, msg: Message) -> None:
        """Send without waiting for an answer (no retries; the message may be lost)."""
        self._check(msg)
        uniq, props, body, sys_flag = self._prepare(msg)
        queues = await self._publish_info(msg.topic)
        queue = self._selector.select(queues)
        await self._send_to(queue, props, body, sys_flag, msg.flag, False, uniq, self.send_timeout, oneway=True)

    async def send_batch(self, messages: Sequence[Message], timeout: float | None = None) -> SendResult:
        """Send messages of one topic in one request; ``msg_id`` is their unique ids, comma-joined."""
        if not messages:
            raise MessageIllegalError("a batch needs at least one message")
        topic = messages[0].topic
        items: list[tuple[bytes, dict[str, str], int]] = []
        ids: list[str] = []
        validate_topic(topic)
        for msg in messages:
            if msg.topic != topic:
                raise MessageIllegalError(f"a batch must have one topic; got {topic!r} and {msg.topic!r}")
            self._check(msg, topic_checked=True)
            props = msg.wire_properties()
            uniq = props.get(PROPERTY_UNIQ_KEY) or self._ids.next_id()
            props[PROPERTY_UNIQ_KEY] = uniq
            props.setdefault(PROPERTY_WAIT, "true")
            ids.append(uniq)
            items.append((bytes(msg.body), props, msg.flag))
        body = encode_batch(items)
        if len(body) > self.max_message_bytes:
            raise MessageIllegalError(
                f"batch body is {len(body)} bytes; at most {self.max_message_bytes} allowed; split it"
            )
        return await self._send_with_retries(topic, {PROPERTY_WAIT: "true"}, body, 0, 0, True, ",".join(ids), timeout)

    def blocking_pool(self) -> BlockingConnectionPool:
        """A pool of blocking connections for ``send_blocking`` with this producer's TLS context and credentials."""
        pool = BlockingConnectionPool(connect_timeout=self.send_timeout, ssl_context=self.ssl_context)
        if self.credentials is not None:
            pool.request_hook = self.credentials.sign
        return pool

    def send_blocking(
        self,
        msg: Message,
        request: BlockingRequest,
        selector: Selector | None = None,
        arg: Any = None,
        timeout: float | None = None,
    ) -> SendResult | None:
        """``send`` on the caller's thread through ``request(addr, command, timeout)`` (a blocking connection
        pool), with the same queue choice and retries. Returns None, having sent nothing, when the topic's
        queues are not cached yet: the caller then sends through the event loop, which looks the route up."""
        self._check(msg)
        queues = self._cached_publish_info(msg.topic)
        if queues is None:
            return None
        uniq, props, body, sys_flag = self._prepare(msg)
        timeout = timeout or self.send_timeout
        if selector is not None:
            queue = selector(list(queues), msg, arg)
            return self._send_blocking_to(request, queue, props, body, sys_flag, msg.flag, uniq, timeout)
        last_failed: str | None = None
        error: Exception | None = None
        for attempt, remaining in self._attempts(timeout):
            queue = self._selector.select(queues, last_failed)
            try:
                result = self._send_blocking_to(request, queue, props, body, sys_flag, msg.flag, uniq, remaining)
            except (ConnectionClosedError, RemotingTimeoutError, RemoteError) as exc:
                error = self._retryable(exc)
            else:
                self._selector.faults.mark_ok(queue.broker_name)
                return result
            last_failed = self._attempt_failed(queue, attempt, error)
        raise error or RemotingTimeoutError(f"send to topic {msg.topic} timed out")

    def _send_blocking_to(
        self,
        request: BlockingRequest,
        queue: MessageQueue,
        props: dict[str, str],
        body: bytes,
        sys_flag: int,
        flag: int,
        uniq: str,
        timeout: float,
    ) -> SendResult:
        addr = self.instance.broker_addr(queue.broker_name, only_this=True)
        if addr is None:
            raise ConnectionClosedError(f"broker {queue.broker_name} has no master in the route")
        header = self._header(queue.topic, queue.queue_id, props, sys_flag, flag, False)
        return broker_api.send_result(request(addr, broker_api.send_command(header, body), timeout), queue, uniq)

    def _attempts(self, timeout: float) -> Iterator[tuple[int, float]]:
        """(attempt number, seconds left) for each try a send gets: 1 + ``retries`` within ``timeout``."""
        deadline = time.monotonic() + timeout
        for attempt in range(1 + self.retries):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            yield attempt, remaining

    @staticmethod
    def _retryable(exc: Exception) -> Exception:
        """``exc`` when another attempt may help; raises it otherwise."""
        if isinstance(exc, RemoteError) and exc.code not in RETRY_CODES:
            raise exc
        return exc

    def _attempt_failed(self, queue: MessageQueue, attempt: int, error: Exception | None) -> str:
        """Note a failed attempt; returns the broker the next attempt should avoid."""
        self._selector.faults.mark_failed(queue.broker_name)
        log.warning("send to %s failed (attempt %d of %d): %s", queue, attempt + 1, 1 + self.retries, error)
        return queue.broker_name

    async def _send_with_retries(
        self,
        topic: str,
        props: dict[str, str],
        body: bytes,
        sys_flag: int,
        flag: int,
        batch: bool,
        uniq: str,
        timeout: float | None,
    ) -> SendResult:
        return await self._start_send(topic, props, body, sys_flag, flag, batch, uniq, timeout)

    def _start_send(
        self,
        topic: str,
        props: dict[str, str],
        body: bytes,
        sys_flag: int,
        flag: int,
        batch: bool,
        uniq: str,
        timeout: float | None,
        cork: bool = True,
    ) -> asyncio.Future[SendResult]:
        """A send with retries on another broker (``PendingSend``); ``cork``: written at the end of this loop pass
        with the others (many sends in flight) rather than at once (one awaited send)."""
        return PendingSend(
            self, topic, props, body, sys_flag, flag, batch, uniq, timeout or self.send_timeout, cork=cork
        ).start()

    def _frame_template(self, topic: str, batch: bool) -> SendFrameTemplate:
        """The pre-encoded send header of ``topic`` (``send_frames``), made once per topic."""
        key = (topic, batch)
        template = self._frame_templates.get(key)
        if template is None:
            if len(self._frame_templates) >= MAX_FRAME_TEMPLATES:
                self._frame_templates.clear()
            template = self._frame_templates[key] = SendFrameTemplate(self.group, topic, batch)
        return template

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Keep a send's task referenced until it is done."""
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send_to(
        self,
        queue: MessageQueue,
        props: dict[str, str],
        body: bytes,
        sys_flag: int,
        flag: int,
        batch: bool,
        uniq: str,
        timeout: float,
        oneway: bool = False,
    ) -> SendResult | None:
        addr = self.instance.broker_addr(queue.broker_name, only_this=True)
        if addr is None:
            raise ConnectionClosedError(f"broker {queue.broker_name} has no master in the route")
        header = self._header(queue.topic, queue.queue_id, props, sys_flag, flag, batch)
        return await broker_api.send_message(
            self.instance.pool, addr, queue, header, body, timeout, batch=batch, oneway=oneway, uniq_id=uniq
        )


def _calling_back(callback: SendCallback) -> Callable[[asyncio.Task[SendResult]], None]:
    def done(t: asyncio.Task[SendResult]) -> None:
        if t.cancelled():
            callback(None, asyncio.CancelledError())
        elif t.exception() is not None:
            callback(None, t.exception())
        else:
            callback(t.result(), None)

    return done
