"""``krocket bench floor``: what a one-at-a-time request/response costs on this machine before krocket's logic.

Each measurement is a closed loop of ``--n`` round trips over 127.0.0.1 with the server on CPU 0 and the
client on CPU 1 (as ``--pin`` does for the other verbs), and prints one JSON line:

- ``echo-asyncio``: a minimal ``asyncio.Protocol`` server answers each request frame (a real ~1.4 KiB
  SEND_MESSAGE_V2 frame) with a 244-byte frame, and an ``asyncio.Protocol`` client sends the next request when
  the answer is in. No krocket code on either side: the floor of any Python asyncio request/response here.
- ``echo-blocking``: the same server, a blocking-socket client: how much of that floor is the server's.
- ``broker-blocking``: a local krocket broker fed pre-encoded SEND_MESSAGE_V2 frames from a blocking socket:
  the broker's own ceiling for acked one-at-a-time sends, with the cheapest client there can be.

The one-at-a-time send target (8.3 k/s) needs a round trip of 120 us; these figures say how much of that the
event loop, the kernel and the broker each take.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from krocket.cli.arg_types import positive_int
from krocket.cli.bench import system
from krocket.common.codes import RequestCode
from krocket.common.errors import ConfigError
from krocket.common.headers import SEND_V2_NAMES
from krocket.common.remoting.command import RemotingCommand, encode_parts

LENGTH = struct.Struct(">i")
REPLY_BYTES = 244  # a SEND_MESSAGE_V2 reply of krocket's broker is about this long


def _reply_frame() -> bytes:
    return LENGTH.pack(REPLY_BYTES - 4) + b"\0" * (REPLY_BYTES - 4)


class _EchoServer(asyncio.Protocol):
    """Answers every complete length-prefixed frame with one canned reply frame."""

    def __init__(self) -> None:
        self._buf = b""
        self._reply = _reply_frame()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        answers = 0
        while len(buf) >= 4:
            size = LENGTH.unpack_from(buf)[0] + 4
            if len(buf) < size:
                break
            buf = buf[size:]
            answers += 1
        self._buf = buf
        if answers and self._transport is not None:
            self._transport.write(self._reply * answers)


async def _serve_echo() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoServer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


def _frame_reader(sock: socket.socket) -> Any:
    buf = bytearray()

    def read_frame() -> None:
        nonlocal buf
        while True:
            if len(buf) >= 4:
                size = LENGTH.unpack_from(buf)[0] + 4
                if len(buf) >= size:
                    del buf[:size]
                    return
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk

    return read_frame


def _blocking_round_trips(port: int, frames: list[bytes], server_pid: int | None) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        read_frame = _frame_reader(sock)
        sock.sendall(frames[0])  # warm up; the rest are measured
        read_frame()

        def round_trip(frame: bytes) -> None:
            sock.sendall(frame)
            read_frame()

        return _timed(round_trip, frames[1:], server_pid)


def _timed(round_trip: Any, frames: list[bytes], server_pid: int | None) -> dict[str, Any]:
    server0 = system.cpu_seconds(server_pid) if server_pid else None
    client0 = time.process_time()
    t0 = time.perf_counter()
    for frame in frames:
        round_trip(frame)
    return _figures(len(frames), time.perf_counter() - t0, time.process_time() - client0, server_pid, server0)


def _figures(n: int, secs: float, client_cpu: float, server_pid: int | None, server0: float | None) -> dict[str, Any]:
    server_us = None
    if server_pid and server0 is not None:
        now = system.cpu_seconds(server_pid)
        server_us = None if now is None else round((now - server0) / n * 1e6, 1)
    return {
        "round_trips": n,
        "round_trips_per_s": round(n / secs),
        "round_trip_us": round(secs / n * 1e6, 1),
        "client_us_per_rt": round(client_cpu / n * 1e6, 1),
        "server_us_per_rt": server_us,
    }


class _EchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self._unanswered_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._unanswered_bytes += len(data)
        if self._unanswered_bytes >= REPLY_BYTES and self.waiter is not None and not self.waiter.done():
            self._unanswered_bytes -= REPLY_BYTES
            self.waiter.set_result(None)


async def _asyncio_round_trips(port: int, frames: list[bytes], server_pid: int | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_EchoClient, "127.0.0.1", port)
    try:
        client.waiter = loop.create_future()
        transport.write(frames[0])  # warm up; the rest are measured
        await client.waiter
        server0 = system.cpu_seconds(server_pid) if server_pid else None
        client0 = time.process_time()
        t0 = time.perf_counter()
        for frame in frames[1:]:
            client.waiter = loop.create_future()
            transport.write(frame)
            await client.waiter
        n = len(frames) - 1
        return _figures(n, time.perf_counter() - t0, time.process_time() - client0, server_pid, server0)
    finally:
        transport.close()


def _start_echo_server(loop_name: str, pin: bool) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "krocket.cli.bench.floor", "--serve-echo", loop_name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise ConfigError(f"the echo server did not start (printed {line!r})")
    if pin:
        system.pin_pid_threads(proc.pid, {system.BROKER_CPU})
    return proc, int(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _send_frames(namesrv: str, n: int, size: int) -> tuple[str, list[bytes]]:
    """The broker address of a fresh topic's first queue and ``n`` + 1 SEND_MESSAGE_V2 frames for it (one to warm
    up), encoded the way ``Producer.send`` encodes them."""
    from krocket.client import Message, Producer
    from krocket.client.broker_api import send_command

    topic = f"BenchFloor{os.getpid()}"
    producer = Producer("bench_floor", namesrv)
    await producer.start()
    try:
        msg = Message(topic, b"x" * size)
        await producer.send(msg)  # auto-creates the topic
        queue = (await producer.queues(topic))[0]
        addr = producer.instance.broker_addr(queue.broker_name, only_this=True)
        if addr is None:
            raise ConfigError(f"topic {topic} has no master in its route")
        frames = []
        for i in range(n + 1):
            _uniq, props, body, sys_flag = producer._prepare(msg)
            header = producer._header(topic, queue.queue_id, props, sys_flag, 0, False)
            cmd: RemotingCommand = send_command(header, body)
            cmd.opaque = i + 1
            head, tail = encode_parts(cmd)
            frames.append(head + tail)
        return addr, frames
    finally:
        await producer.shutdown()


def _sample_frames(n: int, size: int) -> list[bytes]:
    """Request frames shaped like SEND_MESSAGE_V2 (for the echo server, which only frames them)."""
    names = SEND_V2_NAMES
    fields = {names.producer_group: "bench_floor", names.topic: "BenchFloor", names.properties: "UNIQ_KEY\x01x\x02"}
    cmd = RemotingCommand(RequestCode.SEND_MESSAGE_V2, ext_fields=fields, body=b"x" * size)
    head, tail = encode_parts(cmd)
    return [head + tail] * n


def floor_main(args: argparse.Namespace) -> int:
    if args.server_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError("--server-loop uvloop needs the uvloop package: pip install 'krocket[fast]'") from None
    pin = system.can_pin()
    if pin:
        system.pin_self()
    loop_name = args.server_loop
    runs: list[dict[str, Any]] = []
    progress = (lambda m: None) if args.quiet or args.json else (lambda m: print(f"[floor] {m}", file=sys.stderr))

    proc, port = _start_echo_server(loop_name, pin)
    try:
        frames = _sample_frames(args.n + 1, args.size)
        progress(f"echo server ({loop_name}) on 127.0.0.1:{port}: {args.n} round trips from an asyncio client")
        runs.append({"mode": "echo-asyncio", **asyncio.run(_asyncio_round_trips(port, frames, proc.pid))})
        progress(f"echo server ({loop_name}): {args.n} round trips from a blocking client")
        runs.append({"mode": "echo-blocking", **_blocking_round_trips(port, frames, proc.pid)})
    finally:
        _stop(proc)

    os.environ["KROCKET_LOOP"] = loop_name  # the local broker runs on the same loop as the echo server
    with system.BenchCluster(pin=pin, progress=progress) as cluster:
        addr, frames = asyncio.run(_send_frames(cluster.namesrv, args.n, args.size))
        progress(f"broker at {addr}: {args.n} acked SEND_MESSAGE_V2 round trips from a blocking client")
        _host, _, broker_port = addr.rpartition(":")
        runs.append({"mode": "broker-blocking", **_blocking_round_trips(int(broker_port), frames, cluster.broker_pid)})

    for run in runs:
        line = {"system": "floor", "server_loop": loop_name, "pinned": pin, "msg_bytes": args.size, **run}
        if not args.json:
            print(
                f"{run['mode']}: {run['round_trips_per_s']} round trips/s ({run['round_trip_us']} us each; client "
                f"{run['client_us_per_rt']} us, server {run['server_us_per_rt']} us of CPU per round trip)",
                file=sys.stderr,
            )
        print(json.dumps(line), flush=True)
    return 0


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "floor",
        help="the cost of a bare request/response on this machine: asyncio echo, blocking echo, broker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=positive_int, default=20_000, help="round trips per measurement (default 20000)")
    p.add_argument("--size", type=positive_int, default=1024, help="message body bytes (default 1024)")
    p.add_argument(
        "--server-loop", choices=["asyncio", "uvloop"], default="asyncio",
        help="event loop of the echo server and the broker (default asyncio)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="stdout gets only the JSON lines")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=floor_main)


def _main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-echo":
        loop_name = sys.argv[2]
        if loop_name == "uvloop":
            import uvloop

            uvloop.run(_serve_echo())
        else:
            asyncio.run(_serve_echo())
        return
    raise SystemExit("usage: python -m krocket.cli.bench.floor --serve-echo asyncio|uvloop")


if __name__ == "__main__":
    _main()
