"""Parse Kubernetes resource quantities ("10Gi", "500M", "1.5T") into numbers for comparisons."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX: dict[str, int | Decimal] = {
    "": 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "m": Decimal("0.001"),
}
_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Return the quantity as a Decimal number of base units; raise ValueError when malformed."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = _RE.match(value.strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2)])
    except InvalidOperation as e:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from e


_DECIMAL_SUFFIXES = ((18, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k"), (0, ""), (-3, "m"))
_BINARY_SUFFIXES = ((60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki"))


def _decimal_form(number: Decimal, exponent_style: bool) -> str:
    if number == 0:
        return "0"
    for exp, suffix in _DECIMAL_SUFFIXES:
        mantissa = number / (Decimal(10) ** exp)
        if mantissa == mantissa.to_integral_value():
            if exponent_style:
                return f"{int(mantissa)}e{exp}" if exp else str(int(mantissa))
            return f"{int(mantissa)}{suffix}"
    # finer than a milli-unit: Kubernetes rounds up to the next milli-unit
    milli = (number * 1000).to_integral_value(rounding="ROUND_CEILING")
    return f"{int(milli)}m"


def canonical_quantity(value: str | int | float) -> str:
    """The form the API server stores a quantity in: its suffix family kept (binary `Ki`.., exponent `e`, decimal),
    the largest suffix that loses nothing (`1000m` -> `1`, `4096Mi` -> `4Gi`, `1.5Gi` -> `1536Mi`, `0.5` -> `500m`);
    raise ValueError when malformed."""
    number = parse_quantity(value)
    text = str(value).strip()
    m = _RE.match(text)
    suffix = m.group(2) if m else ""
    exponent_style = bool(m and re.search(r"[eE]", m.group(1)))
    if suffix.endswith("i") and number == number.to_integral_value() and abs(number) >= 1024:
        whole = int(number)
        for bits, binary in _BINARY_SUFFIXES:
            if whole % (1 << bits) == 0:
                return f"{whole >> bits}{binary}"
    return _decimal_form(number, exponent_style)
