"""Default ports of every krocket process (RocketMQ's defaults; the README's port table).

Each one can be overridden on the command line or in the config; these are what a process binds and
what a client assumes when no port is given.
"""

from __future__ import annotations

from typing import Final

NAMESRV_PORT: Final = 9876
"""Name server remoting (RocketMQ's ``listenPort`` of the name server)."""
NAMESRV_HTTP_PORT: Final = 9877
"""Name server HTTP: health, readiness, metrics and the admin API."""

BROKER_PORT: Final = 10911
"""Broker remoting (``listenPort``): producers, consumers and the name server's clients."""
BROKER_HA_PORT: Final = 10912
"""Broker HA (``haListenPort``): slaves replicate the master's commit log here."""
BROKER_HTTP_PORT: Final = 10913
"""Broker HTTP (``httpPort``): health, readiness, metrics and the admin API."""
BROKER_GRPC_PORT: Final = 8081
"""Broker gRPC (``grpcListenPort``): RocketMQ 5.x clients (``apache.rocketmq.v2.MessagingService``), the port
RocketMQ's 5.x proxy serves them on; 0 turns it off."""
