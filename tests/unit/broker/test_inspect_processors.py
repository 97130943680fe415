"""The broker's mqadmin codes in-process: producer connections from heartbeats (204), topic stats (202), traffic
by topic and group with lag (317), the runtime table's rates (28) and config get/set (26/25)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krocket.broker.producer_manager import ProducerManager
from krocket.common.codes import LanguageCode, RequestCode, ResponseCode
from krocket.common.headers import GetProducerConnectionListHeader, GetTopicStatsInfoHeader, UnregisterClientHeader
from krocket.common.headers.groups import parse_queue_key
from krocket.common.properties import parse_properties

from tests.unit.broker.broker_rig import BrokerRig, FakeConn, make_rig, request, send_header, send_v2


@pytest.fixture
def rig(tmp_path: Path) -> BrokerRig:
    return make_rig(tmp_path)


def heartbeat(client_id: str, *producer_groups: str) -> bytes:
    return json.dumps(
        {"clientID": client_id, "producerDataSet": [{"groupName": g} for g in producer_groups], "consumerDataSet": []}
    ).encode()


async def test_producer_connections_come_from_heartbeats_and_leave_on_unregister_or_close(rig: BrokerRig) -> None:
    one, two = FakeConn("10.0.0.1:5001"), FakeConn("10.0.0.2:5002")
    hb = request(RequestCode.HEART_BEAT, body=heartbeat("client-1", "pg", "other"))
    hb.language, hb.version = LanguageCode.JAVA, 453
    assert (await rig.answer(hb, one)).code == ResponseCode.SUCCESS
    assert (await rig.answer(request(RequestCode.HEART_BEAT, body=heartbeat("client-2", "pg")), two)).code == 0
    ask = request(RequestCode.GET_PRODUCER_CONNECTION_LIST, GetProducerConnectionListHeader("pg"))
    rows = json.loads((await rig.answer(ask)).body)["connectionSet"]
    assert [(r["clientId"], r["clientAddr"], r["language"]) for r in rows] == [
        ("client-1", "10.0.0.1:5001", "JAVA"),
        ("client-2", "10.0.0.2:5002", "PYTHON"),
    ]
    assert rows[0]["version"] == 453 and rows[0]["lastUpdateTimestamp"] > 1_700_000_000_000

    unregister = UnregisterClientHeader(client_id="client-2", producer_group="pg")
    assert (await rig.answer(request(RequestCode.UNREGISTER_CLIENT, unregister), two)).code == ResponseCode.SUCCESS
    one.close()
    gone = await rig.answer(ask)
    assert gone.code == ResponseCode.SYSTEM_ERROR and "not online" in (gone.remark or "")
    assert "pg" not in rig.service.producers.groups


def test_producer_manager_forgets_silent_clients_and_sweeps_groups_nobody_asks_about() -> None:
    now = [1_000_000]
    manager = ProducerManager(expiry_ms=120_000, clock_ms=lambda: now[0])
    conn = FakeConn()
    manager.heartbeat(conn, {"clientID": "c", "producerDataSet": [{"groupName": "quiet"}]}, 3, 1)  # type: ignore[arg-type]
    assert [c.client_id for c in manager.connections("quiet")] == ["c"]
    now[0] += 120_001
    manager.heartbeat(FakeConn(), {"clientID": "d", "producerDataSet": [{"groupName": "busy"}]}, 3, 1)  # type: ignore[arg-type]
    assert set(manager.groups) == {"busy"}


async def test_topic_stats_and_traffic_show_queues_rates_totals_and_lag(rig: BrokerRig) -> None:
    rig.topic("T", queues=2)
    for queue_id in (0, 0, 0, 1):
        assert (await rig.answer(send_v2(send_header("T", queue_id=queue_id), b"body"))).code == ResponseCode.SUCCESS
    stats = await rig.answer(request(RequestCode.GET_TOPIC_STATS_INFO, GetTopicStatsInfoHeader("T")))
    table = {parse_queue_key(k): v for k, v in json.loads(stats.body)["offsetTable"].items()}
    assert {k: (v["minOffset"], v["maxOffset"]) for k, v in table.items()} == {
        ("broker-a", "T", 0): (0, 3),
        ("broker-a", "T", 1): (0, 1),
    }
    assert all(v["lastUpdateTimestamp"] > 1_700_000_000_000 for v in table.values())
    missing = await rig.answer(request(RequestCode.GET_TOPIC_STATS_INFO, GetTopicStatsInfoHeader("Nope")))
    assert missing.code == ResponseCode.TOPIC_NOT_EXIST

    rig.offsets.commit("g", "T", 0, 1)  # the group read one of queue 0's three and nothing of queue 1
    rig.offsets.commit("g", "T", 1, 0)
    rig.service.traffic.record_get("g", "T", 1, 10)
    traffic = json.loads((await rig.answer(request(RequestCode.GET_BROKER_CONSUME_STATS))).body)
    assert traffic["brokerName"] == "broker-a"
    [topic_row] = [t for t in traffic["topics"] if t["topic"] == "T"]
    assert topic_row["inMsgTotal"] == 4 and topic_row["inBytesTotal"] > 0
    [group_row] = traffic["groups"]
    assert {k: v for k, v in group_row.items() if k != "outTps"} == {
        "group": "g", "topic": "T", "outMsgTotal": 1, "outBytesTotal": 10, "lag": 3
    }  # fmt: skip

    runtime = json.loads((await rig.answer(request(RequestCode.GET_BROKER_RUNTIME_INFO))).body)["table"]
    assert runtime["msgPutTotalSinceStart"] == "4" and runtime["msgGetTotalSinceStart"] == "1"
    assert len(runtime["putTps"].split()) == 2 and "commitLogMaxOffset" in runtime


async def test_config_get_lists_every_setting_and_set_changes_only_runtime_keys(rig: BrokerRig) -> None:
    got = parse_properties((await rig.answer(request(RequestCode.GET_BROKER_CONFIG))).body.decode())
    assert got["brokerName"] == "broker-a" and got["longPollingEnable"] == "true" and "brokerIP1" in got

    ok = await rig.answer(request(RequestCode.UPDATE_BROKER_CONFIG, body=b"shortPollingTimeMills=250\n"))
    assert ok.code == ResponseCode.SUCCESS and rig.service.config.short_polling_time_mills == 250

    refused = await rig.answer(
        request(RequestCode.UPDATE_BROKER_CONFIG, body=b"shortPollingTimeMills=300\nlistenPort=1\n")
    )
    assert refused.code != ResponseCode.SUCCESS
    assert "listenPort cannot change" in (refused.remark or "") and "transactionCheckMax" in (refused.remark or "")
    assert rig.service.config.short_polling_time_mills == 250  # all or nothing
    negative = await rig.answer(request(RequestCode.UPDATE_BROKER_CONFIG, body=b"transactionCheckMax=0"))
    assert negative.code != ResponseCode.SUCCESS and rig.service.config.transaction_check_max == 15
