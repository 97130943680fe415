"""The send processor under SYNC_FLUSH, in process: a real store with its group commit, the broker's processors
and a real connection (a socket pair), wired as the broker's front end wires them (the commit once per read,
before any reply). A send's reply is parked, not answered from a task, and leaves only after its fdatasync; a
flush that takes too long answers FLUSH_DISK_TIMEOUT with the request's opaque."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from krocket.broker.store import flush as flush_module
from krocket.common.batch import encode_batch
from krocket.common.codes import FLAG_ONEWAY, RequestCode, ResponseCode
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import decode_frame, encode

from tests.unit.broker.broker_rig import BrokerRig, make_rig, send_header, send_v2


class Client:
    def __init__(self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer

    def send(self, cmd: RemotingCommand) -> None:
        self.writer.write(encode(cmd))

    async def reply(self) -> RemotingCommand:
        length = int.from_bytes(await asyncio.wait_for(self.reader.readexactly(4), 10), "big")
        return decode_frame(await asyncio.wait_for(self.reader.readexactly(length), 10))


async def connect(rig: BrokerRig) -> Client:
    store = rig.store

    def handle(conn: Connection, cmd: RemotingCommand) -> Any:
        store.hold_commit()
        return rig.handler(conn, cmd)

    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(handle, before_reply=store.commit), sock=ours)
    reader, writer = await asyncio.open_connection(sock=theirs)
    return Client(conn, reader, writer)


def sync_rig(tmp_path: Path, timeout_ms: int = 10_000, **store: Any) -> BrokerRig:
    overrides = {"flush_mode": "SYNC_FLUSH", "sync_flush_timeout_s": timeout_ms / 1000, **store}
    rig = make_rig(tmp_path, overrides, flush_disk_type="SYNC_FLUSH", sync_flush_timeout=timeout_ms)
    rig.topic("T")
    return rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[BrokerRig]:
    rig = sync_rig(tmp_path)
    rig.store.start_background()
    yield rig
    await rig.store.stop_background()
    rig.store.close()


def v2(opaque: int, body: bytes = b"payload", queue_id: int = 0) -> RemotingCommand:
    cmd = send_v2(send_header("T", queue_id), body)
    cmd.opaque = opaque
    return cmd


async def test_a_sync_flush_send_is_parked_and_answered_after_its_fdatasync(rig: BrokerRig) -> None:
    client = await connect(rig)
    cmd = v2(7)
    result = rig.handler(client.conn, cmd)
    assert result is None and len(rig.service.parking) == 1  # no reply now, no task: parked
    rig.store.commit()
    got = await client.reply()
    assert (got.code, got.opaque, got.ext_fields["queueOffset"]) == (ResponseCode.SUCCESS, 7, "0")
    assert rig.store.flushed_offset >= rig.store.max_phy_offset
    client.conn.close()


async def test_pipelined_sends_and_a_batch_are_answered_in_order(rig: BrokerRig) -> None:
    client = await connect(rig)
    for i in range(20):
        client.send(v2(100 + i, f"m{i}".encode(), queue_id=i % 4))
    batch = send_v2(send_header("T", 1, batch=True), encode_batch([(b"b1", {}, 0), (b"b2", {}, 0)]))
    batch.code, batch.opaque = RequestCode.SEND_BATCH_MESSAGE, 200
    client.send(batch)
    replies = [await client.reply() for _ in range(21)]
    assert [r.opaque for r in replies] == [*range(100, 120), 200]
    assert {r.code for r in replies} == {ResponseCode.SUCCESS}
    assert len(replies[-1].ext_fields["msgId"].split(",")) == 2
    assert rig.store.flushed_offset >= rig.store.max_phy_offset
    assert rig.service.sent_messages == 22
    client.conn.close()


async def test_a_oneway_send_is_stored_and_not_answered(rig: BrokerRig) -> None:
    client = await connect(rig)
    cmd = v2(9)
    cmd.flag |= FLAG_ONEWAY
    assert rig.handler(client.conn, cmd) is None
    assert len(rig.service.parking) == 0 and rig.service.sent_messages == 1
    client.conn.close()


async def test_a_send_that_creates_its_topic_waits_for_the_route_then_the_disk(tmp_path: Path) -> None:
    rig = make_rig(
        tmp_path,
        store_overrides={"flush_mode": "SYNC_FLUSH"},
        flush_disk_type="SYNC_FLUSH",
        auto_create_topic_enable=True,
    )
    published: list[int] = []

    async def publish() -> None:
        published.append(rig.store.max_phy_offset)

    rig.service.publish_routes = publish
    rig.store.start_background()
    try:
        client = await connect(rig)
        cmd = send_v2(send_header("NewTopic"), b"first")
        cmd.opaque = 3
        result = rig.handler(client.conn, cmd)
        assert isinstance(result, Awaitable)  # the rare case keeps its task
        reply = await result
        assert (reply.code, published) == (ResponseCode.SUCCESS, [rig.store.max_phy_offset])
        assert rig.store.flushed_offset >= rig.store.max_phy_offset
        client.conn.close()
    finally:
        await rig.store.stop_background()
        rig.store.close()


async def test_a_flush_that_takes_too_long_answers_flush_disk_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = sync_rig(tmp_path, timeout_ms=50, sync_flush_inline_bytes=0)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stuck_sync(fds: list[int]) -> None:  # a disk that does not answer until released
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
        for fd in fds:
            os.close(fd)

    monkeypatch.setattr(flush_module, "fdatasync_all", stuck_sync)
    rig.store.start_background()
    try:
        client = await connect(rig)
        client.send(v2(11))
        client.send(v2(12))
        first, second = await client.reply(), await client.reply()
        assert [(r.code, r.opaque) for r in (first, second)] == [
            (ResponseCode.FLUSH_DISK_TIMEOUT, 11),
            (ResponseCode.FLUSH_DISK_TIMEOUT, 12),
        ]
        assert first.remark is not None and first.remark.endswith("took over 0.05 s")
        assert first.ext_fields["queueOffset"] == "0" and second.ext_fields["queueOffset"] == "1"
        assert rig.service.parking.stats()["timed_out"] >= 1
        client.conn.close()
    finally:
        release.set()
        await rig.store.stop_background()
        rig.store.close()
