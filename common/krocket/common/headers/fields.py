"""The mechanism of the typed request headers: a dataclass whose fields are the header's extFields.

A field's wire name is its attribute in camelCase (``consumer_group`` -> ``consumerGroup``) unless
``wire_name`` overrides it (``clientID``). ``to_fields`` writes what goes on the wire (ints as decimal strings,
booleans as "true"/"false", ``None`` left out), in declaration order; ``from_fields`` reads a request's
extFields, filling defaults and raising ``HeaderError`` for a missing field or an integer that is none.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from krocket.common.errors import HeaderError

WIRE_NAME = "wire_name"

# What a boolean field reads as true (RocketMQ's C++ client sends "1" and "0").
TRUE_WORDS = frozenset(("true", "1"))


def wire_name(name: str) -> dict[str, str]:
    """Field metadata naming the field on the wire: ``field(default="", metadata=wire_name("clientID"))``."""
    return {WIRE_NAME: name}


def camel_case(attr: str) -> str:
    head, *rest = attr.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def missing_field(name: str) -> HeaderError:
    return HeaderError(f"request header lacks the field {name!r}", name)


def missing_int_field(name: str) -> HeaderError:
    return HeaderError(f"request header lacks the integer field {name!r}", name)


def not_an_int(name: str, value: str) -> HeaderError:
    return HeaderError(f"request header field {name!r} must be an integer, got {value!r}", name, value)


def parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise not_an_int(name, value) from None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One header field: its attribute, wire name, value type (str, int or bool) and default."""

    attr: str
    wire: str
    kind: type
    required: bool
    default: object

    def decode(self, raw: str | None) -> object:
        kind = self.kind
        if kind is int:
            if raw is None or raw == "":
                if self.required:
                    raise missing_int_field(self.wire)
                return self.default
            return parse_int(self.wire, raw)
        if raw is None:
            if self.required:
                raise missing_field(self.wire)
            return self.default
        if kind is bool:
            return raw.lower() in TRUE_WORDS
        return raw


def encode_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SPECS: dict[type, tuple[FieldSpec, ...]] = {}


def _value_kind(hint: Any) -> type:
    """str, int or bool, from ``T`` or ``T | None``."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if hint not in (str, int, bool):
        raise TypeError(f"a header field is a str, int or bool, not {hint!r}")
    return typing.cast(type, hint)


def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    specs = _SPECS.get(cls)
    if specs is None:
        hints = typing.get_type_hints(cls)
        specs = tuple(
            FieldSpec(
                f.name,
                f.metadata.get(WIRE_NAME) or camel_case(f.name),
                _value_kind(hints[f.name]),
                f.default is dataclasses.MISSING,
                None if f.default is dataclasses.MISSING else f.default,
            )
            for f in dataclasses.fields(cls)
        )
        _SPECS[cls] = specs
    return specs


class RequestHeader:
    """Base of the header dataclasses (the cold ones: read and written field by field)."""

    __slots__ = ()

    # The name server's rule: a required field that is empty counts as missing.
    EMPTY_IS_MISSING: ClassVar[bool] = False

    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for spec in field_specs(type(self)):
            value = getattr(self, spec.attr)
            if value is not None:
                out[spec.wire] = encode_value(value)
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Self:
        empty_is_missing = cls.EMPTY_IS_MISSING
        values: dict[str, object] = {}
        for spec in field_specs(cls):
            raw = fields.get(spec.wire)
            if empty_is_missing and raw == "" and spec.required:
                raw = None
            values[spec.attr] = spec.decode(raw)
        return typing.cast(Self, typing.cast(Any, cls)(**values))
