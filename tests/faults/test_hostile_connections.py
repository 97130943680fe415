"""Hostile connections against a real broker and name server: bounded memory, timeouts, a connection limit,
replies that always encode, and no retry topic per heartbeat."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.headers import CreateTopicHeader
from krocket.common.remoting import ConnectionPool, FrameDecoder, RemotingCommand, encode

from tests.support.cluster import ChildProcess, LocalCluster, start_cluster
from tests.support.remoting import call, send

MIB = 1024 * 1024
BUDGET = 64 * MIB


def _broker_with(tmp_path: Path, settings: dict[str, object]) -> Iterator[LocalCluster]:
    config = tmp_path / "broker.yml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, extra_broker_args=["--config", str(config)])
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from _broker_with(
        tmp_path,
        {
            "serverBufferBudgetBytes": BUDGET,
            "incompleteFrameTimeoutMills": 1500,
            "channelIdleTimeoutMills": 4000,
            "maxConnections": 800,
        },
    )


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _is_closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def _wait_all_closed(socks: list[socket.socket], timeout: float) -> float:
    start = time.monotonic()
    open_socks = list(socks)
    while open_socks and time.monotonic() - start < timeout:
        open_socks = [s for s in open_socks if not _is_closed_by_peer(s)]
        time.sleep(0.05)
    assert not open_socks, f"{len(open_socks)} of {len(socks)} connections still open after {timeout}s"
    return time.monotonic() - start


def test_slow_connections_and_half_sent_frames_leave_rss_bounded(limited: LocalCluster) -> None:
    broker = limited.brokers[0]
    assert broker.pid is not None
    before = _rss_mib(broker.pid)
    slow = [_connect(broker.port) for _ in range(500)]
    for sock in slow:
        sock.send(b"\x00\x00")  # a few bytes of a length prefix, then nothing
    half_sent = []
    partial = struct.pack(">ii", 15 * MIB + 100, 2) + b"{}" + b"x" * (15 * MIB - 10)
    for _ in range(12):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        try:
            sock.sendall(partial)
        except OSError:
            pass  # the broker closed it: over the budget
        half_sent.append(sock)
    time.sleep(0.5)
    peak = _rss_mib(broker.pid)
    print(f"\nbroker RSS {before:.0f} MiB -> {peak:.0f} MiB with 500 slow and 12 half-sent 15 MiB frames")
    assert peak - before < BUDGET / MIB + 48, (before, peak)
    # the broker still serves, and every holder of an incomplete frame is closed after the timeout
    reply = asyncio.run(_runtime_info(broker.addr))
    assert reply.code == ResponseCode.SUCCESS
    for sock in half_sent:
        sock.setblocking(False)
    waited = _wait_all_closed(slow + half_sent, 6.0)
    assert waited < 4.0
    assert broker.is_running()
    for sock in slow + half_sent:
        sock.close()


async def _runtime_info(addr: str) -> RemotingCommand:
    pool = ConnectionPool()
    try:
        return await pool.request(addr, RemotingCommand(RequestCode.GET_BROKER_RUNTIME_INFO), 5.0)
    finally:
        await pool.close()


def test_idle_connections_are_closed_after_the_channel_idle_timeout(limited: LocalCluster) -> None:
    broker = limited.brokers[0]
    idle = [_connect(broker.port) for _ in range(20)]
    start = time.monotonic()
    time.sleep(2.5)
    assert not any(_is_closed_by_peer(s) for s in idle)  # not before the idle timeout (4 s)
    _wait_all_closed(idle, 5.0)
    assert 3.8 <= time.monotonic() - start < 7.0
    for sock in idle:
        sock.close()


def test_max_connections_is_enforced(limited: LocalCluster) -> None:
    broker = limited.brokers[0]
    log_before = Path(broker.log_path).stat().st_size
    socks = [_connect(broker.port) for _ in range(900)]
    time.sleep(1.0)
    refused = [s for s in socks if _is_closed_by_peer(s)]
    assert len(refused) >= 100 - 5  # 800 allowed (a few may be counted from the cluster's own links)
    assert len(refused) <= 100 + 5
    log = Path(broker.log_path).read_bytes()[log_before:].decode(errors="replace")
    assert 1 <= log.count("refusing a connection") <= 2  # one rate-limited line for ~100 refusals
    for sock in socks:
        sock.close()
    time.sleep(0.3)
    assert asyncio.run(_runtime_info(broker.addr)).code == ResponseCode.SUCCESS


def _raw_request(port: int, header: str, body: bytes = b"") -> list[RemotingCommand] | None:
    """One hand-written JSON header; the replies, or None when the connection was closed without one."""
    raw = header.encode()
    frame = struct.pack(">ii", 4 + len(raw) + len(body), len(raw)) + raw + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame)
        decoder = FrameDecoder()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return None
            got = decoder.feed(data)
            if got:
                return got
    raise AssertionError(f"no reply within 5 s to {header}")


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("field", ["remark", "topic"])
def test_surrogates_in_echoed_fields_are_answered_by_name_server_and_broker(plain: LocalCluster, field: str) -> None:
    value = '"\\ud800x\\udfff"'
    ext = '{"topic":' + value + "}" if field == "topic" else '{"topic":"T"}'
    remark = ',"remark":' + value if field == "remark" else ""
    namesrv_header = '{"code":105,"opaque":7,"flag":0,"extFields":' + ext + remark + "}"
    replies = _raw_request(plain.namesrvs[0].port, namesrv_header)
    assert replies and replies[0].opaque == 7
    queue_ext = ext[:-1] + ',"queueId":"0"}'
    for code in (RequestCode.GET_MAX_OFFSET, RequestCode.PULL_MESSAGE):
        broker_header = '{"code":' + str(int(code)) + ',"opaque":8,"flag":0,"extFields":' + queue_ext + remark + "}"
        replies = _raw_request(plain.brokers[0].port, broker_header)
        assert replies and replies[0].opaque == 8
    log = Path(plain.brokers[0].log_path).read_text(errors="replace")
    assert "Traceback" not in log and "UnicodeEncodeError" not in log


def test_heartbeats_create_no_retry_topics_and_a_retry_send_creates_one(plain: LocalCluster) -> None:
    asyncio.run(_heartbeats_then_retry(plain.brokers[0].addr))


async def _heartbeats_then_retry(addr: str) -> None:
    pool = ConnectionPool()
    try:
        for i in range(300):
            beat = {
                "clientID": f"c{i}",
                "consumerDataSet": [{"groupName": f"group-{i}", "subscriptionDataSet": [{"topic": "T"}]}],
            }
            reply = await call(pool, addr, RequestCode.HEART_BEAT, {}, json.dumps(beat).encode())
            assert reply.code == ResponseCode.SUCCESS
        topics = await _topic_names(pool, addr)
        assert not [t for t in topics if t.startswith("%RETRY%")]
        sent = await send(pool, addr, "%RETRY%group-7", b"retry me")  # the first need: a send back
        assert sent.code == ResponseCode.SUCCESS, sent.remark
        assert "%RETRY%group-7" in await _topic_names(pool, addr)
        assert len([t for t in await _topic_names(pool, addr) if t.startswith("%RETRY%")]) == 1
    finally:
        await pool.close()


async def _topic_names(pool: ConnectionPool, addr: str) -> set[str]:
    reply = await call(pool, addr, RequestCode.GET_ALL_TOPIC_CONFIG)
    assert reply.code == ResponseCode.SUCCESS
    return set(json.loads(reply.body)["topicConfigTable"])


def test_a_peer_that_reads_no_replies_does_not_grow_broker_memory(plain: LocalCluster) -> None:
    broker = plain.brokers[0]
    assert broker.pid is not None
    asyncio.run(_fill_topic(broker.addr))
    before = _rss_mib(broker.pid)
    pull = {"consumerGroup": "g", "topic": "Big", "queueId": "0", "queueOffset": "0", "maxMsgNums": "32"}
    pull |= {"sysFlag": "0", "commitOffset": "0", "suspendTimeoutMillis": "0", "subscription": "*"}
    frames = b"".join(encode(RemotingCommand(RequestCode.PULL_MESSAGE, opaque=i, ext_fields=pull)) for i in range(3000))
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 5
    while sent < len(frames) and time.monotonic() < deadline:  # 3000 pulls of ~1 MiB each, no reply read
        try:
            sent += sock.send(frames[sent:])
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(1.0)
    grown = _rss_mib(broker.pid) - before
    print(f"\nbroker RSS grew {grown:.0f} MiB while a peer asked for ~3 GiB of replies and read none")
    assert grown < 64, grown
    assert asyncio.run(_runtime_info(broker.addr)).code == ResponseCode.SUCCESS
    sock.close()


async def _fill_topic(addr: str) -> None:
    pool = ConnectionPool()
    try:
        header = CreateTopicHeader("Big", "TBW102", read_queue_nums=1, write_queue_nums=1)
        created = await call(pool, addr, RequestCode.UPDATE_AND_CREATE_TOPIC, header)
        assert created.code == ResponseCode.SUCCESS, created.remark
        body = b"z" * (32 * 1024)
        for _ in range(40):
            assert (await send(pool, addr, "Big", body)).code == ResponseCode.SUCCESS
    finally:
        await pool.close()


def test_name_server_limits_from_its_command_line(tmp_path: Path) -> None:
    args = ["--host", "127.0.0.1", "--listen-port", "0", "--http-port", "0"]
    args += ["--max-connections", "5", "--channel-idle-timeout-ms", "1500"]
    namesrv = ChildProcess("namesrv", "namesrv-limited", args, tmp_path, tmp_path / "namesrv.log")
    namesrv.start()
    try:
        namesrv.wait_ports()
        socks = [_connect(namesrv.port) for _ in range(8)]
        time.sleep(0.5)
        assert sum(_is_closed_by_peer(s) for s in socks) == 3  # over the maximum: closed at once
        start = time.monotonic()
        _wait_all_closed(socks, 4.0)  # the rest: closed once idle for 1.5 s
        assert time.monotonic() - start >= 0.8
        for sock in socks:
            sock.close()
    finally:
        namesrv.stop()
