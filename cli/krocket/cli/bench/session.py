"""The clients of one bench run: a topic made for it, producers and pull consumers, warmed up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from krocket.cli.bench.bodies import payload
from krocket.cli.bench.options import BenchOptions
from krocket.cli.bench.progress import Progress
from krocket.client import Admin, Message, MessageQueue, Producer, PullConsumer

ROUTE_WAIT_S = 30.0


class Session:
    """Clients of one run: a topic made for it, producers and pull consumers."""

    def __init__(self, namesrv: str, opts: BenchOptions, progress: Progress, tag: str) -> None:
        self.namesrv = namesrv
        self.opts = opts
        self.progress = progress
        self.topic = f"bench-{tag}-{os.getpid()}-{time.time_ns() // 1_000_000}"
        group = self.topic.replace("bench-", "bench_")
        self.admin = Admin(namesrv)
        self.producers = [
            Producer(f"{group}-p", namesrv, instance_name=f"bench-p{i}") for i in range(max(1, opts.producers))
        ]
        self.consumers = [
            PullConsumer(f"{group}-c", namesrv, instance_name=f"bench-c{i}") for i in range(max(1, opts.consumers))
        ]
        self.queues: list[MessageQueue] = []

    @property
    def clients(self) -> list[Producer | PullConsumer]:
        return [*self.producers, *self.consumers]

    async def __aenter__(self) -> Session:
        await self.admin.start()
        try:
            await self.admin.create_topic(self.topic, self.opts.queues, self.opts.queues)
            for client in self.clients:
                await client.start()
            self.queues = await self._wait_route()
            # warm up: routes and connections of every producer and consumer
            for p in self.producers:
                await p.send(Message(self.topic, payload(self.opts.size)))
            for c in self.consumers:
                await c.max_offset(self.queues[0])
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _wait_route(self) -> list[MessageQueue]:
        deadline = time.monotonic() + ROUTE_WAIT_S
        while True:
            try:
                queues = await self.consumers[0].fetch_queues(self.topic)
                if queues:
                    return sorted(queues)
            except Exception:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.shutdown()
        with contextlib.suppress(Exception):
            await self.admin.delete_topic(self.topic)
        with contextlib.suppress(Exception):
            await self.admin.shutdown()
