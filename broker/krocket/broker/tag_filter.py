"""Tag subscription expressions: ``*`` or ``TagA || TagB``, matched by Java hash code in the store."""

from __future__ import annotations

from krocket.common.codes import ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.message import java_string_hash


def parse_tag_expression(expression: str | None) -> set[int] | None:
    """Tag hash codes of the expression, ``None`` for "every message"."""
    if expression is None:
        return None
    expression = expression.strip()
    if expression in ("", "*"):
        return None
    tags = [t.strip() for t in expression.split("||")]
    if any(not t for t in tags):
        raise KrocketError(
            f"subscription expression {expression!r} has an empty tag", ResponseCode.SUBSCRIPTION_PARSE_FAILED
        )
    return {java_string_hash(t) for t in tags}
