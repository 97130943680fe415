"""A broker's logic above the store, in-process: BrokerService over a real MessageStore under tmp_path, the
remoting processors called as the transport calls them, and requests built from the typed headers."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from krocket.broker.config import BrokerConfig
from krocket.broker.consumer_manager import ConsumerManager
from krocket.broker.long_polling import LongPolling
from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.processors import BrokerHandler, make_handler
from krocket.broker.service import BrokerService
from krocket.broker.store import MessageStore
from krocket.broker.topic_manager import TopicManager
from krocket.common.codes import PULL_FLAG_SUBSCRIPTION, PULL_FLAG_SUSPEND, RequestCode
from krocket.common.errors import KrocketError
from krocket.common.headers import PullMessageHeader, RequestHeader, SendMessageHeader
from krocket.common.message import PROPERTY_TAGS, PROPERTY_UNIQ_KEY, encode_properties
from krocket.common.metrics import Metrics
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.topic import TopicConfig

from tests.unit.store.store_helpers import small_config


class FakeConn:
    """Stands in for ``Connection``: what the processors and the consumer manager use of it."""

    def __init__(self, peer: str = "10.0.0.9:51000") -> None:
        self.attributes: dict[str, Any] = {}
        self.peer = peer
        self.is_open = True

    def close(self) -> None:
        self.is_open = False


@dataclass
class BrokerRig:
    service: BrokerService
    store: MessageStore
    topics: TopicManager
    offsets: ConsumerOffsetManager
    consumers: ConsumerManager
    polling: LongPolling
    metrics: Metrics
    handler: BrokerHandler
    notified: list[tuple[str, int]]  # (group, connections told) of each consumer-ids-changed
    conn: FakeConn = field(default_factory=FakeConn)

    async def answer(self, cmd: RemotingCommand, conn: FakeConn | None = None) -> RemotingCommand:
        """The response, as the transport makes it: a KrocketError becomes its response code."""
        try:
            result = self.handler(cast(Connection, conn or self.conn), cmd)
            if inspect.isawaitable(result):
                result = await result
        except KrocketError as exc:
            return cmd.response(exc.code, exc.message)
        return result

    def topic(self, name: str, queues: int = 4) -> None:
        self.topics.upsert(TopicConfig(name, queues, queues))


def make_rig(tmp_path: Path, store_overrides: dict[str, Any] | None = None, **config: Any) -> BrokerRig:
    """``config``: BrokerConfig fields; ``store_overrides``: StoreConfig fields (``flush_mode``, say)."""
    broker_config = BrokerConfig(store_path_root_dir=str(tmp_path), **config)
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    store = MessageStore(small_config(tmp_path / "store", **(store_overrides or {})), usage_fn=lambda _p: 0.1)
    store.open()
    topics = TopicManager(
        tmp_path / "config", broker_config.auto_create_topic_enable, broker_config.default_topic_queue_nums
    )
    topics.load()
    offsets = ConsumerOffsetManager(tmp_path / "config")
    polling = LongPolling()
    notified: list[tuple[str, int]] = []
    consumers = ConsumerManager(lambda group, conns: notified.append((group, len(conns))))
    service = BrokerService(broker_config, store, topics, offsets, consumers, polling)
    store.on_dispatched(service.on_dispatched)
    metrics = Metrics()
    return BrokerRig(
        service, store, topics, offsets, consumers, polling, metrics, make_handler(service, metrics), notified
    )


def send_header(topic: str, queue_id: int = 0, tags: str | None = "TagA", **overrides: Any) -> SendMessageHeader:
    """A send's header as krocket's producer fills it."""
    props = {PROPERTY_UNIQ_KEY: "UNIQ-1"}
    if tags:
        props[PROPERTY_TAGS] = tags
    values: dict[str, Any] = dict(
        producer_group="pg",
        topic=topic,
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=queue_id,
        sys_flag=0,
        born_timestamp=1_700_000_000_000,
        flag=0,
        properties=encode_properties(props).decode(),
        reconsume_times=0,
        unit_mode=False,
        batch=False,
    )
    values.update(overrides)
    return SendMessageHeader(**values)


def send_v2(header: SendMessageHeader, body: bytes, code: int = RequestCode.SEND_MESSAGE_V2) -> RemotingCommand:
    return RemotingCommand(code, opaque=1, ext_fields=header.to_v2_fields(), body=body)


def request(code: int, header: RequestHeader | None = None, body: bytes = b"") -> RemotingCommand:
    return RemotingCommand(code, opaque=1, ext_fields=header.to_fields() if header else {}, body=body)


def pull_request(
    topic: str,
    queue_id: int = 0,
    offset: int = 0,
    expression: str | None = "*",
    suspend_ms: int = 0,
    group: str = "cg",
    sys_flag: int | None = None,
    **overrides: Any,
) -> RemotingCommand:
    flag = (PULL_FLAG_SUBSCRIPTION if expression is not None else 0) | (PULL_FLAG_SUSPEND if suspend_ms else 0)
    header = PullMessageHeader(
        consumer_group=group,
        topic=topic,
        queue_id=queue_id,
        queue_offset=offset,
        sys_flag=flag if sys_flag is None else sys_flag,
        suspend_timeout_millis=suspend_ms,
        subscription=expression,
        expression_type="TAG",
        **overrides,
    )
    return request(RequestCode.PULL_MESSAGE, header)
