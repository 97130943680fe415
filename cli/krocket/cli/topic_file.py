"""A file of topics for ``krocket topic create|update|delete --from-file FILE`` (YAML or JSON).

Either a list or ``{"topics": [...]}``; each entry is a topic name, or an object::

    topics:
      - name: orders            # required
        readQueues: 16          # default: --read-queues (8)
        writeQueues: 16         # default: readQueues
        perm: 6                 # default: --perm (6)
        messageType: FIFO       # default: --message-type, else NORMAL
      - payments                # a name alone takes every default

Every entry is checked before anything is sent; an error names the entry (its position and name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from krocket.common.errors import ConfigError, KrocketError, MessageIllegalError
from krocket.common.message_type import MESSAGE_TYPE_ATTRIBUTE, TOPIC_MESSAGE_TYPES
from krocket.common.topic import TopicConfig, check_queue_nums, is_system_topic, validate_topic

FIELDS = frozenset({"name", "readQueues", "writeQueues", "perm", "messageType"})


@dataclass(frozen=True)
class TopicDefaults:
    read_queues: int = 8
    write_queues: int | None = None
    perm: int = 6
    message_type: str | None = None


def read_topic_file(path: str) -> list[Any]:
    """The entries of a topics file; ``ConfigError`` naming the file when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the topics file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from None
    entries = data.get("topics") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a list of topics (or topics: [...]), got {type(entries).__name__}")
    return entries


def topic_names(entries: list[Any], path: str, force: bool = False) -> list[str]:
    """The names of the entries (for a delete)."""
    names = []
    for index, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else entry
        names.append(_name(name, index, path, force))
    return _unique(names, path)


def topic_configs(entries: list[Any], path: str, defaults: TopicDefaults, force: bool = False) -> list[TopicConfig]:
    """The topic configs of the entries, every one checked."""
    configs = []
    for index, entry in enumerate(entries, start=1):
        raw: dict[str, Any] = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: entry {index} is neither a topic name nor an object")
        name = _name(raw.get("name"), index, path, force)
        unknown = set(raw) - FIELDS
        if unknown:
            raise ConfigError(
                f"{path}: entry {index} ({name}): unknown field(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(FIELDS))}"
            )
        try:
            read = _int(raw.get("readQueues", defaults.read_queues), "readQueues")
            write = _int(raw.get("writeQueues", defaults.write_queues or read), "writeQueues")
            perm = _int(raw.get("perm", defaults.perm), "perm")
            check_queue_nums(read, write)
            if perm not in (2, 4, 6):
                raise ValueError(f"perm must be 2, 4 or 6, got {perm}")
            message_type = raw.get("messageType", defaults.message_type)
            if message_type is not None and message_type not in TOPIC_MESSAGE_TYPES:
                raise ValueError(f"messageType must be one of {', '.join(TOPIC_MESSAGE_TYPES)}, got {message_type!r}")
            attributes = {MESSAGE_TYPE_ATTRIBUTE: str(message_type)} if message_type else {}
            config = TopicConfig(name, read, write, perm, attributes=attributes)
            config.validate()
        except (ValueError, ConfigError, MessageIllegalError) as exc:
            raise ConfigError(f"{path}: entry {index} ({name}): {_message(exc)}") from None
        configs.append(config)
    _unique([c.topic_name for c in configs], path)
    return configs


def _name(name: Any, index: int, path: str, force: bool) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: entry {index} has no name")
    try:
        validate_topic(name)
    except MessageIllegalError as exc:
        raise ConfigError(f"{path}: entry {index}: {exc.message}") from None
    if is_system_topic(name) and not force:
        raise ConfigError(f"{path}: entry {index}: {name} is a system topic the brokers rely on; pass --force")
    return name


def _unique(names: list[str], path: str) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{path}: topic {name} is listed twice")
        seen.add(name)
    return names


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an integer, got {value!r}")
    return value


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, KrocketError) else str(exc)
