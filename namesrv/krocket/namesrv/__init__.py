"""krocket name server: route registry, remoting processor and HTTP app."""

from krocket.namesrv.registry import (
    BROKER_EXPIRY_SECONDS,
    BrokerLiveInfo,
    RegisterResult,
    Registration,
    RouteRegistry,
)
from krocket.namesrv.server import NameServer, run_namesrv

__all__ = [
    "BROKER_EXPIRY_SECONDS",
    "BrokerLiveInfo",
    "NameServer",
    "RegisterResult",
    "Registration",
    "RouteRegistry",
    "run_namesrv",
]
