"""Which clients of which consumer groups are connected, from their heartbeats (codes 34 / 35 / 38)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from krocket.common.remoting import Connection

log = logging.getLogger(__name__)


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

    def heartbeat(self, conn: Connection, data: dict[str, Any]) -> None:
        client_id = str(data.get("clientID", ""))
        now = self._clock()
        for producer in data.get("producerDataSet") or []:
            group = str(producer.get("groupName", ""))
            self.producers.setdefault(group, {})[id(conn)] = ClientChannel(client_id, conn, now)
        for consumer in data.get("consumerDataSet") or []:
            group = str(consumer.get("groupName", ""))
            info = self.groups.get(group)
            if info is None:
                info = self.groups[group] = ConsumerGroupInfo(group)
            info.message_model = str(consumer.get("messageModel", "CLUSTERING"))
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
        if producer_group and producer_group in self.producers:
            self.producers[producer_group].pop(id(conn), None)
        if consumer_group:
            info = self.groups.get(consumer_group)
            if info is not None and info.channels.pop(id(conn), None) is not None:
                log.info("consumer %s left group %s", client_id, consumer_group)
                self._changed(info)

    def connection_closed(self, conn: Connection) -> None:
        for channels in self.producers.values():
            channels.pop(id(conn), None)
        for info in list(self.groups.values()):
            channel = info.channels.pop(id(conn), None)
            if channel is not None:
                log.info("consumer %s of group %s disconnected", channel.client_id, info.group)
                self._changed(info)

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
        for channels in self.producers.values():
            for key, channel in list(channels.items()):
                if now - channel.last_update > timeout_s:
                    del channels[key]

    def client_ids(self, group: str) -> list[str]:
        info = self.groups.get(group)
        return info.client_ids() if info else []

    def subscription(self, group: str, topic: str) -> Subscription | None:
        info = self.groups.get(group)
        return info.subscriptions.get(topic) if info else None

    def _changed(self, info: ConsumerGroupInfo) -> None:
        self._notify(info.group, [ch.connection for ch in info.channels.values()])
