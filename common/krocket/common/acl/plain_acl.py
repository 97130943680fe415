"""The rules of a RocketMQ 4.x ``plain_acl.yml``: accounts with keys, white lists and permissions.

    globalWhiteRemoteAddresses: ["10.10.103.*", "192.168.0.{100,101}"]
    accounts:
      - accessKey: rocketmq2
        secretKey: "12345678"
        whiteRemoteAddress: ""
        admin: false
        defaultTopicPerm: DENY        # DENY, PUB, SUB or PUB|SUB
        defaultGroupPerm: SUB
        topicPerms: ["Orders=PUB|SUB", "Audit=SUB"]
        groupPerms: ["order-consumers=SUB"]

An invalid file is a ``ConfigError`` naming the field (``accounts[1].topicPerms[0]``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from krocket.common.acl.addresses import AddressPattern, parse_pattern
from krocket.common.errors import ConfigError


class Perm(enum.IntFlag):
    """What an account may do with a topic or group. DENY is no bit at all."""

    DENY = 0
    PUB = 1
    SUB = 2


def parse_perm(text: str, where: str) -> Perm:
    words = [w.strip().upper() for w in str(text).split("|")]
    perm = Perm.DENY
    for word in words:
        if word in ("PUB", "SUB"):
            perm |= Perm[word]
        elif word == "ANY":
            perm |= Perm.PUB | Perm.SUB
        elif word != "DENY" or len(words) > 1:
            raise ConfigError(f"{where}: {text!r} is not a permission (DENY, PUB, SUB or PUB|SUB)")
    return perm


def perm_name(perm: Perm) -> str:
    if perm == Perm.DENY:
        return "DENY"
    return "|".join(p.name for p in (Perm.PUB, Perm.SUB) if p & perm and p.name)


@dataclass(frozen=True, slots=True)
class AclAccount:
    access_key: str
    secret_key: str
    white_remote_address: AddressPattern | None = None
    admin: bool = False
    default_topic_perm: Perm = Perm.DENY
    default_group_perm: Perm = Perm.DENY
    topic_perms: Mapping[str, Perm] = field(default_factory=dict)
    group_perms: Mapping[str, Perm] = field(default_factory=dict)

    def topic_perm(self, topic: str) -> Perm:
        """What this account may do with ``topic``. An admin may do anything not listed otherwise."""
        listed = self.topic_perms.get(topic)
        if listed is not None:
            return listed
        return Perm.PUB | Perm.SUB if self.admin else self.default_topic_perm

    def group_perm(self, group: str) -> Perm:
        listed = self.group_perms.get(group)
        if listed is not None:
            return listed
        return Perm.PUB | Perm.SUB if self.admin else self.default_group_perm

    def is_white_listed(self, host: str) -> bool:
        return self.white_remote_address is not None and self.white_remote_address.matches(host)


@dataclass(frozen=True, slots=True)
class PlainAcl:
    global_white_remote_addresses: tuple[AddressPattern, ...] = ()
    accounts: Mapping[str, AclAccount] = field(default_factory=dict)

    def is_globally_white_listed(self, host: str) -> bool:
        return any(p.matches(host) for p in self.global_white_remote_addresses)

    def account(self, access_key: str) -> AclAccount | None:
        return self.accounts.get(access_key)

    @property
    def first_admin(self) -> AclAccount | None:
        """The first admin account in file order: brokers sign their own traffic with it."""
        return next((a for a in self.accounts.values() if a.admin), None)


_ACCOUNT_KEYS = frozenset(
    {
        "accessKey",
        "secretKey",
        "whiteRemoteAddress",
        "admin",
        "defaultTopicPerm",
        "defaultGroupPerm",
        "topicPerms",
        "groupPerms",
    }
)
_TOP_KEYS = frozenset({"globalWhiteRemoteAddresses", "accounts", "dataVersion"})


def _pattern(text: Any, where: str) -> AddressPattern:
    if not isinstance(text, str | int | float):
        raise ConfigError(f"{where}: an address pattern must be a string, got {text!r}")
    try:
        return parse_pattern(str(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _resource_perms(raw: Any, where: str) -> dict[str, Perm]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be a list like ['Orders=PUB|SUB'], got {raw!r}")
    perms: dict[str, Perm] = {}
    for i, entry in enumerate(raw):
        item = f"{where}[{i}]"
        name, sep, perm = str(entry).partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{item}: {entry!r} must be NAME=PERM, like Orders=PUB|SUB")
        perms[name.strip()] = parse_perm(perm, item)
    return perms


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{where}: must be true or false, got {value!r}")


def _account(raw: Any, where: str) -> AclAccount:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: an account must be a mapping with accessKey and secretKey")
    unknown = sorted(set(raw) - _ACCOUNT_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field; known: {', '.join(sorted(_ACCOUNT_KEYS))}")
    for key in ("accessKey", "secretKey"):
        value = raw.get(key)
        if value is None or str(value) == "" or isinstance(value, dict | list | bool):
            raise ConfigError(f"{where}.{key}: is required and must be a non-empty string")
    access_key, secret_key = str(raw["accessKey"]), str(raw["secretKey"])
    white = raw.get("whiteRemoteAddress")
    return AclAccount(
        access_key=access_key,
        secret_key=secret_key,
        white_remote_address=_pattern(white, f"{where}.whiteRemoteAddress") if white else None,
        admin=_bool(raw.get("admin", False), f"{where}.admin"),
        default_topic_perm=parse_perm(raw.get("defaultTopicPerm") or "DENY", f"{where}.defaultTopicPerm"),
        default_group_perm=parse_perm(raw.get("defaultGroupPerm") or "DENY", f"{where}.defaultGroupPerm"),
        topic_perms=_resource_perms(raw.get("topicPerms"), f"{where}.topicPerms"),
        group_perms=_resource_perms(raw.get("groupPerms"), f"{where}.groupPerms"),
    )


def parse_plain_acl(data: Any, source: str = "plain_acl.yml") -> PlainAcl:
    """Rules from the parsed YAML; ``ConfigError`` names the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must hold a mapping with globalWhiteRemoteAddresses and accounts")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown field {unknown[0]!r}; known: globalWhiteRemoteAddresses, accounts")
    white = data.get("globalWhiteRemoteAddresses") or []
    if not isinstance(white, list):
        raise ConfigError(f"{source}: globalWhiteRemoteAddresses must be a list of address patterns")
    patterns = tuple(_pattern(p, f"{source}: globalWhiteRemoteAddresses[{i}]") for i, p in enumerate(white))
    raw_accounts = data.get("accounts") or []
    if not isinstance(raw_accounts, list):
        raise ConfigError(f"{source}: accounts must be a list of accounts")
    accounts: dict[str, AclAccount] = {}
    for i, raw in enumerate(raw_accounts):
        account = _account(raw, f"{source}: accounts[{i}]")
        if account.access_key in accounts:
            raise ConfigError(f"{source}: accounts[{i}].accessKey: {account.access_key!r} is listed twice")
        accounts[account.access_key] = account
    return PlainAcl(patterns, accounts)


def load_plain_acl(path: str | Path) -> PlainAcl:
    """Read and parse ``path``; ``ConfigError`` when it cannot be read or is invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"aclConfigFile {path}: cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"aclConfigFile {path}: is not valid YAML: {exc}") from None
    return parse_plain_acl(data, str(path))
