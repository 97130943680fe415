"""Pure client logic: allocation, tag expressions, queue selection, process queue, offset stores, encoding."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from krocket.client.offset_store import LocalFileOffsetStore, RemoteBrokerOffsetStore
from krocket.client.process_queue import ProcessQueue
from krocket.client.producer import Producer
from krocket.client.rebalance import allocate_averagely
from krocket.client.selector import FaultTolerance, QueueSelector, publish_queues, select_by_hash
from krocket.client.subscription import build_subscription
from krocket.client.types import MessageQueue
from krocket.common.batch import decode_batch
from krocket.common.errors import KrocketError, MessageIllegalError
from krocket.common.message import (
    PROPERTY_KEYS,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    Message,
    MessageExt,
    java_string_hash,
)
from krocket.common.record import SYSFLAG_COMPRESSED
from krocket.common.route import BrokerData, QueueData, TopicRouteData


def mqs(n: int, broker: str = "b", topic: str = "T") -> list[MessageQueue]:
    return [MessageQueue(topic, broker, i) for i in range(n)]


# -- allocate_averagely ---------------------------------------------------------------------------------
def test_allocate_even_split() -> None:
    queues = mqs(8)
    ids = ["c1", "c2", "c3", "c4"]
    parts = [allocate_averagely(queues, ids, c) for c in ids]
    assert [[q.queue_id for q in p] for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_allocate_uneven_first_consumers_get_extra() -> None:
    queues = mqs(8)
    ids = ["c1", "c2", "c3"]
    parts = [[q.queue_id for q in allocate_averagely(queues, ids, c)] for c in ids]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_allocate_more_consumers_than_queues() -> None:
    queues = mqs(2)
    ids = ["c1", "c2", "c3", "c4"]
    parts = [[q.queue_id for q in allocate_averagely(queues, ids, c)] for c in ids]
    assert parts == [[0], [1], [], []]


def test_allocate_sorts_inputs_and_covers_everything_once() -> None:
    queues = mqs(5, "b") + mqs(3, "a")
    ids = ["z", "m", "a"]
    got = [q for c in ids for q in allocate_averagely(list(reversed(queues)), ids, c)]
    assert sorted(got) == sorted(queues) and len(got) == len(set(got))
    assert allocate_averagely(queues, ids, "a")[0] == MessageQueue("T", "a", 0)


def test_allocate_unknown_consumer_or_no_queues() -> None:
    assert allocate_averagely(mqs(4), ["c1"], "other") == []
    assert allocate_averagely([], ["c1"], "c1") == []


# -- tag expressions ------------------------------------------------------------------------------------
def test_subscription_all() -> None:
    for expr in ("*", "", None, "  *  "):
        sub = build_subscription("T", expr)
        assert sub.sub_string == "*" and sub.tags_set == [] and sub.code_set == []


def test_subscription_tags_and_codes() -> None:
    sub = build_subscription("T", "TagA || TagB ||TagA|| ")
    assert sub.tags_set == ["TagA", "TagB"]
    assert sub.code_set == [java_string_hash("TagA"), java_string_hash("TagB")]
    data = sub.to_json()
    assert data["expressionType"] == "TAG" and data["classFilterMode"] is False and data["topic"] == "T"
    assert data["subVersion"] > 0


def test_subscription_rejects_empty_tag_list() -> None:
    with pytest.raises(KrocketError):
        build_subscription("T", "||")
    with pytest.raises(MessageIllegalError):
        build_subscription("bad topic", "*")


def ext(offset: int, tags: str | None = None, body: bytes = b"x") -> MessageExt:
    props = {PROPERTY_TAGS: tags} if tags else {}
    return MessageExt("T", body, props, 0, offset, 0, 0, 0, 0, 0, "", 0, "", 0, "")


def test_subscription_refilters_by_tag_string() -> None:
    # "Aa" and "BB" share a Java hash code: the broker lets both through, the client keeps only "Aa".
    assert java_string_hash("Aa") == java_string_hash("BB")
    sub = build_subscription("T", "Aa")
    kept = sub.filter([ext(0, "Aa"), ext(1, "BB"), ext(2)])
    assert [m.queue_offset for m in kept] == [0]


# -- queue selection -------------------------------------------------------------------------------
def route(*brokers: tuple[str, int, int]) -> TopicRouteData:
    return TopicRouteData(
        [QueueData(n, w, w, perm) for n, w, perm in brokers],
        [BrokerData("c", n, {0: f"127.0.0.1:{i}"}) for i, (n, _, _) in enumerate(brokers)],
    )


def test_publish_queues_only_writable_and_capped() -> None:
    r = route(("b", 2, 6), ("a", 3, 6), ("ro", 4, 4))
    assert [(q.broker_name, q.queue_id) for q in publish_queues("T", r)] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("b", 1),
    ]
    assert len(publish_queues("T", r, max_queues=1)) == 2
    no_master = TopicRouteData([QueueData("x", 4, 4, 6)], [BrokerData("c", "x", {1: "h:1"})])
    assert publish_queues("T", no_master) == []


def test_round_robin_then_skip_failed_broker() -> None:
    now = [0.0]
    faults = FaultTolerance(30.0, clock=lambda: now[0])
    sel = QueueSelector(faults, start=0)
    queues = mqs(2, "a") + mqs(2, "b")
    assert [sel.select(queues) for _ in range(4)] == queues
    faults.mark_failed("a")
    assert {sel.select(queues).broker_name for _ in range(8)} == {"b"}
    now[0] = 31.0
    assert {sel.select(queues).broker_name for _ in range(8)} == {"a", "b"}


def test_retry_avoids_last_failed_broker_even_when_all_suspect() -> None:
    faults = FaultTolerance(30.0)
    sel = QueueSelector(faults, start=0)
    queues = mqs(1, "a") + mqs(1, "b")
    faults.mark_failed("a")
    faults.mark_failed("b")
    assert all(sel.select(queues, last_failed="a").broker_name == "b" for _ in range(4))
    assert sel.select(mqs(1, "a"), last_failed="a").broker_name == "a"  # nothing else to pick


def test_select_by_hash_is_stable() -> None:
    queues = mqs(4)
    assert select_by_hash(queues, None, 6) == queues[2]
    assert select_by_hash(queues, None, "order-1") == select_by_hash(queues, None, "order-1")


# -- process queue ---------------------------------------------------------------------------------
def test_process_queue_commit_point_with_out_of_order_completion() -> None:
    pq = ProcessQueue()
    msgs = [ext(o, body=b"abc") for o in range(10, 15)]
    pq.put(msgs)
    assert pq.count == 5 and pq.bytes == 15 and pq.max_span == 4
    assert pq.remove([msgs[2]]) == 10  # 12 done, 10 still held
    assert pq.remove([msgs[1], msgs[3]]) == 10
    assert pq.remove([msgs[0]]) == 14  # 10..13 done
    assert pq.remove([msgs[4]]) == 15  # all done: one past the highest
    assert pq.count == 0 and pq.bytes == 0
    assert pq.remove([msgs[4]]) == -1  # nothing held


def test_process_queue_ignores_duplicates() -> None:
    pq = ProcessQueue()
    pq.put([ext(1), ext(1), ext(2)])
    assert pq.count == 2 and pq.bytes == 2
    assert [m.queue_offset for m in pq.held()] == [1, 2]


# -- offset stores -----------------------------------------------------------------------------------
def test_local_offset_store_roundtrip_and_atomic_file(tmp_path: Path) -> None:
    store = LocalFileOffsetStore("10.0.0.1@DEFAULT", "g1", tmp_path)
    q0, q1 = MessageQueue("T", "a", 0), MessageQueue("T", "b", 1)
    store.update(q0, 5)
    store.update(q0, 3, increase_only=True)
    store.update(q1, 7)
    store.save()
    path = tmp_path / "10.0.0.1@DEFAULT" / "g1" / "offsets.json"
    assert path.exists() and not path.with_name("offsets.json.tmp").exists()
    data = json.loads(path.read_text())
    assert {(e["brokerName"], e["queueId"], e["offset"]) for e in data["offsets"]} == {("a", 0, 5), ("b", 1, 7)}
    again = LocalFileOffsetStore("10.0.0.1@DEFAULT", "g1", tmp_path)
    assert again.read(q0) == 5 and again.read(q1) == 7
    assert again.read(MessageQueue("T", "a", 9)) == -1


async def test_local_offset_store_persist_is_async_and_keeps_removed(tmp_path: Path) -> None:
    store = LocalFileOffsetStore("c", "g", tmp_path)
    q = MessageQueue("T", "a", 0)
    store.update(q, 4)
    store.remove(q)
    await store.persist([])
    assert LocalFileOffsetStore("c", "g", tmp_path).read(q) == 4
    assert await store.read_stored(q) == 4


async def test_remote_offset_store_commits_changed_offsets_only() -> None:
    committed: list[tuple[MessageQueue, int]] = []
    remote = {MessageQueue("T", "a", 0): 3}

    async def query(q: MessageQueue) -> int:
        return remote.get(q, -1)

    async def commit(q: MessageQueue, o: int) -> None:
        committed.append((q, o))

    store = RemoteBrokerOffsetStore(query, commit)
    q0, q1 = MessageQueue("T", "a", 0), MessageQueue("T", "a", 1)
    assert await store.read_stored(q0) == 3 and await store.read_stored(q1) == -1
    await store.persist([q0, q1])
    assert committed == []  # nothing changed since it was read
    store.update(q0, 9)
    store.update(q1, 2)
    await store.persist([q0])  # only assigned queues are committed
    assert committed == [(q0, 9)]
    await store.persist([q0])
    assert committed == [(q0, 9)]


# -- message encoding --------------------------------------------------------------------------------
def test_prepare_sets_unique_id_wait_tags_keys_and_compresses() -> None:
    producer = Producer("pg")
    uniq, props, body, sys_flag = producer._prepare(Message("T", b"hi", tags="A", keys=["k1", "k2"]))
    assert props[PROPERTY_UNIQ_KEY] == uniq and len(uniq) == 32
    assert props[PROPERTY_TAGS] == "A" and props[PROPERTY_KEYS] == "k1 k2" and props["WAIT"] == "true"
    assert body == b"hi" and sys_flag == 0
    big = b"x" * 5000
    _, _, body, sys_flag = producer._prepare(Message("T", big))
    assert sys_flag & SYSFLAG_COMPRESSED and zlib.decompress(body) == big
    uniq2, _, _, _ = producer._prepare(Message("T", b"hi"))
    assert uniq2 != uniq


def test_header_uses_short_names() -> None:
    producer = Producer("pg")
    f = producer._header("T", 3, {"TAGS": "A"}, 1, 7, batch=False).to_v2_fields()
    assert (f["a"], f["b"], f["c"], f["d"], f["e"], f["f"], f["h"]) == ("pg", "T", "TBW102", "4", "3", "1", "7")
    assert f["i"] == "TAGS\x01A\x02" and (f["j"], f["k"], f["m"]) == ("0", "false", "false")


def test_check_rejects_bad_messages() -> None:
    producer = Producer("pg", max_message_bytes=10)
    with pytest.raises(MessageIllegalError, match="at most 10"):
        producer._check(Message("T", b"x" * 11))
    with pytest.raises(MessageIllegalError, match="empty"):
        producer._check(Message("T", b""))
    with pytest.raises(MessageIllegalError, match="may only contain"):
        producer._check(Message("a b", b"x"))


def test_batch_body_roundtrip() -> None:
    from krocket.common.batch import encode_batch

    body = encode_batch([(b"one", {"TAGS": "A", PROPERTY_UNIQ_KEY: "1"}, 0), (b"two", {}, 3)])
    items = decode_batch(body)
    assert [i.body for i in items] == [b"one", b"two"]
    assert items[0].properties == {"TAGS": "A", PROPERTY_UNIQ_KEY: "1"} and items[1].flag == 3


def test_name_server_list_from_env_and_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    from krocket.client.namesrv import NameServerClient
    from krocket.common.remoting import ConnectionPool

    monkeypatch.setenv("NAMESRV_ADDR", "localhost:9876;127.0.0.1:9877")
    monkeypatch.delenv("KROCKET_NAMESRV_ADDR", raising=False)
    client = NameServerClient(ConnectionPool())
    assert client.addresses == ["127.0.0.1:9876", "127.0.0.1:9877"]
    explicit = NameServerClient(ConnectionPool(), "127.0.0.1:1")
    assert explicit.addresses == ["127.0.0.1:1"]


def test_max_reconsume_times_defaults_follow_rocketmq() -> None:
    from krocket.client import PushConsumer

    assert PushConsumer("g1", "127.0.0.1:9876").max_reconsume_times == 16
    assert PushConsumer("g1", "127.0.0.1:9876", orderly=True).max_reconsume_times == 2**31 - 1
    late = PushConsumer("g1", "127.0.0.1:9876")
    late.register_orderly_listener(lambda msgs: None)
    assert late.max_reconsume_times == 2**31 - 1
    assert PushConsumer("g1", "127.0.0.1:9876", orderly=True, max_reconsume_times=3).max_reconsume_times == 3
