"""The protocol's ``Status`` (errors travel in the response with gRPC status OK, as RocketMQ's proxy does) and the
mapping of krocket's remoting errors onto its ``Code`` values."""

from __future__ import annotations

from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.pop.handle import InvalidReceiptHandle
from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError

_FROM_REMOTING: dict[int, int] = {
    ResponseCode.SUCCESS: pb.OK,
    ResponseCode.FLUSH_DISK_TIMEOUT: pb.MASTER_PERSISTENCE_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: pb.SLAVE_PERSISTENCE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: pb.HA_NOT_AVAILABLE,
    ResponseCode.SYSTEM_BUSY: pb.TOO_MANY_REQUESTS,
    ResponseCode.TOPIC_NOT_EXIST: pb.TOPIC_NOT_FOUND,
    ResponseCode.NO_PERMISSION: pb.FORBIDDEN,
    ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST: pb.CONSUMER_GROUP_NOT_FOUND,
    ResponseCode.MESSAGE_ILLEGAL: pb.BAD_REQUEST,
    ResponseCode.REQUEST_CODE_NOT_SUPPORTED: pb.NOT_IMPLEMENTED,
}


class GrpcError(Exception):
    """A request refused with one of the protocol's codes (``definition_pb2.Code``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


def status(code: int = pb.OK, message: str = "OK") -> pb.Status:
    return pb.Status(code=code, message=message)  # type: ignore[arg-type]


def code_of_remoting(code: int) -> int:
    """The 5.x code of a remoting response code (RocketMQ's proxy: anything unmapped is INTERNAL_SERVER_ERROR)."""
    return _FROM_REMOTING.get(code, pb.INTERNAL_SERVER_ERROR)


def status_of(exc: Exception) -> pb.Status:
    """The ``Status`` an error answers a request with."""
    if isinstance(exc, GrpcError):
        return status(exc.code, exc.message)
    if isinstance(exc, InvalidReceiptHandle):
        return status(pb.INVALID_RECEIPT_HANDLE, exc.message)
    if isinstance(exc, KrocketError):
        return status(code_of_remoting(exc.code), exc.message)
    return status(pb.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
