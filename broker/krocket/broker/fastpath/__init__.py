"""The broker's per-read fast path for plain sends.

The broker connection hands each receive buffer to ``FastSendPath`` (the transport's ``fast_path`` hook). It
calls ``serve(buf, ctx, out)``, which walks the whole frames at the front of ``buf`` and serves each plain
SEND_MESSAGE_V2 / SEND_MESSAGE (JSON header, a known writable topic, no transaction, delay or timer, room in the
current segment): it checks it as today's path does, appends the record, the consume queue entry and the index keys,
and writes the reply from a template into ``out``. It stops at the first frame it does not serve; today's code
(``krocket.broker.processors``) serves that one and the rest of the read, unchanged. After the call the glue does once
per read what the slow path does per request: the commit (``pwrite``) before any reply leaves, one transport write,
the index, the dispatch listeners once per touched queue, and the metrics by count.

``serve`` has two implementations with the same output bytes: the C extension ``_cserve`` (built when a compiler
is there) and the Python twin ``pure``. ``KROCKET_NO_EXTENSIONS=1`` forces the twin; ``KROCKET_FAST_PATH=0`` turns
the fast path off (every request takes today's path). The fast path stays out of the way on a slave and with ACL on
(every request is checked). Where acks wait for the disk or a slave (SYNC_FLUSH, SYNC_MASTER), the read's replies
are parked in one piece with the commit log offset they need (``krocket.broker.reply_parking``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from krocket.broker.fastpath import pure
from krocket.broker.fastpath.context import STOP_COMMIT, STOP_SLOW, FastContext, TopicEntry
from krocket.broker.processors.send import born_host
from krocket.broker.service import BrokerService
from krocket.common.codes import PERM_WRITE, RequestCode
from krocket.common.errors import MessageIllegalError, ServiceNotAvailableError
from krocket.common.metrics import Histogram, LabelKey, request_label
from krocket.common.remoting import Connection
from krocket.common.remoting.limits import LogLimiter
from krocket.common.topic import (
    AUTO_CREATE_TOPIC_KEY,
    DLQ_GROUP_PREFIX,
    RETRY_GROUP_PREFIX,
    SCHEDULE_TOPIC,
    TIMER_TOPIC,
    validate_topic,
)
from krocket.common.transaction import CHECK_MAX_TIME_TOPIC

log = logging.getLogger(__name__)
limited_log = LogLimiter(log)

Serve = Callable[[bytearray, FastContext, bytearray], int]

_SYSTEM_PREFIXES = (RETRY_GROUP_PREFIX, DLQ_GROUP_PREFIX, "RMQ_SYS_", "KROCKET_SYS_")
_SYSTEM_TOPICS = frozenset((AUTO_CREATE_TOPIC_KEY, SCHEDULE_TOPIC, TIMER_TOPIC, CHECK_MAX_TIME_TOPIC))
_MAX_INELIGIBLE = 4096  # names remembered as not for the fast path (reset when the topics change)
_SEND_V2_KEY = request_label(RequestCode.SEND_MESSAGE_V2)


def _env_set(name: str) -> bool:
    value = os.environ.get(name, "")
    return value not in ("", "0", "false", "no")


def load_serve() -> tuple[Serve, str]:
    """The ``serve`` this process uses and a name for it: the C extension unless ``KROCKET_NO_EXTENSIONS`` is set
    or it is not built."""
    if _env_set("KROCKET_NO_EXTENSIONS"):
        return pure.serve, f"Python ({pure.JSON_LIBRARY}; KROCKET_NO_EXTENSIONS is set)"
    try:
        from krocket.broker.fastpath import _cserve  # type: ignore[attr-defined]
    except ImportError:
        return pure.serve, f"Python ({pure.JSON_LIBRARY}; the C extension is not built)"
    return _cserve.serve, "C extension"


def fast_path_enabled() -> bool:
    return os.environ.get("KROCKET_FAST_PATH", "1") not in ("0", "false", "no", "off")


def is_plain_topic(topic: str) -> bool:
    """Whether sends to ``topic`` may take the fast path: not a system, retry, dead-letter or schedule topic."""
    return topic not in _SYSTEM_TOPICS and not topic.startswith(_SYSTEM_PREFIXES)


class FastSendPath:
    """The per-read hook of the broker's connections (``RemotingServer(fast_path=...)``)."""

    def __init__(
        self,
        service: BrokerService,
        max_frame: int,
        requests: dict[LabelKey, float] | None = None,
        serve: Serve | None = None,
        send_latency: Histogram | None = None,
    ) -> None:
        self._service = service
        store = self._store = service.store
        commitlog = store.commitlog
        dispatcher = store.dispatcher
        self.ctx = FastContext(
            commitlog._buf,
            store.config.store_host,
            max_frame,
            min(service.config.max_message_size, store.config.max_message_bytes),
            commitlog._commit_limit,
            dispatcher.tags_code,
            dispatcher.index_enabled,
        )
        if serve is None:
            serve, self.implementation = load_serve()
        else:
            self.implementation = getattr(serve, "__module__", "custom")
        self._serve = serve
        self._requests = requests
        self._send_latency = send_latency  # one observation per read: its time over its sends, counted each
        self._topics_version = -1
        self._ineligible: set[bytes] = set()
        self.served = 0  # sends served by the fast path since start

    # -- topics --------------------------------------------------------------------------------------
    def _reset_topics(self) -> None:
        self.ctx.clear_topics()
        self._ineligible.clear()
        self._topics_version = self._service.topics.data_version

    def _learn(self, raw: bytes) -> bool:
        """Add the entry for topic ``raw`` when sends to it may take the fast path."""
        if raw in self._ineligible:
            return False
        entry = self._entry_for(raw)
        if entry is None:
            if len(self._ineligible) >= _MAX_INELIGIBLE:
                self._ineligible.clear()
            self._ineligible.add(raw)
            return False
        self.ctx.add_topic(entry)
        return True

    def _entry_for(self, raw: bytes) -> TopicEntry | None:
        try:
            topic = raw.decode()
            validate_topic(topic)
        except (UnicodeDecodeError, MessageIllegalError):
            return None  # the slow path answers it
        config = self._service.topics.get(topic)
        if config is None or not config.perm & PERM_WRITE or not is_plain_topic(topic):
            return None
        store = self._store
        if topic in store.dispatcher.due_times:
            return None
        size = max(config.write_queue_nums, config.read_queue_nums)
        if size <= 0:
            return None
        return TopicEntry(topic, config.write_queue_nums, size, store.queues)

    # -- the hook ------------------------------------------------------------------------------------
    def _ready(self) -> bool:
        if self._service.config.is_slave or not self._service.topics.broker_permission & PERM_WRITE:
            return False  # a slave, or write permission withdrawn: the general path answers (and refuses)
        # The disk guard as ``admit`` sees it, without sampling: while writes are refused, or once a sample is due
        # (about once a second), the read takes the general path, whose puts refuse or sample as they always do.
        store = self._store
        space = store.space
        return (
            store.is_open
            and not store.commitlog.stuck
            and space.refusal is None
            and space.budget > 0
            and time.monotonic() < space.next_sample
        )

    def __call__(self, conn: Connection, buf: bytearray) -> int:
        if len(buf) < 8 or not self._ready():
            return 0
        began = time.perf_counter()
        service = self._service
        if service.topics.data_version != self._topics_version:
            self._reset_topics()
        store = self._store
        commitlog = store.commitlog
        ctx = self.ctx
        ctx.born_host = born_host(conn)
        ctx.rr = service._rr
        now = ctx.now = int(time.time() * 1000)
        out = bytearray()
        serve = self._serve
        served = 0
        first_offset = commitlog.wrote
        while True:
            ctx.log_wrote = commitlog.wrote
            ctx.log_room = commitlog._tail_room
            ctx.roll_at = commitlog._roll_at
            ctx.missing_topic = None
            pos = serve(buf, ctx, out)
            commitlog.wrote = ctx.log_wrote
            commitlog._tail_room = ctx.log_room
            served += ctx.count
            stop = ctx.stop
            if stop == STOP_COMMIT:
                commitlog.commit()
            elif stop != STOP_SLOW or ctx.missing_topic is None or not self._learn(ctx.missing_topic):
                break
            del buf[:pos]  # served: the next call starts at the frame after them
        service._rr = ctx.rr
        if served:
            self._finish(conn, served, first_offset, out, now)
            if self._send_latency is not None:
                self._send_latency.observe_many((time.perf_counter() - began) / served, served)
        return pos

    def _record_traffic(self, served: int, first_offset: int, appended: int) -> None:
        """Messages and bytes in, per topic, once per read: one topic (the common case) takes the read's totals;
        a read that stored to several topics counts each queue's new entries (those at or past ``first_offset``)."""
        touched = self.ctx.touched
        record_put = self._service.traffic.record_put
        topic = touched[0].topic
        for queue in touched:
            if queue.topic != topic:
                break
        else:
            record_put(topic, served, appended)
            return
        for queue in dict.fromkeys(touched):
            messages = nbytes = 0
            q = queue.max_offset - 1
            while q >= 0:
                entry = queue.entry(q)
                if entry is None or entry[0] < first_offset:
                    break
                messages += 1
                nbytes += entry[1]
                q -= 1
            if messages:
                record_put(queue.topic, messages, nbytes)

    def _finish(self, conn: Connection, served: int, first_offset: int, out: bytearray, now: int) -> None:
        """What the slow path does per request, once per read: index, counters, commit, reply, listeners."""
        ctx = self.ctx
        store = self._store
        appended = store.commitlog.wrote - first_offset
        self._record_traffic(served, first_offset, appended)
        dispatcher = store.dispatcher
        if ctx.index_entries:
            store.index.put_many(ctx.index_entries, now)
            ctx.index_entries.clear()
        dispatcher.last_store_timestamp = now
        store.space.charge_puts(served, 0 if store.commitlog.tail_reserved else appended)
        self._service.sent_messages += served
        self.served += served
        if self._requests is not None:
            self._requests[_SEND_V2_KEY] = self._requests.get(_SEND_V2_KEY, 0.0) + served
        touched = ctx.touched
        try:
            store.commit()  # into the files before any acknowledgement leaves
        except ServiceNotAvailableError as exc:
            limited_log.warning("fast path commit", "%d sends from %s not acknowledged: %s", served, conn.peer, exc)
            touched.clear()
            return
        service = self._service
        if service.must_wait:  # SYNC_FLUSH / SYNC_MASTER: the group commit or the slave's ack releases them
            service.parking.park(conn, out, store.commitlog.wrote)
        else:
            conn.write_raw(out)
        if dispatcher.listeners:
            notify = dispatcher.notify
            for queue in dict.fromkeys(touched):
                notify(queue.topic, queue.queue_id, queue.max_offset, None)  # None: waiters wake whatever their tags
        touched.clear()
