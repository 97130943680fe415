"""Blocking wrappers for scripts and the CLI: each runs its client on a private loop in a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from krocket.common.message import Message, MessageExt
from krocket.common.route import TopicRouteData

from .admin import Admin, ClusterInfo, QueueProgress
from .producer import Producer, Selector
from .pull_consumer import PullConsumer
from .push_consumer import PushConsumer
from .types import ConsumeStatus, MessageQueue, PullResult, SendResult

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine there and waits for it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking krocket call was made from inside its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


class _Sync:
    _client: Any

    def __init__(self, name: str) -> None:
        self._loop = _LoopThread(name)

    def start(self) -> None:
        self._loop.call(self._client.start())

    def shutdown(self) -> None:
        try:
            self._loop.call(self._client.shutdown(), 30.0)
        finally:
            self._loop.stop()

    def __enter__(self: Any) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class SyncProducer(_Sync):
    """``send`` runs on the caller's thread over blocking sockets (one connection per thread and broker) once
    the topic's route is known; the first send of a topic, and everything else, runs on the client's loop."""

    def __init__(
        self, group: str, namesrv: str | None = None, send_timeout: float = 3.0, retries: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(f"krocket-producer-{group}")
        self._client = self.producer = Producer(group, namesrv, send_timeout, retries, **kwargs)
        self._blocking = self.producer.blocking_pool()

    def send(
        self, msg: Message, selector: Selector | None = None, arg: Any = None, timeout: float | None = None
    ) -> SendResult:
        result = self.producer.send_blocking(msg, self._blocking.request, selector, arg, timeout)
        if result is not None:
            return result
        return self._loop.call(self.producer.send(msg, selector, arg, timeout))

    def shutdown(self) -> None:
        self._blocking.close()
        super().shutdown()

    def send_async(
        self,
        msg: Message,
        callback: Callable[[SendResult | None, BaseException | None], None] | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[SendResult]:
        """Send without blocking; ``callback(result, error)`` runs on the client's loop thread."""
        future = asyncio.run_coroutine_threadsafe(self.producer.send(msg, timeout=timeout), self._loop.loop)
        if callback is not None:

            def done(f: concurrent.futures.Future[SendResult]) -> None:
                error = f.exception()
                callback(None if error else f.result(), error)

            future.add_done_callback(done)
        return future

    def send_oneway(self, msg: Message) -> None:
        self._loop.call(self.producer.send_oneway(msg))

    def send_batch(self, messages: Sequence[Message], timeout: float | None = None) -> SendResult:
        return self._loop.call(self.producer.send_batch(messages, timeout))

    def queues(self, topic: str) -> list[MessageQueue]:
        return self._loop.call(self.producer.queues(topic))


class SyncPushConsumer(_Sync):
    """The listener is a plain function; it runs in the consumer's thread pool."""

    def __init__(self, group: str, namesrv: str | None = None, **kwargs: Any) -> None:
        super().__init__(f"krocket-consumer-{group}")
        self._client = self.consumer = PushConsumer(group, namesrv, **kwargs)

    def subscribe(self, topic: str, expression: str = "*") -> None:
        if self._loop.loop.is_running() and self.consumer._instance is not None:
            self._loop.call(self._subscribe(topic, expression))
        else:
            self.consumer.subscribe(topic, expression)

    async def _subscribe(self, topic: str, expression: str) -> None:
        self.consumer.subscribe(topic, expression)

    def register_listener(self, listener: Callable[[list[MessageExt]], ConsumeStatus | None]) -> None:
        self.consumer.register_listener(listener)

    def assigned_queues(self) -> list[MessageQueue]:
        return self.consumer.assigned_queues()


class SyncPullConsumer(_Sync):
    def __init__(self, group: str, namesrv: str | None = None, **kwargs: Any) -> None:
        super().__init__(f"krocket-pull-{group}")
        self._client = self.consumer = PullConsumer(group, namesrv, **kwargs)

    def fetch_queues(self, topic: str) -> list[MessageQueue]:
        return self._loop.call(self.consumer.fetch_queues(topic))

    def pull(
        self,
        queue: MessageQueue,
        expression: str = "*",
        offset: int = 0,
        max_nums: int = 32,
        timeout: float | None = None,
        block_ms: int = 0,
    ) -> PullResult:
        return self._loop.call(self.consumer.pull(queue, expression, offset, max_nums, timeout, block_ms))

    def min_offset(self, queue: MessageQueue) -> int:
        return self._loop.call(self.consumer.min_offset(queue))

    def max_offset(self, queue: MessageQueue) -> int:
        return self._loop.call(self.consumer.max_offset(queue))

    def search_offset(self, queue: MessageQueue, timestamp: float) -> int:
        return self._loop.call(self.consumer.search_offset(queue, timestamp))

    def fetch_offset(self, queue: MessageQueue) -> int:
        return self._loop.call(self.consumer.fetch_offset(queue))

    def update_offset(self, queue: MessageQueue, offset: int) -> None:
        self._loop.call(self.consumer.update_offset(queue, offset))


class SyncAdmin(_Sync):
    def __init__(self, namesrv: str | None = None, **kwargs: Any) -> None:
        super().__init__("krocket-admin")
        self._client = self.admin = Admin(namesrv, **kwargs)

    def create_topic(
        self,
        topic: str,
        read_queues: int = 8,
        write_queues: int = 8,
        perm: int = 6,
        cluster: str | None = None,
        broker_names: list[str] | None = None,
        order: bool = False,
    ) -> list[str]:
        return self._loop.call(
            self.admin.create_topic(topic, read_queues, write_queues, perm, cluster, broker_names, order)
        )

    update_topic = create_topic

    def delete_topic(self, topic: str, cluster: str | None = None, broker_names: list[str] | None = None) -> None:
        self._loop.call(self.admin.delete_topic(topic, cluster, broker_names))

    def list_topics(self) -> list[str]:
        return self._loop.call(self.admin.list_topics())

    def topic_route(self, topic: str) -> TopicRouteData:
        return self._loop.call(self.admin.topic_route(topic))

    def cluster_info(self) -> ClusterInfo:
        return self._loop.call(self.admin.cluster_info())

    def consumer_progress(self, group: str, topic: str | None = None) -> list[QueueProgress]:
        return self._loop.call(self.admin.consumer_progress(group, topic))
