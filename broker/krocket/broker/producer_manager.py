"""Which producers of which producer groups are connected, from their heartbeats' ``producerDataSet`` (34), for
GET_PRODUCER_CONNECTION_LIST (204): client id, address, language, version and the last heartbeat's time.

A client is forgotten when it unregisters (35), when its connection is closed (found on the next read) or when it
has sent no heartbeat for the channel expiry (``channelExpiredTimeout``). Memory is bounded by the heartbeat's
own limit (``MAX_GROUPS_PER_CONNECTION`` groups per connection, checked by ``ConsumerManager`` first) and by a
sweep of every group at most every 10 s of heartbeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from krocket.common.codes import LanguageCode
from krocket.common.remoting import Connection

SWEEP_INTERVAL_MS = 10_000


@dataclass(slots=True)
class ProducerClient:
    client_id: str
    connection: Connection
    language: int
    version: int
    last_update_ms: int

    def to_json(self) -> dict[str, Any]:
        """RocketMQ's Connection, plus the last heartbeat's time (ms since the epoch)."""
        return {
            "clientId": self.client_id,
            "clientAddr": self.connection.peer,
            "language": language_name(self.language),
            "version": self.version,
            "lastUpdateTimestamp": self.last_update_ms,
        }


def language_name(code: int) -> str:
    try:
        return LanguageCode(code).name
    except ValueError:
        return "OTHER"


class ProducerManager:
    def __init__(self, expiry_ms: int, clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._expiry_ms = expiry_ms
        self._clock_ms = clock_ms
        self.groups: dict[str, dict[int, ProducerClient]] = {}  # group -> id(connection) -> client
        self._last_sweep_ms = 0

    def heartbeat(self, conn: Connection, data: dict[str, Any], language: int, version: int) -> None:
        client_id = str(data.get("clientID", ""))
        now = self._clock_ms()
        for producer in data.get("producerDataSet") or []:
            group = str(producer.get("groupName", ""))
            clients = self.groups.setdefault(group, {})
            clients[id(conn)] = ProducerClient(client_id, conn, language, version, now)
            self._prune(group, now)
        if now - self._last_sweep_ms >= SWEEP_INTERVAL_MS:  # groups nobody heartbeats or asks about any more
            self._last_sweep_ms = now
            for group in list(self.groups):
                self._prune(group, now)

    def unregister(self, conn: Connection, group: str) -> None:
        clients = self.groups.get(group)
        if clients is not None and clients.pop(id(conn), None) is not None and not clients:
            del self.groups[group]

    def connections(self, group: str) -> list[ProducerClient]:
        """The group's live clients, by client id and address."""
        self._prune(group, self._clock_ms())
        clients = self.groups.get(group, {})
        return sorted(clients.values(), key=lambda c: (c.client_id, c.connection.peer))

    def _prune(self, group: str, now_ms: int) -> None:
        clients = self.groups.get(group)
        if clients is None:
            return
        for key, client in list(clients.items()):
            if not client.connection.is_open or now_ms - client.last_update_ms > self._expiry_ms:
                del clients[key]
        if not clients:
            del self.groups[group]
