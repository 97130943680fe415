"""The issue's reproductions at the broker's door: hostile sends are refused (or stored the way they read back),
and everything acked around them survives ``kill -9`` and is replicated byte-identical to a slave."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest

from krocket.client import Message, Producer
from krocket.common.batch import encode_batch
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.message import decode_properties, encode_properties
from krocket.common.remoting import ConnectionPool

from tests.property.raw_send import raw_send
from tests.support.cluster import LocalCluster, start_cluster, wait_until
from tests.support.remoting import pull_all

TOPIC = "Door"
MAX_MESSAGE = 4 * 1024 * 1024  # the broker's default maxMessageSize

# (what it is, sysFlag, properties text, body, the code the broker must answer)
HOSTILE: list[tuple[str, int, str, bytes, int]] = [
    ("born host IPv6 flag", 0x10, "", b"v6-born", ResponseCode.SUCCESS),
    ("store host IPv6 flag", 0x20, "", b"v6-store", ResponseCode.SUCCESS),
    ("both IPv6 flags", 0x30, "a\x01b\x02", b"v6-both", ResponseCode.SUCCESS),
    ("compressed flag, body not zlib", 0x1, "", b"this is not zlib", ResponseCode.MESSAGE_ILLEGAL),
    ("compressed flag, zlib bomb", 0x1, "", zlib.compress(bytes(MAX_MESSAGE + 1), 9), ResponseCode.MESSAGE_ILLEGAL),
    ("compressed flag, trailing bytes", 0x1, "", zlib.compress(b"x" * 100) + b"junk", ResponseCode.MESSAGE_ILLEGAL),
    ("compressed flag, real zlib", 0x1, "", zlib.compress(b"inflated " * 50), ResponseCode.SUCCESS),
    ("transaction prepared without TRAN_MSG", 0x4, "", b"half", ResponseCode.MESSAGE_ILLEGAL),
    ("TRAN_MSG without a producer group", 0, "TRAN_MSG\x01true\x02", b"half", ResponseCode.MESSAGE_ILLEGAL),
    ("transaction commit", 0x8, "", b"commit", ResponseCode.NO_PERMISSION),
    ("transaction rollback", 0xC, "", b"rollback", ResponseCode.NO_PERMISSION),
    ("need-unwrap bit", 0x40, "", b"unwrap", ResponseCode.MESSAGE_ILLEGAL),
    ("inner-batch bit", 0x80, "", b"inner", ResponseCode.MESSAGE_ILLEGAL),
    ("negative sysFlag", -1, "", b"neg", ResponseCode.MESSAGE_ILLEGAL),
    ("LZ4 compression type", 0x101, "", zlib.compress(b"lz4?"), ResponseCode.MESSAGE_ILLEGAL),
    ("key holding \\x01", 0, "a\x01b\x01c\x02", b"k01", ResponseCode.MESSAGE_ILLEGAL),
    ("duplicate key", 0, "k\x01v\x02k\x01w\x02", b"dup", ResponseCode.MESSAGE_ILLEGAL),
    ("empty key", 0, "\x01v\x02", b"empty-key", ResponseCode.MESSAGE_ILLEGAL),
    ("pair without \\x01", 0, "novalue\x02", b"nosep", ResponseCode.MESSAGE_ILLEGAL),
    ("empty pair in the middle", 0, "a\x01b\x02\x02c\x01d\x02", b"gap", ResponseCode.MESSAGE_ILLEGAL),
]


def _inflated(sys_flag: int, body: bytes) -> bytes:
    return zlib.decompress(body) if sys_flag & 0x1 else body


def _caught_up(cluster: LocalCluster) -> None:
    master, slave = cluster.brokers
    head = master.http_json("/api/v1/broker")["maxPhyOffset"]
    wait_until(lambda: slave.http_json("/api/v1/broker")["maxPhyOffset"] == head, 20, message="the slave")


def test_hostile_sends_are_refused_and_everything_acked_survives_kill_9_and_replicates(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "c", namesrvs=1, groups=1, slaves=1, flush="sync", replication="sync")
    master, slave = cluster.brokers
    acked: list[tuple[bytes, dict[str, str], int]] = []  # body as read back, properties, stored sysFlag
    wait_until(
        lambda: bool(master.http_json("/api/v1/broker").get("replication", {}).get("slaves")),
        60,
        0.2,
        message="the slave to connect",
    )

    async def produce() -> list[tuple[str, int, int]]:
        wrong: list[tuple[str, int, int]] = []
        pool = ConnectionPool()
        try:
            for round_ in range(3):
                for what, sys_flag, props, body, expected in HOSTILE:
                    before = f"before {what} {round_}".encode()
                    resp = await raw_send(pool, master.addr, TOPIC, before, properties=f"n\x01{round_}\x02")
                    assert resp.code == ResponseCode.SUCCESS, resp.remark
                    acked.append((before, {"n": str(round_)}, 0))
                    resp = await raw_send(pool, master.addr, TOPIC, body, sys_flag, props)
                    if resp.code != expected:
                        wrong.append((what, resp.code, expected))
                    if resp.code == ResponseCode.SUCCESS:
                        acked.append((_inflated(sys_flag, body), decode_properties(props), sys_flag & ~0x30))
                    elif expected == ResponseCode.NO_PERMISSION:
                        assert "END_TRANSACTION" in resp.remark
                    else:
                        assert resp.remark, what
            # A batch whose second message carries a key with \x01 is refused as a whole.
            items = [(b"batch-ok", {"b": "1"}, 0), (b"batch-bad", {"x\x01y": "z"}, 0)]
            resp = await raw_send(pool, master.addr, TOPIC, encode_batch(items), code=RequestCode.SEND_BATCH_MESSAGE)
            if resp.code != ResponseCode.MESSAGE_ILLEGAL:
                wrong.append(("batch with a bad key", resp.code, ResponseCode.MESSAGE_ILLEGAL))
            good = [(b"batch-1", {"b": "1"}, 0), (b"batch-2", {"b": "2"}, 7)]
            resp = await raw_send(pool, master.addr, TOPIC, encode_batch(good), code=RequestCode.SEND_BATCH_MESSAGE)
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            acked.extend((body, props, 0) for body, props, _flag in good)
        finally:
            await pool.close()
        return wrong

    async def read(addr: str) -> list:
        pool = ConnectionPool()
        try:
            return await pull_all(pool, addr, TOPIC, 0)
        finally:
            await pool.close()

    try:
        wrong = asyncio.run(produce())
        assert not wrong, wrong
        _caught_up(cluster)
        master.kill()
        master.start()
        master.wait_ports()
        cluster.wait_registered()
        after_restart = asyncio.run(read(master.addr))
        on_slave = asyncio.run(read(slave.addr))
        assert [(m.body, m.properties, m.sys_flag) for m in after_restart] == acked
        assert all(m.born_host.startswith("127.0.0.1:") for m in after_restart)
        # Byte-identical on the slave: every field of every record, offsets and CRCs included.
        assert on_slave == after_restart
        assert "torn tail" not in master.tail_log(200)
    finally:
        cluster.stop()


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (Message(TOPIC, b"x", properties={"k5": "x\x02DELAY\x013"}), "property 'k5'"),
        (Message(TOPIC, b"x", properties={"a\x01b": "c"}), "property 'a\\x01b'"),
        (Message(TOPIC, b"x", properties={"": "v"}), "property ''"),
        (Message(TOPIC, b"x", properties={"k": "\ud800"}), "property 'k'"),
        (Message(TOPIC, b"x", tags="a\x02b"), "property 'TAGS'"),
        (Message(TOPIC, b"x", keys=["k\x011"]), "property 'KEYS'"),
        (Message(TOPIC, b"x", flag=2**31), "flag"),
    ],
)
def test_the_client_refuses_what_would_not_read_back(message: Message, field: str) -> None:
    async def run() -> None:
        # No name server is needed: the message is refused before any route is looked up.
        producer = Producer("door-client", "127.0.0.1:1")
        with pytest.raises(ValueError) as caught:
            await producer.send(message)
        assert str(caught.value).startswith(f"{field}: ")
        assert getattr(caught.value, "field", None) == field

    asyncio.run(run())


def test_encode_properties_of_a_refused_value_would_inject_a_property() -> None:
    """Why the client must refuse it: the broker cannot tell the injected pair from a real one."""
    raw = encode_properties({"k5": "x\x02DELAY\x013"})
    assert decode_properties(raw) == {"k5": "x", "DELAY": "3"}
