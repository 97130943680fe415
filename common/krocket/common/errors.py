"""One exception family for krocket, each mapped to a RocketMQ response code."""

from __future__ import annotations

from krocket.common.codes import ResponseCode


class KrocketError(Exception):
    """Base of every krocket error; ``code`` is the remoting response code it maps to."""

    code: int = ResponseCode.SYSTEM_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class MessageIllegalError(KrocketError):
    code = ResponseCode.MESSAGE_ILLEGAL


class TopicNotExistError(KrocketError):
    code = ResponseCode.TOPIC_NOT_EXIST


class NoPermissionError(KrocketError):
    code = ResponseCode.NO_PERMISSION


class ServiceNotAvailableError(KrocketError):
    code = ResponseCode.SERVICE_NOT_AVAILABLE


class SystemBusyError(KrocketError):
    code = ResponseCode.SYSTEM_BUSY


class FlushDiskTimeoutError(KrocketError):
    code = ResponseCode.FLUSH_DISK_TIMEOUT


class RequestNotSupportedError(KrocketError):
    code = ResponseCode.REQUEST_CODE_NOT_SUPPORTED


class HeaderError(KrocketError):
    """A request header lacks a field or carries a malformed one; ``field`` names it, ``value`` is what
    came (``None`` when the field is missing)."""

    code = ResponseCode.SYSTEM_ERROR

    def __init__(self, message: str, field: str = "", value: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class FrameError(KrocketError):
    """A malformed or oversize frame: the connection that sent it is closed."""


class RemotingTimeoutError(KrocketError):
    """No response arrived in time."""


class ConnectionClosedError(KrocketError):
    """The peer closed the connection while requests were in flight."""


class ConfigError(KrocketError):
    """Invalid configuration: the message names the setting to fix."""


class RemoteError(KrocketError):
    """A peer answered with a non-success response code."""

    def __init__(self, code: int, remark: str) -> None:
        try:
            name = ResponseCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"{name}: {remark}" if remark else name, code)
        self.remark = remark
