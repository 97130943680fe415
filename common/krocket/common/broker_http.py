"""The broker's HTTP admin address as a registration carries it to the name servers.

REGISTER_BROKER's body is RocketMQ's ``RegisterBrokerBody`` (topic configs, filter servers); krocket adds one
field, ``krocketHttpUrl`` (e.g. ``http://10.0.0.5:10880``), that RocketMQ's name server ignores, so the name
server's console can read the broker's admin API. A body without it (an older broker, a Java broker) leaves the
broker without an HTTP address: the console shows it, without its queues and groups. The gRPC address travels
the same way (``krocket.common.broker_grpc``).
"""

from __future__ import annotations

import json

HTTP_URL_FIELD = "krocketHttpUrl"


def register_body_string(body: bytes | None, name: str) -> str:
    """The string field ``name`` of a REGISTER_BROKER body, or "" when it has none (or the body is no JSON)."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def http_url_from_register_body(body: bytes | None) -> str:
    """The broker's HTTP base URL in a REGISTER_BROKER body, or "" when it has none (or the body is no JSON)."""
    url = register_body_string(body, HTTP_URL_FIELD)
    return url if url.startswith(("http://", "https://")) else ""
