"""ReceiveMessage's rules: the invisible time asked, the long poll, the tag filter; QueryAssignment's answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.duration_pb2 import Duration

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.receive import assignments, change_ms, invisible_ms, long_poll_s, tag_codes
from krocket.broker.grpc.status import GrpcError
from krocket.common.message import java_string_hash

HOUR_MS = 3_600_000


def receive(
    invisible: int | None = None, auto_renew: bool = False, poll_ms: int | None = None
) -> rpc.ReceiveMessageRequest:
    request = rpc.ReceiveMessageRequest(auto_renew=auto_renew)
    if invisible is not None:
        request.invisible_duration.FromMilliseconds(invisible)
    if poll_ms is not None:
        request.long_polling_timeout.FromMilliseconds(poll_ms)
    return request


def duration(ms: int) -> Duration:
    out = Duration()
    out.FromMilliseconds(ms)
    return out


def code_of(call: Callable[..., object], *args: object) -> int:
    with pytest.raises(GrpcError) as caught:
        call(*args)
    return caught.value.code


# -- invisible_ms --------------------------------------------------------------------------------------------
def test_auto_renew_receive_gets_60_seconds_whatever_it_asks() -> None:
    assert invisible_ms(receive(auto_renew=True)) == 60_000
    assert invisible_ms(receive(invisible=1, auto_renew=True)) == 60_000


def test_receive_without_auto_renew_or_invisible_duration_is_refused() -> None:
    assert code_of(invisible_ms, receive()) == pb.ILLEGAL_INVISIBLE_TIME


def test_receive_gets_the_invisible_time_it_asks_within_10_s_to_12_h() -> None:
    assert invisible_ms(receive(invisible=10_000)) == 10_000
    assert invisible_ms(receive(invisible=45_500)) == 45_500
    assert invisible_ms(receive(invisible=12 * HOUR_MS)) == 12 * HOUR_MS


@pytest.mark.parametrize("asked", [0, 9_999, 12 * HOUR_MS + 1, 24 * HOUR_MS, -10_000])
def test_receive_outside_10_s_to_12_h_is_refused(asked: int) -> None:
    assert code_of(invisible_ms, receive(invisible=asked)) == pb.ILLEGAL_INVISIBLE_TIME


def test_an_explicit_zero_invisible_duration_is_present_and_refused() -> None:
    request = rpc.ReceiveMessageRequest()
    request.invisible_duration.SetInParent()
    with pytest.raises(GrpcError, match="not 0 ms"):
        invisible_ms(request)


# -- change_ms -----------------------------------------------------------------------------------------------
def test_change_accepts_zero_to_12_hours() -> None:
    assert change_ms(duration(0)) == 0
    assert change_ms(duration(1)) == 1
    assert change_ms(duration(12 * HOUR_MS)) == 12 * HOUR_MS


@pytest.mark.parametrize("asked", [-1, -60_000, 12 * HOUR_MS + 1])
def test_change_refuses_negative_or_over_12_hours(asked: int) -> None:
    assert code_of(change_ms, duration(asked)) == pb.ILLEGAL_INVISIBLE_TIME


# -- long_poll_s ---------------------------------------------------------------------------------------------
def test_long_poll_defaults_to_20_s_without_a_timeout_or_deadline() -> None:
    assert long_poll_s(receive(), None) == 20.0
    assert long_poll_s(receive(poll_ms=0), None) == 20.0


def test_long_poll_is_what_is_asked_up_to_20_s() -> None:
    assert long_poll_s(receive(poll_ms=5_000), None) == 5.0
    assert long_poll_s(receive(poll_ms=20_000), None) == 20.0
    assert long_poll_s(receive(poll_ms=30_000), None) == 20.0


def test_long_poll_ends_half_a_second_before_the_deadline() -> None:
    assert long_poll_s(receive(poll_ms=15_000), 10.0) == pytest.approx(9.5)
    assert long_poll_s(receive(), 3.0) == pytest.approx(2.5)


def test_long_poll_asked_shorter_than_the_deadline_is_kept() -> None:
    assert long_poll_s(receive(poll_ms=2_000), 10.0) == 2.0


@pytest.mark.parametrize("remaining", [0.5, 0.2, 0.0, -3.0])
def test_long_poll_is_never_negative_near_or_past_the_deadline(remaining: float) -> None:
    assert long_poll_s(receive(poll_ms=5_000), remaining) == 0.0


def test_long_poll_of_a_negative_timeout_is_zero() -> None:
    assert long_poll_s(receive(poll_ms=-1_000), None) == 0.0


# -- tag_codes -----------------------------------------------------------------------------------------------
def test_sql_filter_is_refused() -> None:
    expression = pb.FilterExpression(type=pb.SQL, expression="a > 1")
    assert code_of(tag_codes, expression) == pb.ILLEGAL_FILTER_EXPRESSION


@pytest.mark.parametrize("text", ["*", "", "  ", " * "])
def test_every_tag_filter_is_none(text: str) -> None:
    assert tag_codes(pb.FilterExpression(type=pb.TAG, expression=text)) is None


def test_unspecified_filter_type_is_a_tag_filter() -> None:
    assert tag_codes(pb.FilterExpression(expression="a")) == {java_string_hash("a")}


def test_tag_alternatives_give_their_hash_codes() -> None:
    codes = tag_codes(pb.FilterExpression(type=pb.TAG, expression="a||b"))
    assert codes == {java_string_hash("a"), java_string_hash("b")}
    assert len(codes) == 2
    assert tag_codes(pb.FilterExpression(type=pb.TAG, expression=" a || b ")) == codes


@pytest.mark.parametrize("text", ["a||", "||a", "a|| ||b"])
def test_an_empty_tag_alternative_is_refused(text: str) -> None:
    expression = pb.FilterExpression(type=pb.TAG, expression=text)
    assert code_of(tag_codes, expression) == pb.ILLEGAL_FILTER_EXPRESSION


# -- assignments ---------------------------------------------------------------------------------------------
def queue(broker: str, queue_id: int, permission: int = pb.READ_WRITE) -> pb.MessageQueue:
    return pb.MessageQueue(
        topic=pb.Resource(name="T"),
        id=queue_id,
        permission=permission,  # type: ignore[arg-type]
        broker=pb.Broker(name=broker, id=0),
    )


QUEUES = [
    queue("a", 0),
    queue("a", 1, pb.READ),
    queue("a", 2, pb.WRITE),
    queue("b", 0, pb.WRITE),
    queue("b", 1),
    queue("c", 0, pb.WRITE),
    queue("d", 0, pb.NONE),
]


def test_a_normal_group_gets_one_assignment_per_broker_with_queue_id_minus_one() -> None:
    out = assignments(QUEUES, fifo=False)
    assert [(a.message_queue.broker.name, a.message_queue.id) for a in out] == [("a", -1), ("b", -1)]
    assert all(a.message_queue.topic.name == "T" for a in out)


def test_a_normal_groups_assignment_does_not_change_the_route_queues() -> None:
    assignments(QUEUES, fifo=False)
    assert [q.id for q in QUEUES] == [0, 1, 2, 0, 1, 0, 0]


def test_a_fifo_group_gets_one_assignment_per_readable_queue() -> None:
    out = assignments(QUEUES, fifo=True)
    assert [(a.message_queue.broker.name, a.message_queue.id) for a in out] == [("a", 0), ("a", 1), ("b", 1)]
    assert [a.message_queue.permission for a in out] == [pb.READ_WRITE, pb.READ, pb.READ_WRITE]


def test_write_only_queues_get_no_assignment() -> None:
    only_write = [queue("a", 0, pb.WRITE), queue("a", 1, pb.WRITE)]
    assert assignments(only_write, fifo=False) == []
    assert assignments(only_write, fifo=True) == []


def test_no_queues_no_assignments() -> None:
    assert assignments([], fifo=False) == []
    assert assignments([], fifo=True) == []
