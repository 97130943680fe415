"""The broker's settings as GET_BROKER_CONFIG (26) answers them, and the few UPDATE_BROKER_CONFIG (25) may change.

Only settings the broker reads at each use can change at run time: the others are copied into components at
start (ports, store, TLS, the fast path's size limit, ...) and a change would be a lie. An update naming any
other key is refused as a whole, with the list of the changeable keys. A change lives in memory until the broker
restarts: it is not written back to the broker's YAML file (operators keep that file, in Kubernetes a read-only
ConfigMap; change it there to keep a value).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from krocket.broker.config import BrokerConfig
from krocket.common.codes import BROKER_PERMISSION_CHOICES, BROKER_PERMISSIONS
from krocket.common.config import build_config
from krocket.common.errors import ConfigError
from krocket.common.headers.fields import camel_case
from krocket.common.properties import parse_properties, properties_text

__all__ = ["RUNTIME_KEYS", "apply_runtime_update", "config_table", "parse_properties", "properties_text"]

# camelCase key -> the smallest value it takes; each is read from ``service.config`` at every use.
RUNTIME_KEYS: dict[str, int] = {
    "longPollingEnable": 0,  # pulls that find nothing wait (true) or answer after shortPollingTimeMills
    "shortPollingTimeMills": 1,
    "transactionTimeOut": 1,  # ms before a half message is checked
    "transactionCheckMax": 1,  # checks before a half message is dropped
    "transactionCheckInterval": 1,  # ms between transaction check rounds
    "brokerPermission": 2,  # 6, 4 or 2 (BROKER_PERMISSIONS); BrokerService.set_broker_permission applies it
}


def config_table(config: BrokerConfig) -> dict[str, str]:
    """Every setting under its RocketMQ (camelCase) name, as text."""
    table: dict[str, str] = {}
    for f in dataclasses.fields(config):
        if f.name == "extra":
            continue
        value = getattr(config, f.name)
        table[camel_case(f.name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return dict(sorted(table.items()))


def apply_runtime_update(config: BrokerConfig, updates: dict[str, str]) -> dict[str, str]:
    """Apply ``updates`` (camelCase keys) to ``config`` in place, all or nothing; returns what changed, as text.
    ``ConfigError`` for a key that cannot change at run time (listing those that can) or a bad value."""
    if not updates:
        raise ConfigError("no setting to update")
    refused = sorted(k for k in updates if k not in RUNTIME_KEYS)
    if refused:
        raise ConfigError(
            f"{', '.join(refused)} cannot change while the broker runs (set it in the broker's config file and "
            f"restart); changeable at run time: {', '.join(sorted(RUNTIME_KEYS))}"
        )
    parsed = build_config(BrokerConfig, dict(updates))  # the file loader's coercion: one error style
    values: dict[str, Any] = {}
    for key in updates:
        name = next(f.name for f in dataclasses.fields(config) if camel_case(f.name) == key)
        value = getattr(parsed, name)
        if not isinstance(value, bool) and value < RUNTIME_KEYS[key]:
            raise ConfigError(f"{key} must be at least {RUNTIME_KEYS[key]}, got {value}")
        if key == "brokerPermission" and value not in BROKER_PERMISSIONS:
            raise ConfigError(f"brokerPermission must be {BROKER_PERMISSION_CHOICES}, got {value}")
        values[name] = value
    for name, value in values.items():
        setattr(config, name, value)
    table = config_table(config)
    return {key: table[key] for key in updates}
