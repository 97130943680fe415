"""``krocket bench grpc --clients stubs-window``: the broker's gRPC ceiling without the 5.x SDK.

krocket's own generated stubs (``krocket.broker.grpc.protocol``) over ``grpc.aio`` in this process: ``window``
SendMessage calls in flight on one channel (one message each, as the SDK sends), every send's latency recorded;
then ``RECEIVERS`` ReceiveMessage calls in flight, each batch acked with one AckMessage of all its entries. The
figures come back in the raw shape the SDK driver prints (``grpc_report.phase_result`` reads both)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc
from krocket.cli.bench.options import MAX_ERRORS
from krocket.cli.bench.progress import Progress
from krocket.cli.bench.system import cpu_seconds

RECEIVERS = 4  # ReceiveMessage calls in flight in the consume phase
CALL_TIMEOUT_S = 10.0
ROUTE_WAIT_S = 30.0
POLL_S = 2  # a receive's long-polling time


class StubError(Exception):
    """A call the broker answered with a status other than OK."""


def _check(status: pb.Status, what: str) -> None:
    if status.code != pb.OK:
        raise StubError(f"{what}: {pb.Code.Name(status.code)} {status.message}")


def _duration(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    d = Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d


class StubClient:
    """One grpc.aio channel to a broker's gRPC port, with the headers a 5.x client sends."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.channel = grpc.aio.insecure_channel(endpoint)
        self.stub = rpc_grpc.MessagingServiceStub(self.channel)
        self.client_id = f"krocket-bench-stubs-{os.getpid()}-{time.time_ns()}"
        self.metadata = (
            ("x-mq-client-id", self.client_id),
            ("x-mq-language", "PYTHON"),
            ("x-mq-client-version", "krocket-bench"),
            ("x-mq-protocol", "v2"),
        )
        self._id_prefix = os.urandom(12).hex().upper()
        self._next_id = 0

    async def route(self, topic: str) -> pb.MessageQueue:
        """A queue of ``topic``'s route, waiting (bounded) until the broker knows it."""
        host, _, port = self.endpoint.rpartition(":")
        request = rpc.QueryRouteRequest(
            topic=pb.Resource(name=topic),
            endpoints=pb.Endpoints(scheme=pb.IPv4, addresses=[pb.Address(host=host, port=int(port))]),
        )
        deadline = time.monotonic() + ROUTE_WAIT_S
        while True:
            reply = await self.stub.QueryRoute(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            if reply.status.code == pb.OK and reply.message_queues:
                return reply.message_queues[0]
            if time.monotonic() > deadline:
                _check(reply.status, f"QueryRoute {topic}")
                raise StubError(f"QueryRoute {topic}: no queue")
            await asyncio.sleep(0.2)

    def message_id(self) -> str:
        self._next_id += 1
        return f"{self._id_prefix}{self._next_id:08X}"

    def send_request(self, topic: str, body: bytes, message_id: str) -> rpc.SendMessageRequest:
        props = pb.SystemProperties(message_id=message_id, message_type=pb.NORMAL, body_encoding=pb.IDENTITY)
        props.born_timestamp.GetCurrentTime()
        props.born_host = "127.0.0.1"
        return rpc.SendMessageRequest(messages=[pb.Message(topic=pb.Resource(name=topic), system_properties=props,
                                                           body=body)])  # fmt: skip

    async def send(self, request: rpc.SendMessageRequest) -> None:
        reply = await self.stub.SendMessage(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        _check(reply.status, "SendMessage")
        for entry in reply.entries:
            _check(entry.status, "SendMessage entry")

    async def receive(self, queue: pb.MessageQueue, group: str, batch: int, invisible_s: int) -> list[pb.Message]:
        request = rpc.ReceiveMessageRequest(
            group=pb.Resource(name=group),
            message_queue=queue,
            filter_expression=pb.FilterExpression(type=pb.TAG, expression="*"),
            batch_size=batch,
            invisible_duration=_duration(invisible_s),
            long_polling_timeout=_duration(POLL_S),
        )
        out = []
        call = self.stub.ReceiveMessage(request, metadata=self.metadata, timeout=POLL_S + CALL_TIMEOUT_S)
        async for reply in call:
            kind = reply.WhichOneof("content")
            if kind == "status" and reply.status.code not in (pb.OK, pb.MESSAGE_NOT_FOUND):
                _check(reply.status, "ReceiveMessage")
            elif kind == "message":
                out.append(reply.message)
        return out

    async def ack(self, topic: str, group: str, messages: list[pb.Message]) -> int:
        entries = [
            rpc.AckMessageEntry(message_id=m.system_properties.message_id,
                                receipt_handle=m.system_properties.receipt_handle)
            for m in messages
        ]  # fmt: skip
        request = rpc.AckMessageRequest(group=pb.Resource(name=group), topic=pb.Resource(name=topic), entries=entries)
        reply = await self.stub.AckMessage(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        _check(reply.status, "AckMessage")
        return sum(1 for e in reply.entries if e.status.code == pb.OK)

    async def close(self) -> None:
        await self.channel.close()


@dataclass
class Phase:
    """Raw figures of one phase, in the driver's shape."""

    limit: int
    deadline: float
    broker_pid: int | None
    msgs: int = 0
    claimed: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_us: list[int] = field(default_factory=list)
    client0: float = field(default_factory=time.process_time)
    broker0: float | None = None

    def __post_init__(self) -> None:
        self.broker0 = cpu_seconds(self.broker_pid) if self.broker_pid else None

    def failed(self, exc: BaseException, progress: Progress) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"
            progress.log(f"stubs: {self.first_error}")

    def figures(self, secs: float, **extra: Any) -> dict[str, Any]:
        broker = cpu_seconds(self.broker_pid) if self.broker_pid else None
        return {
            "msgs": self.msgs,
            "secs": round(secs, 4),
            "errors": self.errors,
            "first_error": self.first_error,
            "client_cpu_s": round(time.process_time() - self.client0, 4),
            "broker_cpu_s": None if broker is None or self.broker0 is None else round(broker - self.broker0, 4),
            **extra,
        }


async def send_window(
    client: StubClient, topic: str, body: bytes, window: int, phase: Phase, progress: Progress
) -> tuple[float, list[str]]:
    """``window`` sends in flight until ``phase.limit`` or its deadline; the elapsed seconds and the ids sent."""
    sent: list[str] = []

    async def worker() -> None:
        while phase.claimed < phase.limit and phase.errors < MAX_ERRORS and time.monotonic() < phase.deadline:
            phase.claimed += 1
            message_id = client.message_id()
            request = client.send_request(topic, body, message_id)
            started = time.perf_counter()
            try:
                await client.send(request)
            except (grpc.aio.AioRpcError, StubError) as exc:
                phase.claimed -= 1
                phase.failed(exc, progress)
                continue
            phase.latencies_us.append(round((time.perf_counter() - started) * 1e6))
            phase.msgs += 1
            progress.produced += 1
            sent.append(message_id)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return time.perf_counter() - t0, sent


async def receive_all(
    client: StubClient, topic: str, group: str, queue: pb.MessageQueue, expect: set[str], phase: Phase,
    progress: Progress, batch: int, invisible_s: int,
) -> tuple[float, int, set[str]]:  # fmt: skip
    """``RECEIVERS`` receive loops until every id in ``expect`` came (or the deadline); each batch acked at once.
    The seconds to the last ack (not to the end of the receives still long-polling then), the deliveries and
    the ids seen."""
    seen: set[str] = set()
    deliveries = 0
    last_ack: float | None = None

    async def worker() -> None:
        nonlocal deliveries, last_ack
        while not expect <= seen and phase.errors < MAX_ERRORS and time.monotonic() < phase.deadline:
            try:
                messages = await client.receive(queue, group, batch, invisible_s)
                if not messages:
                    continue
                deliveries += len(messages)
                seen.update(m.system_properties.message_id for m in messages)
                acked = await client.ack(topic, group, messages)
            except (grpc.aio.AioRpcError, StubError) as exc:
                phase.failed(exc, progress)
                await asyncio.sleep(0.1)
                continue
            phase.msgs += acked
            progress.consumed += acked
            last_ack = time.perf_counter()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(RECEIVERS)))
    return (last_ack if last_ack is not None else time.perf_counter()) - t0, deliveries, seen


async def run_stubs(
    endpoint: str, topic: str, group: str, *, n: int, size: int, window: int, warmup: int, duration: float,
    consume_budget: float, batch: int, invisible_s: int, broker_pid: int | None, progress: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Send, then receive and ack everything sent; the raw produce and consume figures."""
    client = StubClient(endpoint)
    body = b"x" * size
    try:
        t0 = time.perf_counter()
        queue = await client.route(topic)
        warm = Phase(warmup, time.monotonic() + 30.0, None)
        _, warm_ids = await send_window(client, topic, body, 1, warm, progress)
        if warm.errors and not warm.msgs:
            raise StubError(f"every warm-up send failed: {warm.first_error}")
        progress.log(f"stubs: route and {warm.msgs} warm-up sends in {time.perf_counter() - t0:.2f} s")
        progress.produced = 0
        progress.phase = f"stubs send, window {window}"
        phase = Phase(n, time.monotonic() + duration, broker_pid)
        secs, sent = await send_window(client, topic, body, window, phase, progress)
        produce = phase.figures(secs, latencies_us=phase.latencies_us)
        progress.phase = "stubs receive+ack"
        expect = {*sent, *warm_ids}
        cphase = Phase(len(expect), time.monotonic() + consume_budget, broker_pid)
        csecs, deliveries, seen = await receive_all(
            client, topic, group, queue, expect, cphase, progress, batch, invisible_s
        )
        consume = cphase.figures(csecs, acked=cphase.msgs, unique=len(seen), missing=len(expect - seen))
        consume["msgs"] = deliveries
    finally:
        await client.close()
    return produce, consume
