"""ReceiveMessage's rules (pure): the invisible time a receive may ask, how long it long-polls, its tag filter,
and what each popped message carries for the client; QueryAssignment's answer."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from krocket.broker.grpc.convert import to_grpc_message
from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.status import GrpcError
from krocket.broker.pop.service import (
    AUTO_RENEW_INVISIBLE_MS,
    MAX_INVISIBLE_MS,
    MIN_INVISIBLE_MS,
    Delivery,
)
from krocket.broker.tag_filter import parse_tag_expression
from krocket.common.errors import KrocketError

MAX_LONG_POLL_S = 20.0  # the proxy's cap
DEADLINE_MARGIN_S = 0.5  # an answer leaves before the client's deadline by this much


def invisible_ms(request: rpc.ReceiveMessageRequest) -> int:
    """60 s renewed by the broker for an auto-renew (push) receive; otherwise what the request asks, 10 s..12 h."""
    if request.auto_renew:
        return AUTO_RENEW_INVISIBLE_MS
    if not request.HasField("invisible_duration"):
        raise GrpcError(pb.ILLEGAL_INVISIBLE_TIME, "a receive without auto_renew must give an invisible_duration")
    asked = request.invisible_duration.ToMilliseconds()
    if not MIN_INVISIBLE_MS <= asked <= MAX_INVISIBLE_MS:
        raise GrpcError(
            pb.ILLEGAL_INVISIBLE_TIME,
            f"the invisible duration must be {MIN_INVISIBLE_MS // 1000} s to {MAX_INVISIBLE_MS // 3_600_000} h, "
            f"not {asked} ms",
        )
    return asked


def change_ms(duration: Duration) -> int:
    """ChangeInvisibleDuration's new time: 0 (redeliver now) to 12 h."""
    asked = duration.ToMilliseconds()
    if not 0 <= asked <= MAX_INVISIBLE_MS:
        raise GrpcError(pb.ILLEGAL_INVISIBLE_TIME, f"the invisible duration must be 0 to 12 h, not {asked} ms")
    return asked


def long_poll_s(request: rpc.ReceiveMessageRequest, remaining_s: float | None) -> float:
    """How long the receive may wait for a message: what it asks (or the default), at most 20 s, and never past
    the client's deadline."""
    asked = request.long_polling_timeout.ToMilliseconds() / 1000.0 if request.HasField("long_polling_timeout") else 0
    poll = min(asked or MAX_LONG_POLL_S, MAX_LONG_POLL_S)
    if remaining_s is not None:
        poll = min(poll, remaining_s - DEADLINE_MARGIN_S)
    return max(poll, 0.0)


def tag_codes(expression: pb.FilterExpression) -> set[int] | None:
    """The tag filter's hash codes (None: every tag); SQL92 filters are not served here."""
    if expression.type == pb.SQL:
        raise GrpcError(pb.ILLEGAL_FILTER_EXPRESSION, "SQL92 filters are not supported by krocket: filter by tag")
    try:
        return parse_tag_expression(expression.expression or "*")
    except KrocketError as exc:
        raise GrpcError(pb.ILLEGAL_FILTER_EXPRESSION, exc.message) from None


def delivered_message(delivery: Delivery, namespace: str = "") -> pb.Message:
    out = to_grpc_message(delivery.message, topic=delivery.topic, namespace=namespace)
    sp = out.system_properties
    sp.receipt_handle = delivery.handle.encode()
    sp.invisible_duration.FromMilliseconds(delivery.handle.invisible_ms)
    sp.delivery_attempt = delivery.attempt
    return out


def assignments(queues: list[pb.MessageQueue], fifo: bool) -> list[pb.Assignment]:
    """A normal group: one assignment per broker (queue id -1: the broker pops from all its queues); a FIFO group:
    one per readable queue, so each queue has one consumer at a time."""
    readable = [q for q in queues if q.permission in (pb.READ, pb.READ_WRITE)]
    if fifo:
        return [pb.Assignment(message_queue=q) for q in readable]
    out: dict[str, pb.Assignment] = {}
    for queue in readable:
        if queue.broker.name not in out:
            acting = pb.MessageQueue()
            acting.CopyFrom(queue)
            acting.id = -1
            out[queue.broker.name] = pb.Assignment(message_queue=acting)
    return list(out.values())
