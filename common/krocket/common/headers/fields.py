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


@dataclass(frozen=True, slots=True)
class HeaderCodec:
    """A header class's fields, laid out for its decode loop."""

    specs: tuple[FieldSpec, ...]
    steps: tuple[tuple[str, type, bool, object], ...]  # (wire, kind, required, default) of each field
    attrs: tuple[str, ...]
    keyword_only: bool  # the class takes its fields by keyword only


def encode_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _value_kind(hint: Any) -> type:
    """str, int or bool, from ``T`` or ``T | None``."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if hint not in (str, int, bool):
        raise TypeError(f"a header field is a str, int or bool, not {hint!r}")
    return typing.cast(type, hint)


_CODECS: dict[type, HeaderCodec] = {}


def header_codec(cls: type) -> HeaderCodec:
    codec = _CODECS.get(cls)
    if codec is None:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        specs = tuple(
            FieldSpec(
                f.name,
                f.metadata.get(WIRE_NAME) or camel_case(f.name),
                _value_kind(hints[f.name]),
                f.default is dataclasses.MISSING,
                None if f.default is dataclasses.MISSING else f.default,
            )
            for f in fields
        )
        codec = _CODECS[cls] = HeaderCodec(
            specs,
            tuple((s.wire, s.kind, s.required, s.default) for s in specs),
            tuple(s.attr for s in specs),
            any(f.kw_only for f in fields),
        )
    return codec


class RequestHeader:
    """Base of the header dataclasses (the cold ones: read and written field by field)."""

    __slots__ = ()

    # The name server's rule: a required field that is empty counts as missing.
    EMPTY_IS_MISSING: ClassVar[bool] = False

    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for spec in header_codec(type(self)).specs:
            value = getattr(self, spec.attr)
            if value is not None:
                out[spec.wire] = encode_value(value)
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Self:
        """Decode as RocketMQ's servers read extFields: a missing (or, for an integer, empty) field takes
        its default or, when it has none, raises ``HeaderError``."""
        return decode_fields(cls, fields)


H = typing.TypeVar("H", bound=RequestHeader)


def decode_fields(cls: type[H], fields: Mapping[str, str]) -> H:
    """``cls.from_fields`` field by field (also the precise error path of the straight-line decoders)."""
    codec = header_codec(cls)
    empty_is_missing = cls.EMPTY_IS_MISSING
    get = fields.get
    values: list[object] = []
    for wire, kind, required, default in codec.steps:
        raw = get(wire)
        if raw is None or (raw == "" and (kind is int or (required and empty_is_missing))):
            if required:
                raise missing_int_field(wire) if kind is int else missing_field(wire)
            values.append(default)
        elif kind is str:
            values.append(raw)
        elif kind is int:
            values.append(parse_int(wire, raw))
        else:
            values.append(raw.lower() in TRUE_WORDS)
    make: Any = cls
    if codec.keyword_only:
        return typing.cast(H, make(**dict(zip(codec.attrs, values, strict=True))))
    return typing.cast(H, make(*values))


def wire_names(cls: type[RequestHeader]) -> tuple[str, ...]:
    """The wire names of ``cls``'s fields, in declaration order."""
    return tuple(spec.wire for spec in header_codec(cls).specs)
