"""Remoting front end of the broker: request code -> processor, thin over ``BrokerService``."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from krocket.broker.acl import check_request
from krocket.broker.processors.admin import (
    process_all_consumer_offset,
    process_all_topic_config,
    process_create_topic,
    process_create_topic_list,
    process_delete_topic,
    process_get_topic_config,
    process_query_message,
    process_runtime_info,
    process_view_message,
)
from krocket.broker.processors.client import (
    process_consumer_list,
    process_heartbeat,
    process_unregister_client,
)
from krocket.broker.processors.end_transaction import process_end_transaction
from krocket.broker.processors.groups import (
    process_all_groups,
    process_consume_stats,
    process_consumer_connections,
    process_delete_group,
    process_reset_offset,
    process_update_group,
)
from krocket.broker.processors.inspect import INSPECT_PROCESSORS
from krocket.broker.processors.locks import process_lock_batch, process_unlock_batch
from krocket.broker.processors.offsets import (
    process_earliest_time,
    process_max_offset,
    process_min_offset,
    process_query_consumer_offset,
    process_search_offset,
    process_update_consumer_offset,
)
from krocket.broker.processors.pull import process_pull
from krocket.broker.processors.send import process_send
from krocket.broker.processors.send_back import process_send_back
from krocket.broker.schedule.processor import process_all_delay_offset
from krocket.broker.service import BrokerService
from krocket.common.acl import AclFile
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import NoPermissionError
from krocket.common.metrics import LabelKey, Metrics, request_label
from krocket.common.remoting import Connection, RemotingCommand
from krocket.common.remoting.limits import LogLimiter

log = logging.getLogger(__name__)

REQUESTS = "broker_requests_total"
ACL_DENIED = "broker_acl_denied_total"
SEND_LATENCY = "broker_send_latency_seconds"
PULL_LATENCY = "broker_pull_latency_seconds"
SEND_CODES = (RequestCode.SEND_MESSAGE, RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_BATCH_MESSAGE)

# A processor answers now, later (an awaitable, run as a task) or, returning None, not now: the send processor
# parks its reply (``BrokerService.parking``), written once the disk or a slave has the message.
Processor = Callable[[BrokerService, Connection, RemotingCommand], RemotingCommand | Awaitable[RemotingCommand] | None]
# A processor bound to the service: what the remoting server calls per request.
BrokerHandler = Callable[[Connection, RemotingCommand], RemotingCommand | Awaitable[RemotingCommand] | None]

PROCESSORS: dict[int, Processor] = {
    RequestCode.SEND_MESSAGE: process_send,
    RequestCode.SEND_MESSAGE_V2: process_send,
    RequestCode.SEND_BATCH_MESSAGE: process_send,
    RequestCode.CONSUMER_SEND_MSG_BACK: process_send_back,
    RequestCode.PULL_MESSAGE: process_pull,
    RequestCode.HEART_BEAT: process_heartbeat,
    RequestCode.UNREGISTER_CLIENT: process_unregister_client,
    RequestCode.GET_CONSUMER_LIST_BY_GROUP: process_consumer_list,
    RequestCode.QUERY_CONSUMER_OFFSET: process_query_consumer_offset,
    RequestCode.UPDATE_CONSUMER_OFFSET: process_update_consumer_offset,
    RequestCode.GET_MAX_OFFSET: process_max_offset,
    RequestCode.GET_MIN_OFFSET: process_min_offset,
    RequestCode.SEARCH_OFFSET_BY_TIMESTAMP: process_search_offset,
    RequestCode.GET_EARLIEST_MSG_STORETIME: process_earliest_time,
    RequestCode.UPDATE_AND_CREATE_TOPIC: process_create_topic,
    RequestCode.UPDATE_AND_CREATE_TOPIC_LIST: process_create_topic_list,
    RequestCode.DELETE_TOPIC_IN_BROKER: process_delete_topic,
    RequestCode.GET_ALL_TOPIC_CONFIG: process_all_topic_config,
    RequestCode.GET_TOPIC_CONFIG: process_get_topic_config,
    RequestCode.GET_ALL_CONSUMER_OFFSET: process_all_consumer_offset,
    RequestCode.GET_ALL_DELAY_OFFSET: process_all_delay_offset,
    RequestCode.GET_BROKER_RUNTIME_INFO: process_runtime_info,
    RequestCode.VIEW_MESSAGE_BY_ID: process_view_message,
    RequestCode.QUERY_MESSAGE: process_query_message,
    RequestCode.END_TRANSACTION: process_end_transaction,
    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: process_update_group,
    RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: process_all_groups,
    RequestCode.DELETE_SUBSCRIPTIONGROUP: process_delete_group,
    RequestCode.GET_CONSUME_STATS: process_consume_stats,
    RequestCode.GET_CONSUMER_CONNECTION_LIST: process_consumer_connections,
    RequestCode.INVOKE_BROKER_TO_RESET_OFFSET: process_reset_offset,
    RequestCode.LOCK_BATCH_MQ: process_lock_batch,
    RequestCode.UNLOCK_BATCH_MQ: process_unlock_batch,
    **INSPECT_PROCESSORS,  # mqadmin's inspection codes; its GET_BROKER_RUNTIME_INFO adds the traffic rates
}


def make_handler(service: BrokerService, metrics: Metrics, acl: AclFile | None = None) -> BrokerHandler:
    """The remoting handler: a processor answers at once (sync), returns an awaitable (long polls, a send that
    created its topic) that the transport runs as a task, or None (a send's reply parked until the disk or a
    slave has it). With ``acl``, every request is checked against its current rules first
    (``krocket.broker.acl``); without, nothing is added to the path."""
    requests = metrics.counter(REQUESTS, "Remoting requests served, by request code and name").values
    label_of: dict[int, LabelKey] = {}
    # Sends and pulls answered at once: from the decoded request to its reply (parked acks and long polls are not
    # timed: their wait is the disk's, a slave's or the poll's).
    send_latency = metrics.histogram(SEND_LATENCY, "Sends answered at once, from the decoded request to the reply")
    pull_latency = metrics.histogram(PULL_LATENCY, "Pulls answered at once, from the decoded request to the reply")
    timed = {int(code): send_latency for code in SEND_CODES}
    timed[int(RequestCode.PULL_MESSAGE)] = pull_latency
    clock = time.perf_counter

    def handle(conn: Connection, cmd: RemotingCommand) -> RemotingCommand | Awaitable[RemotingCommand] | None:
        code = cmd.code
        processor = PROCESSORS.get(code)
        key = label_of.get(code)
        if key is None:
            key = label_of[code] = request_label(code)
        requests[key] = requests.get(key, 0.0) + 1
        if processor is None:
            return cmd.response(
                ResponseCode.REQUEST_CODE_NOT_SUPPORTED, f"request code {code} is not supported by this broker"
            )
        # None (a parked send reply) is what the transport's RequestHandler takes as "no reply now"; BrokerHandler
        # says so once server.py's RemotingFrontEnd.handle is annotated with it too.
        latency = timed.get(code)
        if latency is None:
            return processor(service, conn, cmd)
        began = clock()
        reply = processor(service, conn, cmd)
        if isinstance(reply, RemotingCommand):
            latency.observe(clock() - began)
        return reply

    if acl is None:
        return handle
    denied = metrics.counter(ACL_DENIED, "Requests refused by the ACL, by request code and name").values
    refusals = LogLimiter(log)  # one line per 10 s, however many are refused

    def guarded(conn: Connection, cmd: RemotingCommand) -> RemotingCommand | Awaitable[RemotingCommand] | None:
        try:
            check_request(acl.rules, cmd, conn.peer)
        except NoPermissionError as exc:
            key = request_label(cmd.code)
            denied[key] = denied.get(key, 0.0) + 1
            refusals.warning("acl", "refused request code %d from %s: %s", cmd.code, conn.peer, exc.message)
            return cmd.response(exc.code, exc.message)
        return handle(conn, cmd)

    return guarded
