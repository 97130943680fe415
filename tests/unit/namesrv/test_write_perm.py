"""WIPE_WRITE_PERM_OF_BROKER (205) / ADD_WRITE_PERM_OF_BROKER (327) on the registry and through the processor."""

from __future__ import annotations

import json

from krocket.common.codes import PERM_READ, PERM_READ_WRITE, RequestCode, ResponseCode
from krocket.common.headers import AddWritePermOfBrokerHeader, WipeWritePermOfBrokerHeader
from krocket.common.remoting import RemotingCommand
from krocket.namesrv.processor import NamesrvProcessor
from krocket.namesrv.registry import RouteRegistry

from tests.unit.namesrv.test_namesrv_registry import make, reg


def perms(registry: RouteRegistry, topic: str) -> dict[str, int]:
    route = registry.route(topic)
    assert route is not None
    return {q.broker_name: q.perm for q in route.queue_datas}


def test_wipe_takes_writes_from_one_broker_until_added_back_or_its_topics_change() -> None:
    registry, _ = make()
    registry.register(reg("broker-a", topics={"T": 4, "U": 4}))
    registry.register(reg("broker-b", addr="10.0.0.2:10911", topics={"T": 4}, conn=2))
    assert registry.wipe_write_perm("broker-a") == 2
    assert perms(registry, "T") == {"broker-a": PERM_READ, "broker-b": PERM_READ_WRITE}
    assert registry.wipe_write_perm("broker-a") == 0  # nothing left to change
    registry.register(reg("broker-a", topics={"T": 4, "U": 4}))  # the periodic registration: same data version
    assert perms(registry, "U") == {"broker-a": PERM_READ}
    assert registry.add_write_perm("broker-a") == 2
    assert perms(registry, "T") == {"broker-a": PERM_READ_WRITE, "broker-b": PERM_READ_WRITE}
    registry.wipe_write_perm("broker-a")
    registry.register(reg("broker-a", topics={"T": 4, "U": 4}, version=2))  # its topics changed: applied again
    assert perms(registry, "T")["broker-a"] == PERM_READ_WRITE
    assert registry.wipe_write_perm("nobody") == 0


async def test_the_processor_answers_the_count_in_its_header() -> None:
    registry, _ = make()
    registry.register(reg("broker-a", topics={"T": 4}))
    processor = NamesrvProcessor(registry)

    async def ask(code: int, header: WipeWritePermOfBrokerHeader) -> RemotingCommand:
        cmd = RemotingCommand(code, opaque=1, ext_fields=header.to_fields())
        return await processor(None, cmd)  # type: ignore[arg-type]

    wiped = await ask(RequestCode.WIPE_WRITE_PERM_OF_BROKER, WipeWritePermOfBrokerHeader("broker-a"))
    assert (wiped.code, wiped.ext_fields["wipeTopicCount"]) == (ResponseCode.SUCCESS, "1")
    added = await ask(RequestCode.ADD_WRITE_PERM_OF_BROKER, AddWritePermOfBrokerHeader("broker-a"))
    assert (added.code, added.ext_fields["addTopicCount"]) == (ResponseCode.SUCCESS, "1")
    assert json.loads(json.dumps(perms(registry, "T"))) == {"broker-a": PERM_READ_WRITE}
