"""What each request code needs under the ACL: one table, every served code in it, the rest admin-only.

``SIGNED``: a valid signature and nothing more (heartbeats, route-ish and queue-offset reads every client
makes). ``ADMIN``: an admin account (topic create/update/delete, broker config, subscription groups, the
whole offsets table, anything else that changes state, and any code not in the table). A function: the topic
and group permissions the request needs, read from its header. A topic named ``%RETRY%<group>`` is the
group's: it needs the permission on the group. Producer groups are not checked.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from krocket.common.acl.plain_acl import Perm
from krocket.common.codes import RequestCode
from krocket.common.errors import MessageIllegalError
from krocket.common.headers import SendMessageHeader
from krocket.common.lock_body import LockBatchRequest
from krocket.common.remoting import RemotingCommand
from krocket.common.topic import RETRY_GROUP_PREFIX
from krocket.common.transaction import HALF_TOPIC


class Access(enum.Enum):
    SIGNED = "signed"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Need:
    """``perm`` on a topic (``group=False``) or a consumer group (``group=True``)."""

    name: str
    perm: Perm
    group: bool = False

    def describe(self) -> str:
        return f"{self.perm.name} on {'group' if self.group else 'topic'} {self.name}"


NeedsOf = Callable[[RemotingCommand], tuple[Need, ...]]
Rule = Access | NeedsOf


def _topic_need(topic: str, perm: Perm) -> Need:
    """A %RETRY% topic belongs to its group: using it needs the permission on the group."""
    if topic.startswith(RETRY_GROUP_PREFIX):
        return Need(topic[len(RETRY_GROUP_PREFIX) :], perm, group=True)
    return Need(topic, perm)


def _field(fields: Mapping[str, str], name: str) -> str:
    return fields.get(name) or ""


def _send(cmd: RemotingCommand) -> tuple[Need, ...]:
    """PUB on the topic (a new topic through TBW102 included); a send to a retry topic needs SUB on its group."""
    topic = SendMessageHeader.from_fields(cmd.ext_fields).topic
    return (_topic_need(topic, Perm.SUB if topic.startswith(RETRY_GROUP_PREFIX) else Perm.PUB),)


def _topic_and_group(cmd: RemotingCommand) -> tuple[Need, ...]:
    fields = cmd.ext_fields
    return (_topic_need(_field(fields, "topic"), Perm.SUB), Need(_field(fields, "consumerGroup"), Perm.SUB, True))


def _topic_sub(cmd: RemotingCommand) -> tuple[Need, ...]:
    return (_topic_need(_field(cmd.ext_fields, "topic"), Perm.SUB),)


def _consumer_group(cmd: RemotingCommand) -> tuple[Need, ...]:
    return (Need(_field(cmd.ext_fields, "consumerGroup"), Perm.SUB, True),)


def _send_back(cmd: RemotingCommand) -> tuple[Need, ...]:
    return (Need(_field(cmd.ext_fields, "group"), Perm.SUB, True),)


def _end_transaction(cmd: RemotingCommand) -> tuple[Need, ...]:
    """PUB on the message's topic, which the header names (the broker refuses an outcome whose topic is not the
    half message's). A header without it (RocketMQ 4.x clients) needs PUB on the half topic itself, which an
    admin has and an account can be granted."""
    topic = _field(cmd.ext_fields, "topic") or HALF_TOPIC
    return (_topic_need(topic, Perm.PUB),)


def _group_in_body(cmd: RemotingCommand) -> tuple[Need, ...]:
    """LOCK_BATCH_MQ / UNLOCK_BATCH_MQ carry the group in their JSON body, read as the lock processor reads it
    (leniently); a body it cannot read needs SUB on the empty group name, which nobody has."""
    try:
        group = LockBatchRequest.from_body(cmd.body).consumer_group
    except (MessageIllegalError, ValueError, RecursionError):
        group = ""
    return (Need(group, Perm.SUB, True),)


def _heartbeat(cmd: RemotingCommand) -> tuple[Need, ...]:
    """SUB on each consumer group a heartbeat names and on each topic it subscribes (RocketMQ's rule);
    a producer's heartbeat needs a valid signature only. A body that is not JSON is left to the processor."""
    try:
        body = json.loads(cmd.body or b"{}")
    except (ValueError, RecursionError):
        return ()
    consumers = body.get("consumerDataSet") if isinstance(body, dict) else None
    needs: list[Need] = []
    for consumer in consumers if isinstance(consumers, list) else ():
        if not isinstance(consumer, dict):
            continue
        needs.append(Need(str(consumer.get("groupName") or ""), Perm.SUB, True))
        subscriptions = consumer.get("subscriptionDataSet")
        for sub in subscriptions if isinstance(subscriptions, list) else ():
            if isinstance(sub, dict) and sub.get("topic"):
                needs.append(_topic_need(str(sub["topic"]), Perm.SUB))
    return tuple(dict.fromkeys(needs))


RULES: dict[int, Rule] = {
    RequestCode.SEND_MESSAGE: _send,
    RequestCode.SEND_MESSAGE_V2: _send,
    RequestCode.SEND_BATCH_MESSAGE: _send,
    RequestCode.CONSUMER_SEND_MSG_BACK: _send_back,
    RequestCode.PULL_MESSAGE: _topic_and_group,
    RequestCode.QUERY_CONSUMER_OFFSET: _topic_and_group,
    RequestCode.UPDATE_CONSUMER_OFFSET: _topic_and_group,  # another group's offsets: SUB on it (or admin)
    RequestCode.GET_CONSUMER_LIST_BY_GROUP: _consumer_group,
    RequestCode.GET_CONSUME_STATS: _consumer_group,
    RequestCode.GET_CONSUMER_CONNECTION_LIST: _consumer_group,
    RequestCode.LOCK_BATCH_MQ: _group_in_body,
    RequestCode.UNLOCK_BATCH_MQ: _group_in_body,
    RequestCode.QUERY_MESSAGE: _topic_sub,
    RequestCode.HEART_BEAT: _heartbeat,
    RequestCode.UNREGISTER_CLIENT: Access.SIGNED,
    RequestCode.GET_MAX_OFFSET: Access.SIGNED,
    RequestCode.GET_MIN_OFFSET: Access.SIGNED,
    RequestCode.SEARCH_OFFSET_BY_TIMESTAMP: Access.SIGNED,
    RequestCode.GET_EARLIEST_MSG_STORETIME: Access.SIGNED,
    RequestCode.GET_TOPIC_CONFIG: Access.SIGNED,
    RequestCode.GET_ALL_TOPIC_CONFIG: Access.SIGNED,
    RequestCode.GET_BROKER_RUNTIME_INFO: Access.SIGNED,
    RequestCode.GET_TOPIC_STATS_INFO: Access.SIGNED,  # queue offsets and times, as GET_MAX_OFFSET
    RequestCode.UPDATE_AND_CREATE_TOPIC: Access.ADMIN,
    RequestCode.UPDATE_AND_CREATE_TOPIC_LIST: Access.ADMIN,
    RequestCode.DELETE_TOPIC_IN_BROKER: Access.ADMIN,
    RequestCode.UPDATE_BROKER_CONFIG: Access.ADMIN,
    RequestCode.GET_BROKER_CONFIG: Access.ADMIN,
    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: Access.ADMIN,
    RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: Access.ADMIN,
    RequestCode.DELETE_SUBSCRIPTIONGROUP: Access.ADMIN,
    RequestCode.INVOKE_BROKER_TO_RESET_OFFSET: Access.ADMIN,
    RequestCode.GET_ALL_CONSUMER_OFFSET: Access.ADMIN,  # every group's offsets: what slaves copy
    RequestCode.GET_ALL_DELAY_OFFSET: Access.ADMIN,  # the delivery progress of delayed messages: slaves copy it
    RequestCode.VIEW_MESSAGE_BY_ID: Access.ADMIN,  # any message of any topic, by its offset
    RequestCode.GET_PRODUCER_CONNECTION_LIST: Access.ADMIN,  # clients' addresses of any producer group
    RequestCode.GET_BROKER_CONSUME_STATS: Access.ADMIN,  # every topic's and group's traffic and lag
    RequestCode.END_TRANSACTION: _end_transaction,
}


def rule_of(code: int) -> Rule:
    """The rule for ``code``; a code missing from the table is admin-only (fail closed)."""
    return RULES.get(code, Access.ADMIN)
