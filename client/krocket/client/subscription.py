"""Tag subscriptions: ``*`` or ``TagA || TagB`` -> SubscriptionData (RocketMQ's FilterAPI)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from krocket.common.errors import KrocketError
from krocket.common.message import MessageExt, java_string_hash
from krocket.common.topic import validate_topic

SUB_ALL = "*"


@dataclass(slots=True)
class SubscriptionData:
    topic: str
    sub_string: str = SUB_ALL
    tags_set: list[str] = field(default_factory=list)
    code_set: list[int] = field(default_factory=list)
    sub_version: int = 0

    @property
    def matches_all(self) -> bool:
        return self.sub_string == SUB_ALL

    def matches(self, msg: MessageExt) -> bool:
        """Client-side re-filter by tag string (tag hash codes collide)."""
        return self.matches_all or (msg.tags is not None and msg.tags in self.tags_set)

    def filter(self, messages: list[MessageExt]) -> list[MessageExt]:
        if self.matches_all:
            return messages
        tags = set(self.tags_set)
        return [m for m in messages if m.tags is not None and m.tags in tags]

    def to_json(self) -> dict[str, Any]:
        return {
            "classFilterMode": False,
            "topic": self.topic,
            "subString": self.sub_string,
            "tagsSet": list(self.tags_set),
            "codeSet": list(self.code_set),
            "subVersion": self.sub_version,
            "expressionType": "TAG",
        }


def build_subscription(topic: str, expression: str | None = SUB_ALL) -> SubscriptionData:
    """Parse a tag expression. Raises ``KrocketError`` for an expression with no tags in it."""
    validate_topic(topic)
    version = int(time.time() * 1000)
    expr = (expression or "").strip()
    if not expr or expr == SUB_ALL:
        return SubscriptionData(topic, SUB_ALL, [], [], version)
    tags: list[str] = []
    for part in expr.split("||"):
        tag = part.strip()
        if tag and tag not in tags:
            tags.append(tag)
    if not tags:
        raise KrocketError(f"tag expression {expression!r} names no tag; use '*' or 'TagA || TagB'")
    return SubscriptionData(topic, expr, tags, [java_string_hash(t) for t in tags], version)
