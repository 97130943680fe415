"""The consume service's send-back: a failed message goes back to its broker and its queue moves on; only a
message whose send-back fails is retried locally; a redelivered retry shows the listener its first topic."""

from __future__ import annotations

from krocket.client.consume_service import ConsumeConcurrentlyService, restore_retry_topics
from krocket.client.process_queue import ProcessQueue
from krocket.client.throttle import LogThrottle
from krocket.client.types import ConsumeStatus, MessageQueue
from krocket.common.errors import RemoteError
from krocket.common.message import MessageExt

from tests.unit.client.test_consume_service import MQ, Settings, msg, store, wait_for


async def test_a_failing_message_is_sent_back_and_the_ones_behind_it_are_committed() -> None:
    sent_back: list[tuple[MessageQueue, int]] = []
    seen: list[int] = []

    def listener(messages: list[MessageExt]) -> ConsumeStatus:
        seen.extend(m.queue_offset for m in messages)
        return ConsumeStatus.RECONSUME_LATER if messages[0].queue_offset == 1 else ConsumeStatus.SUCCESS

    async def send_back(mq: MessageQueue, message: MessageExt) -> None:
        sent_back.append((mq, message.queue_offset))

    svc = ConsumeConcurrentlyService(Settings(), listener, store(), LogThrottle(), send_back)
    pq = ProcessQueue()
    batch = [msg(i) for i in range(4)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 0)
    assert sent_back == [(MQ, 1)]
    assert sorted(seen) == [0, 1, 2, 3]  # the poison message was consumed once here, then handed back
    assert svc.store.read(MQ) == 4
    assert batch[1].reconsume_times == 0  # the broker counts the reconsume
    svc.close()


async def test_a_message_whose_send_back_fails_is_retried_locally() -> None:
    attempts: list[int] = []
    calls: list[int] = []

    def listener(messages: list[MessageExt]) -> ConsumeStatus:
        calls.append(messages[0].reconsume_times)
        return ConsumeStatus.SUCCESS if len(calls) >= 3 else ConsumeStatus.RECONSUME_LATER

    async def send_back(mq: MessageQueue, message: MessageExt) -> None:
        attempts.append(message.reconsume_times)
        raise RemoteError(1, "broker is gone")

    svc = ConsumeConcurrentlyService(Settings(), listener, store(), LogThrottle(), send_back)
    pq = ProcessQueue()
    batch = [msg(5)]
    pq.put(batch)
    svc.submit(MQ, pq, batch)
    await wait_for(lambda: pq.count == 0)
    assert attempts == [0, 1]
    assert calls == [0, 1, 2]
    assert svc.store.read(MQ) == 6
    svc.close()


def test_a_redelivered_retry_gets_its_first_topic_back() -> None:
    retry = MessageExt("%RETRY%cg", b"x", {"RETRY_TOPIC": "Orders"}, 0, 0, 0, 0, 0, 0, 0, "", 0, "", 1, "")
    other_group = MessageExt("%RETRY%other", b"x", {"RETRY_TOPIC": "Orders"}, 0, 0, 0, 0, 0, 0, 0, "", 0, "", 1, "")
    plain = MessageExt("Orders", b"x", {}, 0, 0, 0, 0, 0, 0, 0, "", 0, "", 0, "")
    restore_retry_topics([retry, other_group, plain], "cg")
    assert [m.topic for m in (retry, other_group, plain)] == ["Orders", "%RETRY%other", "Orders"]
