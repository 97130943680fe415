"""Transactions on the broker, in process over a real store: half messages, END_TRANSACTION, check rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from krocket.broker.transaction import TransactionService, half_message
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.headers.transaction import CheckTransactionStateHeader, EndTransactionHeader
from krocket.common.message import encode_properties
from krocket.common.message_id import decode_offset_msg_id
from krocket.common.record import decode_record, decode_records
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.transaction import CHECK_MAX_TIME_TOPIC, HALF_TOPIC, OP_HALF_TOPIC, SYSTEM_GROUP

from tests.unit.broker.broker_rig import BrokerRig, FakeConn, make_rig, pull_request, request, send_header, send_v2

HALF_PROPS = {"UNIQ_KEY": "UNIQ-TX", "TAGS": "TagA", "TRAN_MSG": "true", "PGROUP": "pg"}
BORN = 1_700_000_000_000


def _tx_rig(tmp_path: Path, **config: Any) -> BrokerRig:
    rig = make_rig(tmp_path, **config)
    rig.service.transactions = TransactionService(rig.service.config, rig.store, rig.topics, rig.offsets, rig.consumers)
    rig.service.transactions.ensure_topics()
    rig.topic("T")
    return rig


@pytest.fixture
def tx(tmp_path: Path) -> BrokerRig:
    return _tx_rig(tmp_path, transaction_time_out=6000, transaction_check_max=2)


def _transactions(rig: BrokerRig) -> TransactionService:
    assert rig.service.transactions is not None
    return rig.service.transactions


async def _send_half(
    rig: BrokerRig, body: bytes = b"half", queue_id: int = 2, uniq: str = "UNIQ-TX"
) -> tuple[int, int]:
    props = dict(HALF_PROPS, UNIQ_KEY=uniq)
    header = send_header("T", queue_id, None, sys_flag=0x4, properties=encode_properties(props).decode())
    response = await rig.answer(send_v2(header, body))
    assert response.code == ResponseCode.SUCCESS, response.remark
    _, phy = decode_offset_msg_id(response.ext_fields["msgId"])
    return phy, int(response.ext_fields["queueOffset"])


async def _end(rig: BrokerRig, phy: int, qoff: int, kind: int, **overrides: Any) -> RemotingCommand:
    values: dict[str, Any] = dict(
        producer_group="pg", tran_state_table_offset=qoff, commit_log_offset=phy, commit_or_rollback=kind, topic="T"
    )
    values.update(overrides)
    return await rig.answer(request(RequestCode.END_TRANSACTION, EndTransactionHeader(**values)))


async def _pulled(rig: BrokerRig, topic: str, queue_id: int) -> list:
    pulled = await rig.answer(pull_request(topic, queue_id))
    return decode_records(pulled.body) if pulled.code == ResponseCode.SUCCESS else []


def test_half_and_committed_placements_round_trip() -> None:
    half = half_message("T", 3, {"a": "b", "TRAN_MSG": "true"}, 0x5)
    assert (half.topic, half.queue_id, half.sys_flag) == (HALF_TOPIC, 0, 0x1)
    assert half.properties["REAL_TOPIC"] == "T" and half.properties["REAL_QID"] == "3"


async def test_a_half_message_is_invisible_until_commit_which_restores_topic_queue_and_id(tx: BrokerRig) -> None:
    phy, qoff = await _send_half(tx)
    assert await _pulled(tx, "T", 2) == []
    [stored] = await _pulled(tx, HALF_TOPIC, 0)
    assert stored.properties["REAL_TOPIC"] == "T" and stored.properties["REAL_QID"] == "2" and stored.sys_flag == 0
    response = await _end(tx, phy, qoff, 0x8)
    assert response.code == ResponseCode.SUCCESS and response.remark == "commit"
    [delivered] = await _pulled(tx, "T", 2)
    assert delivered.body == b"half" and delivered.msg_id == "UNIQ-TX" and delivered.sys_flag & 0xC == 0x8
    assert "TRAN_MSG" not in delivered.properties and "REAL_TOPIC" not in delivered.properties
    assert delivered.properties["PGROUP"] == "pg"
    [op] = await _pulled(tx, OP_HALF_TOPIC, 0)
    assert op.body == str(qoff).encode() and op.tags == "d"
    again = await _end(tx, phy, qoff, 0x8)  # a second outcome for the same half message changes nothing
    assert again.remark == "duplicate" and len(await _pulled(tx, "T", 2)) == 1


async def test_rollback_writes_only_the_op_record(tx: BrokerRig) -> None:
    phy, qoff = await _send_half(tx)
    assert (await _end(tx, phy, qoff, 0xC)).remark == "rollback"
    assert await _pulled(tx, "T", 2) == []
    assert len(await _pulled(tx, OP_HALF_TOPIC, 0)) == 1
    assert _transactions(tx).check_round(BORN + 60_000) == []  # decided: never checked


async def test_unknown_changes_nothing_and_bad_outcomes_are_refused(tx: BrokerRig) -> None:
    phy, qoff = await _send_half(tx)
    assert (await _end(tx, phy, qoff, 0)).remark == "unknown"
    assert (await _end(tx, phy, qoff, 0x8, producer_group="other")).code == ResponseCode.MESSAGE_ILLEGAL
    assert (await _end(tx, phy, qoff, 0x8, topic="Other")).code == ResponseCode.MESSAGE_ILLEGAL
    assert (await _end(tx, phy, qoff, 5)).code == ResponseCode.MESSAGE_ILLEGAL
    plain = await tx.answer(send_v2(send_header("T", 1), b"plain"))
    _, plain_phy = decode_offset_msg_id(plain.ext_fields["msgId"])
    assert (await _end(tx, plain_phy, 0, 0x8)).code == ResponseCode.MESSAGE_ILLEGAL
    assert await _pulled(tx, "T", 2) == []


def _producer(rig: BrokerRig) -> FakeConn:
    conn = FakeConn("10.0.0.5:6000")
    rig.consumers.heartbeat(cast(Connection, conn), {"clientID": "p1", "producerDataSet": [{"groupName": "pg"}]})
    return conn


async def test_check_rounds_ask_a_live_producer_then_give_up_after_check_max(tx: BrokerRig) -> None:
    conn = _producer(tx)
    phy, qoff = await _send_half(tx)
    service = _transactions(tx)
    assert service.check_round(BORN + 1000) == []  # younger than transactionTimeOut
    [first] = service.check_round(BORN + 7000)
    assert first.conn is conn and first.command.code == RequestCode.CHECK_TRANSACTION_STATE
    header = CheckTransactionStateHeader.from_fields(first.command.ext_fields)
    checked = decode_record(first.command.body)
    assert checked.topic == "T" and checked.queue_id == 2 and checked.msg_id == "UNIQ-TX"
    assert checked.properties["TRANSACTION_CHECK_TIMES"] == "1" and header.commit_log_offset != phy
    assert header.tran_state_table_offset == qoff + 1
    [second] = service.check_round(BORN + 8000)
    assert decode_record(second.command.body).properties["TRANSACTION_CHECK_TIMES"] == "2"
    assert service.check_round(BORN + 9000) == []  # checked transactionCheckMax (2) times: moved aside
    [parked] = await _pulled(tx, CHECK_MAX_TIME_TOPIC, 0)
    assert parked.body == b"half" and parked.properties["REAL_TOPIC"] == "T"
    assert service.check_round(BORN + 10_000) == []
    assert tx.offsets.query(SYSTEM_GROUP, HALF_TOPIC, 0) == tx.store.max_offset(HALF_TOPIC, 0)


async def test_an_outcome_answering_a_check_commits_the_put_back_copy(tx: BrokerRig) -> None:
    _producer(tx)
    await _send_half(tx)
    [check] = _transactions(tx).check_round(BORN + 7000)
    header = CheckTransactionStateHeader.from_fields(check.command.ext_fields)
    response = await _end(
        tx, header.commit_log_offset, header.tran_state_table_offset, 0x8, from_transaction_check=True
    )
    assert response.remark == "commit"
    [delivered] = await _pulled(tx, "T", 2)
    assert delivered.msg_id == "UNIQ-TX" and "TRANSACTION_CHECK_TIMES" not in delivered.properties
    assert _transactions(tx).check_round(BORN + 8000) == []


async def test_without_a_producer_the_check_still_counts(tx: BrokerRig) -> None:
    await _send_half(tx)
    assert _transactions(tx).check_round(BORN + 7000) == []
    copies = await _pulled(tx, HALF_TOPIC, 0)
    assert [m.properties.get("TRANSACTION_CHECK_TIMES") for m in copies] == [None, "1"]


async def test_progress_and_outcomes_survive_a_restart(tmp_path: Path) -> None:
    rig = _tx_rig(tmp_path / "b", transaction_check_max=5)
    _producer(rig)
    committed = await _send_half(rig, b"c", uniq="U-C")
    rolled = await _send_half(rig, b"r", uniq="U-R")
    await _send_half(rig, b"open", uniq="U-O")
    await _end(rig, *committed, 0x8)
    await _end(rig, *rolled, 0xC)
    assert (await _end(rig, *committed, 0x8)).remark == "duplicate"
    requests = _transactions(rig).check_round(BORN + 7000)
    assert [decode_record(r.command.body).msg_id for r in requests] == ["U-O"]
    rig.offsets.persist()
    rig.store.close()
    again = _tx_rig(tmp_path / "b", transaction_check_max=5)
    again.offsets.load()
    _producer(again)
    await _end(again, *rolled, 0xC)  # recovered op records: still rolled back, nothing delivered
    [check] = _transactions(again).check_round(BORN + 8000)
    assert decode_record(check.command.body).properties["TRANSACTION_CHECK_TIMES"] == "2"
    assert [m.body for m in await _pulled(again, "T", 2)] == [b"c"]
    again.store.close()


async def test_tran_msg_alone_makes_a_half_message_as_apache_rocketmq_decides(tx: BrokerRig) -> None:
    props = encode_properties(dict(HALF_PROPS, UNIQ_KEY="U-PROP")).decode()
    response = await tx.answer(send_v2(send_header("T", 1, None, properties=props), b"by-property"))
    assert response.code == ResponseCode.SUCCESS, response.remark
    assert await _pulled(tx, "T", 1) == []
    assert [m.body for m in await _pulled(tx, HALF_TOPIC, 0)] == [b"by-property"]


async def test_a_late_outcome_for_a_checked_half_message_decides_its_put_back_copy_too(tmp_path: Path) -> None:
    rig = _tx_rig(tmp_path / "b", transaction_check_max=5)
    _producer(rig)
    phy, qoff = await _send_half(rig, b"slow")
    [check] = _transactions(rig).check_round(BORN + 7000)  # the local transaction is still running
    assert (await _end(rig, phy, qoff, 0x8)).remark == "commit"  # its outcome names the original
    header = CheckTransactionStateHeader.from_fields(check.command.ext_fields)
    answer = await _end(rig, header.commit_log_offset, header.tran_state_table_offset, 0x8)
    assert answer.remark == "duplicate"
    assert _transactions(rig).check_round(BORN + 8000) == []
    rig.offsets.persist()
    rig.store.close()
    again = _tx_rig(tmp_path / "b", transaction_check_max=5)
    again.offsets.load()
    assert (await _end(again, header.commit_log_offset, header.tran_state_table_offset, 0x8)).remark == "duplicate"
    assert [m.body for m in await _pulled(again, "T", 2)] == [b"slow"]
    again.store.close()


def test_end_transaction_needs_pub_on_the_topic_its_header_names() -> None:
    from krocket.broker.acl.rules import rule_of
    from krocket.common.acl.plain_acl import Perm

    rule = rule_of(RequestCode.END_TRANSACTION)
    assert callable(rule)
    named = EndTransactionHeader("pg", 0, 0, 8, topic="Orders")
    [need] = rule(request(RequestCode.END_TRANSACTION, named))
    assert (need.name, need.perm, need.group) == ("Orders", Perm.PUB, False)
    [need] = rule(request(RequestCode.END_TRANSACTION, EndTransactionHeader("pg", 0, 0, 8)))
    assert (need.name, need.perm) == (HALF_TOPIC, Perm.PUB)


async def test_a_broker_without_the_transaction_service_refuses_outcomes(rig: BrokerRig) -> None:
    header = EndTransactionHeader("pg", 0, 0, 8, topic="T")
    response = await rig.answer(request(RequestCode.END_TRANSACTION, header))
    assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE and "master" in (response.remark or "")
