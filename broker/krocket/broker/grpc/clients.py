"""What the broker keeps per 5.x client id: its settings (from Telemetry), its kind, group and topics, when it was
last heard of, and the commands waiting to go out on its Telemetry stream (transaction check-backs)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc

CLIENT_EXPIRY_S = 120.0
"""A client not heard of (call or heartbeat) for this long is forgotten: the 4.x channel expiry."""
MAX_CLIENTS = 100_000
"""At most this many clients are kept; a new one beyond it evicts the longest silent."""
MAX_PENDING_COMMANDS = 1024
"""Commands queued for one client's Telemetry stream; more are dropped (the check-back comes again)."""


@dataclass(slots=True)
class GrpcClient:
    client_id: str
    language: str = ""
    version: str = ""
    peer: str = ""
    settings: pb.Settings | None = None
    last_seen: float = field(default_factory=time.monotonic)
    streams: int = 0  # open Telemetry streams
    outbound: asyncio.Queue[rpc.TelemetryCommand] = field(
        default_factory=lambda: asyncio.Queue(maxsize=MAX_PENDING_COMMANDS)
    )

    @property
    def client_type(self) -> int:
        return self.settings.client_type if self.settings is not None else pb.CLIENT_TYPE_UNSPECIFIED

    @property
    def group(self) -> str:
        if self.settings is not None and self.settings.HasField("subscription"):
            return self.settings.subscription.group.name
        return ""

    @property
    def publishing_topics(self) -> list[str]:
        if self.settings is not None and self.settings.HasField("publishing"):
            return [t.name for t in self.settings.publishing.topics]
        return []

    def push(self, command: rpc.TelemetryCommand) -> bool:
        """Queue a command for the client's Telemetry stream; False when its queue is full."""
        try:
            self.outbound.put_nowait(command)
        except asyncio.QueueFull:
            return False
        return True


class GrpcClients:
    """The known clients by id."""

    def __init__(self, expiry_s: float = CLIENT_EXPIRY_S, limit: int = MAX_CLIENTS) -> None:
        self._clients: dict[str, GrpcClient] = {}
        self._expiry_s = expiry_s
        self._limit = limit

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, client_id: str) -> GrpcClient | None:
        return self._clients.get(client_id)

    def touch(self, client_id: str, language: str = "", version: str = "", peer: str = "") -> GrpcClient:
        """The client, created on first sight, marked as heard of now."""
        client = self._clients.get(client_id)
        if client is None:
            if len(self._clients) >= self._limit:
                self.expire()
                if len(self._clients) >= self._limit:
                    oldest = min(self._clients.values(), key=lambda c: c.last_seen)
                    del self._clients[oldest.client_id]
            client = self._clients[client_id] = GrpcClient(client_id)
        client.last_seen = time.monotonic()
        client.language = language or client.language
        client.version = version or client.version
        client.peer = peer or client.peer
        return client

    def remove(self, client_id: str) -> GrpcClient | None:
        return self._clients.pop(client_id, None)

    def expire(self) -> list[str]:
        """Forget clients silent for longer than the expiry that hold no Telemetry stream open."""
        now = time.monotonic()
        gone = [c.client_id for c in self._clients.values() if not c.streams and now - c.last_seen > self._expiry_s]
        for client_id in gone:
            del self._clients[client_id]
        return gone

    def producers_of(self, topic: str) -> list[GrpcClient]:
        """Live producers that publish ``topic`` and hold a Telemetry stream (check-backs go to them)."""
        return [c for c in self._clients.values() if c.streams and topic in c.publishing_topics]

    def all(self) -> list[GrpcClient]:
        return list(self._clients.values())
