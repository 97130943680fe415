"""The slave's HA hello: a krocket slave says its broker id right after its first report, so the master's replication
series are labelled by it (``slave_broker_id``), not by the slave's client port; a slave that sends no hello (an
older one, or RocketMQ's shape) is still served, its id unknown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from krocket.broker.ha.master import HAMaster
from krocket.broker.ha.protocol import REPORT, hello, hello_broker_id
from krocket.broker.ha.slave import HASlave
from krocket.broker.metrics import _replication
from krocket.broker.store import MessageStore

from tests.unit.store.store_helpers import small_config


def _store(root: Path) -> MessageStore:
    store = MessageStore(small_config(root), usage_fn=lambda _p: 0.1)
    store.open()
    return store


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[HAMaster]:
    store = _store(tmp_path / "master")
    store.put_message("T", 0, b"replicate me", {})
    store.commit()
    ha = HAMaster(store, "127.0.0.1", 0)
    await ha.start()
    yield ha
    await ha.stop()
    store.close()


async def _until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_slave_is_known_by_the_broker_id_of_its_hello(master: HAMaster, tmp_path: Path) -> None:
    store = _store(tmp_path / "slave")
    slave = HASlave(store, lambda: f"127.0.0.1:{master.port}", broker_id=2)
    slave.start()
    try:
        await _until(lambda: master.status() and master.status()[0]["ackedOffset"] == store.max_phy_offset > 0,
                     "the slave's ack")  # fmt: skip
        [link] = master.status()
        assert link["brokerId"] == 2 and link["lagBytes"] == 0 and link["secondsSinceAck"] < 5
        families = {f.name: f.values for f in _replication(master, None)}
        assert families["broker_replication_lag_bytes"] == {(("slave_broker_id", "2"),): 0.0}
        assert families["broker_replication_slaves"] == {(): 1.0}
        own = {f.name: f.values for f in _replication(None, slave)}
        assert own["broker_replication_slave_connected"] == {(): 1.0}
        assert own["broker_replication_slave_lag_bytes"] == {(): 0.0}
    finally:
        await slave.stop()
        store.close()


async def test_a_slave_without_a_hello_is_served_with_its_id_unknown(master: HAMaster) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", master.port)
    try:
        writer.write(REPORT.pack(0))
        await writer.drain()
        await _until(lambda: bool(master.slaves), "the master taking the slave")
        assert (await reader.readexactly(12))[:8] == REPORT.pack(0)  # the data from offset 0 comes
        [link] = master.status()
        assert link["brokerId"] is None
        [label] = next(f.values for f in _replication(master, None) if f.name == "broker_replication_lag_bytes")
        assert label[0][1].startswith("unknown ")
    finally:
        writer.close()


def test_a_hello_is_never_an_offset_so_a_master_from_before_it_ignores_it() -> None:
    # A master without the hello counts a report only when it is above the acked offset (>= 0): every hello is
    # negative, so slaves can be upgraded before their master.
    for broker_id in (0, 1, 2, 1023, 2**31):
        assert hello(broker_id) < 0 and hello_broker_id(hello(broker_id)) == broker_id
    for offset in (0, 1, 2**40, 2**63 - 1):
        assert hello_broker_id(offset) is None


async def test_the_hello_after_the_first_report_names_the_slave_and_acks_nothing(master: HAMaster) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", master.port)
    try:
        writer.write(REPORT.pack(0) + REPORT.pack(hello(3)))
        await writer.drain()
        await _until(lambda: bool(master.status()) and master.status()[0]["brokerId"] == 3, "the slave's id")
        [link] = master.status()
        assert link["ackedOffset"] == 0
    finally:
        writer.close()
