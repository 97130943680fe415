"""Parked replies (krocket.broker.reply_parking) on real connections (socket pairs), a real store's group commit
and a real HA master with a slave that speaks the HA protocol from a socket: release order, partial release, one
write per connection per round, timeouts decoded to their codes with each request's opaque, closed connections,
SYNC_MASTER needing both the flush and the ack, and the per-connection cap that stops reading."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from krocket.broker.ha.master import HAMaster
from krocket.broker.ha.protocol import REPORT
from krocket.broker.reply_parking import SLAVE_NOT_AVAILABLE_REMARK, ReplyParking, rewrite_replies
from krocket.broker.store import MessageStore
from krocket.common.codes import FLAG_RESPONSE, ResponseCode
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.command import decode_frame, encode

from tests.unit.store.store_helpers import small_config


class CountingConnection(Connection):
    """A real server-side connection that also counts its raw writes."""

    def __init__(self) -> None:
        super().__init__(None)
        self.raw_writes = 0

    def write_raw(self, data: bytes | bytearray) -> None:
        self.raw_writes += 1
        super().write_raw(data)


class Peer:
    """The connection parking writes to and the socket end that reads what it wrote."""

    def __init__(self, conn: CountingConnection, transport: asyncio.Transport, reader: asyncio.StreamReader) -> None:
        self.conn = conn
        self.transport = transport
        self.reader = reader

    async def replies(self, count: int) -> list[RemotingCommand]:
        out = []
        for _ in range(count):
            length = int.from_bytes(await asyncio.wait_for(self.reader.readexactly(4), 10), "big")
            out.append(decode_frame(await asyncio.wait_for(self.reader.readexactly(length), 10)))
        return out


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[tuple[Peer, asyncio.StreamWriter]] = []
    loop = asyncio.get_running_loop()
    for _ in range(2):
        ours, theirs = socket.socketpair()
        transport, conn = await loop.create_connection(CountingConnection, sock=ours)
        reader, writer = await asyncio.open_connection(sock=theirs)
        made.append((Peer(conn, transport, reader), writer))
    yield [peer for peer, _ in made]
    for peer, writer in made:
        peer.conn.close()
        writer.close()


def reply(opaque: int, queue_offset: int = 0) -> bytes:
    fields = {"msgId": f"C0A8010200002A9F{opaque:016X}", "queueId": "1", "queueOffset": str(queue_offset)}
    return encode(RemotingCommand(ResponseCode.SUCCESS, opaque, FLAG_RESPONSE, fields))


def parking(**overrides: object) -> tuple[ReplyParking, list[int]]:
    kicks: list[int] = []
    settings: dict[str, object] = dict(
        sync_flush=True, flush_timeout_s=30.0, slave_timeout_s=30.0, request_flush=lambda: kicks.append(1)
    )
    settings.update(overrides)
    return ReplyParking(**settings), kicks  # type: ignore[arg-type]


async def test_flushes_release_in_offset_order_and_only_what_they_cover(peers: list[Peer]) -> None:
    park, kicks = parking()
    a = peers[0]
    park.park(a.conn, reply(1), 100)
    park.park(a.conn, reply(2) + reply(3), 200)  # one entry, two frames (the fast path parks a read's replies)
    park.park(a.conn, reply(4), 300)
    assert len(kicks) == 3 and len(park) == 3  # every park asks for a flush round
    park.flushed(250)
    assert [r.opaque for r in await a.replies(3)] == [1, 2, 3]
    assert len(park) == 1 and park.parked_bytes(a.conn) == len(reply(4))
    park.flushed(250)  # nothing new covered: nothing written
    park.flushed(300)
    assert [r.opaque for r in await a.replies(1)] == [4]
    assert len(park) == 0 and park.parked_bytes(a.conn) == 0


async def test_one_write_per_connection_per_round(peers: list[Peer]) -> None:
    park, _ = parking()
    a, b = peers
    for i in range(6):
        park.park((a if i % 2 else b).conn, reply(i), 10 * (i + 1))
    park.flushed(60)
    assert (a.conn.raw_writes, b.conn.raw_writes) == (1, 1)
    assert [r.opaque for r in await a.replies(3)] == [1, 3, 5]
    assert [r.opaque for r in await b.replies(3)] == [0, 2, 4]


async def test_a_late_park_below_the_last_end_waits_for_the_last_end(peers: list[Peer]) -> None:
    park, _ = parking()
    a = peers[0]
    park.park(a.conn, reply(1), 500)
    park.park(a.conn, reply(2), 400)  # e.g. a send that first waited for its new topic's route
    park.flushed(450)
    assert len(park) == 2  # the first needs 500, and the second never leaves before it
    park.flushed(500)
    assert [r.opaque for r in await a.replies(2)] == [1, 2]


async def test_a_flush_timeout_answers_flush_disk_timeout_with_each_requests_opaque(peers: list[Peer]) -> None:
    park, _ = parking(flush_timeout_s=0.05)
    a = peers[0]
    park.park(a.conn, reply(41, 7) + reply(42, 8), 1000)
    got = await a.replies(2)
    assert [r.opaque for r in got] == [41, 42]
    for r, offset in zip(got, ("7", "8"), strict=True):
        assert r.code == ResponseCode.FLUSH_DISK_TIMEOUT and r.is_response
        assert r.remark == "flushing the commit log up to offset 1000 took over 0.05 s"
        assert r.ext_fields["queueOffset"] == offset and r.ext_fields["msgId"].endswith(f"{r.opaque:016X}")
    assert park.stats()["timed_out"] == 1 and len(park) == 0
    park.flushed(1000)  # the flush that comes too late writes nothing more
    assert a.conn.raw_writes == 1


def test_rewrite_keeps_everything_but_code_and_remark() -> None:
    frames = reply(5, 3) + reply(6, 4)
    rewritten = rewrite_replies(frames, ResponseCode.FLUSH_SLAVE_TIMEOUT, "late")
    first_len = int.from_bytes(rewritten[:4], "big")
    first, second = decode_frame(rewritten[4 : 4 + first_len]), decode_frame(rewritten[8 + first_len :])
    original = decode_frame(reply(5, 3)[4:])
    assert (first.code, first.remark, first.opaque, first.flag) == (ResponseCode.FLUSH_SLAVE_TIMEOUT, "late", 5, 1)
    assert first.ext_fields == original.ext_fields and first.language == original.language
    assert (second.opaque, second.ext_fields["queueOffset"]) == (6, "4")


async def test_a_closed_connections_replies_are_dropped(peers: list[Peer]) -> None:
    park, _ = parking()
    a, b = peers
    park.park(a.conn, reply(1), 10)
    park.park(b.conn, reply(2), 20)
    park.park(a.conn, reply(3), 30)
    a.conn.close()
    await a.conn.wait_closed()
    assert len(park) == 1 and park.parked_bytes(a.conn) == 0
    park.flushed(30)
    assert [r.opaque for r in await b.replies(1)] == [2]
    assert a.conn.raw_writes == 0


async def test_over_the_cap_a_connection_is_not_read_until_half_is_released(peers: list[Peer]) -> None:
    size = len(reply(1))
    park, _ = parking(max_parked_bytes=3 * size)
    a = peers[0]
    for i in range(4):
        park.park(a.conn, reply(i), 10 * (i + 1))
    assert not a.transport.is_reading()
    park.flushed(10)  # 3 replies left: still over half the cap
    assert not a.transport.is_reading()
    park.flushed(30)
    assert a.transport.is_reading()
    assert [r.opaque for r in await a.replies(3)] == [0, 1, 2]


# -- with a real store and a real HA master ----------------------------------------------------------------


@pytest.fixture
async def sync_store(tmp_path: Path) -> AsyncIterator[MessageStore]:
    store = MessageStore(small_config(tmp_path / "store", flush_mode="SYNC_FLUSH"), usage_fn=lambda _p: 0.1)
    store.open()
    store.start_background()
    yield store
    await store.stop_background()
    store.close()


def stored(store: MessageStore, body: bytes = b"m") -> int:
    """Put one message and commit it, as the broker does before it yields; its end offset."""
    end = store.put_message("T", 0, body, {}).end_offset
    store.commit()
    return end


async def test_the_group_commit_runs_for_a_park_and_releases_it(sync_store: MessageStore, peers: list[Peer]) -> None:
    park = ReplyParking(True, 5.0, 5.0, sync_store.request_flush)
    sync_store.on_flushed(park.flushed)
    a = peers[0]
    ends = []
    for i in range(3):
        ends.append(stored(sync_store))
        park.park(a.conn, reply(i), ends[-1])
    assert sync_store.flushed_offset < ends[0]
    assert [r.code for r in await a.replies(3)] == [ResponseCode.SUCCESS] * 3
    assert sync_store.flushed_offset >= ends[-1]  # nothing left before its fdatasync
    end = stored(sync_store)  # and again, once the flusher was idle
    park.park(a.conn, reply(9), end)
    assert [r.opaque for r in await a.replies(1)] == [9]
    assert sync_store.flushed_offset >= end


class RawSlave:
    """A slave reduced to the HA protocol: it reports offsets when told to (and never reads the data)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, master: HAMaster, offset: int) -> RawSlave:
        reader, writer = await asyncio.open_connection("127.0.0.1", master.port)
        slave = cls(reader, writer)
        await slave.report(offset)
        for _ in range(500):
            if master.slaves:
                return slave
            await asyncio.sleep(0.01)
        raise AssertionError("the master did not take the slave")

    async def report(self, offset: int) -> None:
        self.writer.write(REPORT.pack(offset))
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def master(sync_store: MessageStore) -> AsyncIterator[HAMaster]:
    ha = HAMaster(sync_store, "127.0.0.1", 0, sync_timeout_s=5.0)
    await ha.start()
    yield ha
    await ha.stop()


def replicated_parking(store: MessageStore, ha: HAMaster, slave_timeout_s: float = 30.0) -> ReplyParking:
    park = ReplyParking(True, 30.0, slave_timeout_s, store.request_flush)
    store.on_flushed(park.flushed)
    ha.add_ack_listener(park.acked)
    park.replicate_to(ha)
    return park


async def test_sync_master_needs_the_flush_and_the_ack(
    sync_store: MessageStore, master: HAMaster, peers: list[Peer]
) -> None:
    park = replicated_parking(sync_store, master)
    slave = await RawSlave.connect(master, sync_store.max_phy_offset)
    a = peers[0]
    try:
        end = stored(sync_store)
        await slave.report(end)  # the slave has it before the disk does: the reply still waits for the flush
        for _ in range(500):
            if master.acked_offset() >= end:
                break
            await asyncio.sleep(0.01)
        park.park(a.conn, reply(1), end)
        assert [r.code for r in await a.replies(1)] == [ResponseCode.SUCCESS]
        assert sync_store.flushed_offset >= end

        end = stored(sync_store)
        park.park(a.conn, reply(2), end)
        for _ in range(500):  # flushed, now waiting for the slave
            if park.stats()["parked_replication"] == 1:
                break
            await asyncio.sleep(0.01)
        assert park.stats()["parked_replication"] == 1 and sync_store.flushed_offset >= end
        await slave.report(end - 1)  # not all of it
        for _ in range(500):
            if master.acked_offset() == end - 1:
                break
            await asyncio.sleep(0.01)
        assert master.acked_offset() == end - 1 and len(park) == 1
        await slave.report(end)
        assert [(r.opaque, r.code) for r in await a.replies(1)] == [(2, ResponseCode.SUCCESS)]
    finally:
        slave.close()


async def test_sync_master_times_out_flush_slave_timeout_when_no_ack_comes(
    sync_store: MessageStore, master: HAMaster, peers: list[Peer]
) -> None:
    park = replicated_parking(sync_store, master, slave_timeout_s=0.05)
    slave = await RawSlave.connect(master, sync_store.max_phy_offset)
    a = peers[0]
    try:
        end = stored(sync_store)
        park.park(a.conn, reply(3), end)
        (got,) = await a.replies(1)
        assert (got.opaque, got.code) == (3, ResponseCode.FLUSH_SLAVE_TIMEOUT)
        assert got.remark == f"no slave confirmed offset {end} within 0.1s"
    finally:
        slave.close()


async def test_sync_master_without_a_slave_answers_slave_not_available_after_the_flush(
    sync_store: MessageStore, master: HAMaster, peers: list[Peer]
) -> None:
    park = replicated_parking(sync_store, master)
    a = peers[0]
    end = stored(sync_store)
    park.park(a.conn, reply(4), end)
    (got,) = await a.replies(1)
    assert (got.opaque, got.code, got.remark) == (4, ResponseCode.SLAVE_NOT_AVAILABLE, SLAVE_NOT_AVAILABLE_REMARK)
    assert sync_store.flushed_offset >= end


async def test_sync_master_with_async_flush_waits_for_the_ack_only(
    sync_store: MessageStore, master: HAMaster, peers: list[Peer]
) -> None:
    park = ReplyParking(False, 30.0, 30.0, sync_store.request_flush)
    master.add_ack_listener(park.acked)
    park.replicate_to(master)
    slave = await RawSlave.connect(master, sync_store.max_phy_offset)
    a = peers[0]
    try:
        end = stored(sync_store)
        park.park(a.conn, reply(5), end)
        assert park.stats()["parked_replication"] == 1
        await slave.report(end)
        assert [(r.opaque, r.code) for r in await a.replies(1)] == [(5, ResponseCode.SUCCESS)]
    finally:
        slave.close()
