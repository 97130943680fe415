"""Which clients of which consumer groups are connected, from their heartbeats (codes 34 / 35 / 38).

Memory is bounded: one connection registers at most ``MAX_GROUPS_PER_CONNECTION`` producer and consumer groups
(a heartbeat naming more is refused), and a consumer group is forgotten once its last client is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from krocket.common.errors import MessageIllegalError
from krocket.common.remoting import Connection

log = logging.getLogger(__name__)

MAX_GROUPS_PER_CONNECTION = 512


@dataclass
class Subscription:
    topic: str
    sub_string: str
    code_set: set[int]
    tags_set: set[str]
    sub_version: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subscription:
        return cls(
            str(d.get("topic", "")),
            str(d.get("subString", "*") or "*"),
            {int(c) for c in d.get("codeSet") or []},
            set(d.get("tagsSet") or []),
            int(d.get("subVersion", 0) or 0),
        )


@dataclass
class ClientChannel:
    client_id: str
    connection: Connection
    last_update: float


@dataclass
class ConsumerGroupInfo:
    group: str
    message_model: str = "CLUSTERING"
    consume_type: str = "CONSUME_PASSIVELY"
    consume_from: str = "CONSUME_FROM_LAST_OFFSET"
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    channels: dict[int, ClientChannel] = field(default_factory=dict)  # id(connection) -> channel

    def client_ids(self) -> list[str]:
        return sorted({ch.client_id for ch in self.channels.values()})


class ConsumerManager:
    def __init__(
        self, notify: Callable[[str, list[Connection]], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._notify = notify
        self._clock = clock
        self.groups: dict[str, ConsumerGroupInfo] = {}
        self.producers: dict[str, dict[int, ClientChannel]] = {}
        self._groups_of: dict[int, set[tuple[str, str]]] = {}  # id(connection) -> its ("P"|"C", group) names

    def heartbeat(self, conn: Connection, data: dict[str, Any]) -> None:
        """Register the heartbeat's groups; ``MessageIllegalError`` (nothing registered) when the connection
        would hold more than ``MAX_GROUPS_PER_CONNECTION`` groups."""
        client_id = str(data.get("clientID", ""))
        now = self._clock()
        named = {("P", str(p.get("groupName", ""))) for p in data.get("producerDataSet") or []}
        named |= {("C", str(c.get("groupName", ""))) for c in data.get("consumerDataSet") or []}
        held = self._groups_of.get(id(conn), set())
        if len(held | named) > MAX_GROUPS_PER_CONNECTION:
            raise MessageIllegalError(
                f"a connection may register at most {MAX_GROUPS_PER_CONNECTION} producer and consumer groups; "
                f"this heartbeat would make it {len(held | named)}"
            )
        self._groups_of[id(conn)] = held | named
        for producer in data.get("producerDataSet") or []:
            group = str(producer.get("groupName", ""))
            self.producers.setdefault(group, {})[id(conn)] = ClientChannel(client_id, conn, now)
        for consumer in data.get("consumerDataSet") or []:
            group = str(consumer.get("groupName", ""))
            info = self.groups.get(group)
            if info is None:
                info = self.groups[group] = ConsumerGroupInfo(group)
            info.message_model = str(consumer.get("messageModel", "CLUSTERING"))
            info.consume_type = str(consumer.get("consumeType", info.consume_type))
            info.consume_from = str(consumer.get("consumeFromWhere", info.consume_from))
            subs = {}
            for raw in consumer.get("subscriptionDataSet") or []:
                sub = Subscription.from_json(raw)
                subs[sub.topic] = sub
            info.subscriptions = subs
            is_new = id(conn) not in info.channels
            info.channels[id(conn)] = ClientChannel(client_id, conn, now)
            if is_new:
                log.info("consumer %s joined group %s (%d clients)", client_id, group, len(info.channels))
                self._changed(info)

    def unregister(
        self, conn: Connection, client_id: str, consumer_group: str | None, producer_group: str | None
    ) -> None:
        held = self._groups_of.get(id(conn), set())
        if producer_group and producer_group in self.producers:
            self.producers[producer_group].pop(id(conn), None)
            held.discard(("P", producer_group))
        if consumer_group:
            held.discard(("C", consumer_group))
            info = self.groups.get(consumer_group)
            if info is not None and info.channels.pop(id(conn), None) is not None:
                log.info("consumer %s left group %s", client_id, consumer_group)
                self._changed(info)
                self._forget_if_empty(info)

    def connection_closed(self, conn: Connection) -> None:
        for kind, group in self._groups_of.pop(id(conn), set()):
            if kind == "P":
                channels = self.producers.get(group)
                if channels is not None and channels.pop(id(conn), None) is not None and not channels:
                    del self.producers[group]
                continue
            info = self.groups.get(group)
            channel = info.channels.pop(id(conn), None) if info is not None else None
            if info is not None and channel is not None:
                log.info("consumer %s of group %s disconnected", channel.client_id, info.group)
                self._changed(info)
                self._forget_if_empty(info)

    def scan_expired(self, timeout_s: float) -> None:
        now = self._clock()
        for info in list(self.groups.values()):
            for key, channel in list(info.channels.items()):
                if now - channel.last_update > timeout_s:
                    del info.channels[key]
                    log.info(
                        "consumer %s of group %s expired after %.0fs of silence",
                        channel.client_id,
                        info.group,
                        timeout_s,
                    )
                    channel.connection.close()
                    self._changed(info)
            self._forget_if_empty(info)
        for channels in self.producers.values():
            for key, channel in list(channels.items()):
                if now - channel.last_update > timeout_s:
                    del channels[key]

    def client_ids(self, group: str) -> list[str]:
        info = self.groups.get(group)
        return info.client_ids() if info else []

    def is_broadcasting(self, group: str) -> bool:
        info = self.groups.get(group)
        return info is not None and info.message_model == "BROADCASTING"

    def subscription(self, group: str, topic: str) -> Subscription | None:
        info = self.groups.get(group)
        return info.subscriptions.get(topic) if info else None

    def _forget_if_empty(self, info: ConsumerGroupInfo) -> None:
        if not info.channels and self.groups.get(info.group) is info:
            del self.groups[info.group]

    def _changed(self, info: ConsumerGroupInfo) -> None:
        self._notify(info.group, [ch.connection for ch in info.channels.values()])
