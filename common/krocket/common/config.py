"""Config loading shared by the servers: YAML file, then ``KROCKET_*`` environment, then flags."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from krocket.common.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


def _coerce(name: str, value: Any, kind: Any) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r} must be of type {kind.__name__}, got {value!r}") from None
    return value


def build_config(cls: type[T], *layers: dict[str, Any], strict: bool = True) -> T:
    """Build dataclass ``cls`` from layers of camelCase or snake_case settings, later layers winning.

    Unknown keys are an error when ``strict`` (the message names the key), except keys of a field named
    ``extra`` which collects them.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    by_camel = {_camel(name): name for name in fields}
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            name = key if key in fields else by_camel.get(key)
            if name is None or name == "extra":
                if "extra" in fields or not strict:
                    extra[key] = str(value)
                    continue
                raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(by_camel))}")
            values[name] = _coerce(key, value, hints[name])
    if "extra" in fields:
        values["extra"] = extra
    return cls(**values)


def env_layer(prefix: str, names: dict[str, str]) -> dict[str, Any]:
    """Settings from environment variables: ``names`` maps VARIABLE (without prefix) to setting name."""
    layer: dict[str, Any] = {}
    for var, setting in names.items():
        value = os.environ.get(prefix + var)
        if value not in (None, ""):
            layer[setting] = value
    return layer


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
