"""``MessagingService``: thin handlers over the broker's service and this package's pure parts.

Every unary and server-streaming answer carries the protocol's ``Status`` with gRPC status OK (RocketMQ's proxy does
the same); only a call the broker does not implement ends with gRPC UNIMPLEMENTED."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from krocket.broker.grpc.auth import authenticate, require
from krocket.broker.grpc.clients import GrpcClient, GrpcClients
from krocket.broker.grpc.convert import timestamp, to_grpc_message
from krocket.broker.grpc.metadata import CallMetadata, parse_metadata
from krocket.broker.grpc.protocol import definition_pb2 as pb
from krocket.broker.grpc.protocol import service_pb2 as rpc
from krocket.broker.grpc.protocol import service_pb2_grpc as rpc_grpc
from krocket.broker.grpc.receive import (
    assignments,
    change_ms,
    delivered_message,
    invisible_ms,
    long_poll_s,
    tag_codes,
)
from krocket.broker.grpc.route import RouteLookup, message_queues
from krocket.broker.grpc.send import StoreMessage, check_topic, fifo_queue, to_store_message
from krocket.broker.grpc.settings import reply_settings
from krocket.broker.grpc.status import GrpcError, status, status_of
from krocket.broker.pop.handle import ReceiptHandle
from krocket.broker.pop.service import Delivery, PopService
from krocket.broker.service import BrokerService, SendOutcome
from krocket.broker.transaction import half_message
from krocket.common.acl import AclAccount, PlainAcl
from krocket.common.acl.plain_acl import Perm
from krocket.common.errors import KrocketError, ServiceNotAvailableError, TopicNotExistError
from krocket.common.headers.transaction import EndTransactionHeader
from krocket.common.message import PROPERTY_PRODUCER_GROUP, PROPERTY_REAL_TOPIC, MessageExt
from krocket.common.message_id import pack_host
from krocket.common.message_type import accepted_message_types, topic_message_type
from krocket.common.record import SYSFLAG_TRANSACTION_COMMIT, SYSFLAG_TRANSACTION_ROLLBACK, decode_record
from krocket.common.transaction import HALF_TOPIC

log = logging.getLogger(__name__)


def _metadata(context: grpc.aio.ServicerContext) -> CallMetadata:
    return parse_metadata(context.invocation_metadata(), context.peer() or "")


def _born_host(peer: str) -> bytes:
    host, _, port = peer.rpartition(":")
    host = host.strip("[]")
    try:
        return pack_host((host if host and host[0].isdigit() else "127.0.0.1", int(port or 0)))
    except (ValueError, OSError):
        return pack_host(("127.0.0.1", 0))


class MessagingService(rpc_grpc.MessagingServiceServicer):
    """The 5.x protocol on one broker."""

    def __init__(
        self,
        service: BrokerService,
        routes: RouteLookup,
        acl: Callable[[], PlainAcl] | None = None,
        clients: GrpcClients | None = None,
    ) -> None:
        """``acl`` gives the current ACL rules when the ACL is on (they reload with the file)."""
        self._service = service
        self._routes = routes
        self._acl = acl
        self.clients = clients or GrpcClients()
        if service.transactions is not None:
            service.transactions.check_elsewhere = self.check_transaction
        if service.pop is not None:
            service.pop.client_alive = lambda client_id: self.clients.get(client_id) is not None

    # -- clients -------------------------------------------------------------------------------------------
    def _client(self, meta: CallMetadata) -> GrpcClient:
        """The calling client, once it named itself and (ACL on) signed the call."""
        self._account(meta)
        return self.clients.touch(meta.require_client_id(), meta.language, meta.client_version, meta.peer)

    def _account(self, meta: CallMetadata) -> AclAccount | None:
        """The signing account with the ACL on (UNAUTHORIZED when unsigned or wrong); None with it off or for a
        white-listed address."""
        return authenticate(self._acl(), meta) if self._acl is not None else None

    def _accepted_types(self, topic: str) -> frozenset[str]:
        config = self._service.topics.get(topic)
        return accepted_message_types(topic_message_type(config) if config is not None else None)

    # -- QueryRoute ----------------------------------------------------------------------------------------
    async def QueryRoute(self, request: rpc.QueryRouteRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._client(_metadata(context))
            topic = request.topic.name
            check_topic(topic)
            route = await self._routes.route(topic)
            accepted = [pb.MessageType.Value(name) for name in sorted(self._accepted_types(topic))]
            queues = message_queues(request.topic, route, accepted)
            if not queues:
                raise GrpcError(
                    pb.TOPIC_NOT_FOUND, f"no broker group that serves gRPC carries topic {topic} (grpcListenPort)"
                )
        except (GrpcError, KrocketError) as exc:
            return rpc.QueryRouteResponse(status=status_of(exc))
        return rpc.QueryRouteResponse(status=status(), message_queues=queues)

    # -- Heartbeat and termination ------------------------------------------------------------------------
    async def Heartbeat(self, request: rpc.HeartbeatRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._client(_metadata(context))
        except GrpcError as exc:
            return rpc.HeartbeatResponse(status=status_of(exc))
        return rpc.HeartbeatResponse(status=status())

    async def NotifyClientTermination(
        self, request: rpc.NotifyClientTerminationRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            client_id = _metadata(context).require_client_id()
        except GrpcError as exc:
            return rpc.NotifyClientTerminationResponse(status=status_of(exc))
        if self.clients.remove(client_id) is not None:
            released = self._service.pop.client_gone(client_id) if self._service.pop is not None else 0
            log.info("5.x client %s terminated (%d messages it held come back)", client_id, released)
        return rpc.NotifyClientTerminationResponse(status=status())

    # -- Telemetry -----------------------------------------------------------------------------------------
    async def Telemetry(
        self, request_iterator: AsyncIterator[rpc.TelemetryCommand], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpc.TelemetryCommand]:
        """The client's settings in, the broker's settings reply and later commands (transaction check-backs)
        out, until the client closes its side."""
        meta = _metadata(context)
        try:
            client = self._client(meta)
        except GrpcError as exc:
            yield rpc.TelemetryCommand(status=status_of(exc))
            return
        client.streams += 1
        reader = asyncio.ensure_future(self._read_telemetry(client, request_iterator))
        try:
            while True:
                command = asyncio.ensure_future(client.outbound.get())
                done, _ = await asyncio.wait({command, reader}, return_when=asyncio.FIRST_COMPLETED)
                if command in done:
                    yield command.result()
                    continue
                command.cancel()
                break
        finally:
            reader.cancel()
            client.streams -= 1

    async def _read_telemetry(self, client: GrpcClient, commands: AsyncIterator[rpc.TelemetryCommand]) -> None:
        async for command in commands:
            client.last_seen = time.monotonic()
            kind = command.WhichOneof("command")
            if kind == "settings":
                client.push(self._settings_reply(client, command.settings))
            elif kind in ("thread_stack_trace", "verify_message_result"):
                log.info("5.x client %s answered %s (nonce %s)", client.client_id, kind, _nonce(command))
            else:
                log.debug("5.x client %s sent telemetry %s: ignored", client.client_id, kind)

    def _settings_reply(self, client: GrpcClient, settings: pb.Settings) -> rpc.TelemetryCommand:
        if settings.WhichOneof("pub_sub") is None and settings.client_type == pb.CLIENT_TYPE_UNSPECIFIED:
            return rpc.TelemetryCommand(
                status=status(pb.UNRECOGNIZED_CLIENT_TYPE, "settings name neither publishing nor subscription")
            )
        client.settings = settings
        group_name = settings.subscription.group.name if settings.HasField("subscription") else ""
        group = self._service.groups.get(group_name) if group_name else None
        reply = reply_settings(settings, self._service.config.max_message_size, group, self._service.delay_levels)
        if client.settings is not None:
            log.info(
                "5.x client %s (%s %s, %s) settings: %s",
                client.client_id,
                client.language or "?",
                client.version or "?",
                pb.ClientType.Name(settings.client_type),
                group_name or ",".join(client.publishing_topics) or "-",
            )
        return rpc.TelemetryCommand(status=status(), settings=reply)

    # -- SendMessage ---------------------------------------------------------------------------------------
    async def SendMessage(self, request: rpc.SendMessageRequest, context: grpc.aio.ServicerContext) -> Any:
        meta = _metadata(context)
        try:
            self._client(meta)
            if not request.messages:
                raise GrpcError(pb.MESSAGE_CORRUPTED, "the request holds no message")
            topics = {m.topic.name for m in request.messages}
            if len(topics) > 1:
                raise GrpcError(
                    pb.MESSAGE_CORRUPTED, f"one request sends to one topic, not {', '.join(sorted(topics))}"
                )
            require(self._account(meta), topic=request.messages[0].topic.name, perm=Perm.PUB)
        except GrpcError as exc:
            return rpc.SendMessageResponse(status=status_of(exc))
        born_host = _born_host(meta.peer)
        entries = [await self._send_one(m, born_host) for m in request.messages]
        codes = {e.status.code for e in entries}
        if len(codes) == 1:
            top = entries[0].status
        else:
            top = status(pb.MULTIPLE_RESULTS, "the messages were answered differently: see each entry")
        return rpc.SendMessageResponse(status=top, entries=entries)

    async def _send_one(self, msg: pb.Message, born_host: bytes) -> rpc.SendResultEntry:
        service = self._service
        try:
            accepted = self._accepted_types(msg.topic.name)
            stored = to_store_message(msg, service.config.max_message_size, accepted, int(time.time() * 1000))
            outcome = await self._store(stored, born_host)
        except (GrpcError, KrocketError) as exc:
            return rpc.SendResultEntry(status=status_of(exc), message_id=msg.system_properties.message_id)
        if outcome.code:
            failed = KrocketError(outcome.remark or "the send was not stored durably", outcome.code)
            return rpc.SendResultEntry(status=status_of(failed), message_id=stored.message_id)
        return rpc.SendResultEntry(
            status=status(),
            message_id=stored.message_id,
            transaction_id=stored.message_id if stored.is_transaction else "",
            offset=outcome.queue_offset,
        )

    async def _store(self, stored: StoreMessage, born_host: bytes) -> SendOutcome:
        service = self._service
        topic = stored.topic
        config = service.topics.get(topic)
        if config is None:
            raise TopicNotExistError(
                f"topic {topic} does not exist on broker {service.config.broker_name}; create it with "
                "`krocket topic create` (5.x sends do not auto-create topics)"
            )
        queue_id = fifo_queue(stored.message_group, config.write_queue_nums) if stored.message_group else -1
        properties, sys_flag, target = stored.properties, stored.sys_flag, topic
        if stored.is_transaction:
            service.topics.for_send(topic, None, None, max(queue_id, 0))  # writable, or refused as any send
            half = half_message(topic, queue_id, properties, sys_flag)
            target, queue_id, properties, sys_flag = half.topic, half.queue_id, half.properties, half.sys_flag
        wrote = service.store.commitlog.wrote
        pending = service.send(target, queue_id, stored.body, properties, 0, sys_flag, stored.born_timestamp, born_host)
        outcome = await pending if inspect.isawaitable(pending) else pending
        service.traffic.record_put(topic, 1, service.store.commitlog.wrote - wrote)
        return outcome

    # -- consuming ------------------------------------------------------------------------------------------
    def _pop(self) -> PopService:
        if self._service.pop is None:
            raise ServiceNotAvailableError("this broker is a slave: receive from its master")
        return self._service.pop

    async def QueryAssignment(self, request: rpc.QueryAssignmentRequest, context: grpc.aio.ServicerContext) -> Any:
        meta = _metadata(context)
        try:
            self._client(meta)
            topic, group = request.topic.name, request.group.name
            check_topic(topic)
            require(self._account(meta), topic=topic, group=group, perm=Perm.SUB)
            route = await self._routes.route(topic)
            config = self._service.groups.get(group)
            fifo = config is not None and config.consume_message_orderly
            found = assignments(message_queues(request.topic, route, []), fifo)
            if not found:
                raise GrpcError(pb.FORBIDDEN, f"topic {topic} has no readable queue on a broker that serves gRPC")
        except (GrpcError, KrocketError) as exc:
            return rpc.QueryAssignmentResponse(status=status_of(exc))
        return rpc.QueryAssignmentResponse(status=status(), assignments=found)

    async def ReceiveMessage(
        self, request: rpc.ReceiveMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpc.ReceiveMessageResponse]:
        """Pop from all the topic's queues on this broker (the request's queue id only names the broker), long-
        polling until a message comes or the poll time is up: the status first, then the messages."""
        meta = _metadata(context)
        try:
            client = self._client(meta)
            topic, group = request.message_queue.topic.name, request.group.name
            check_topic(topic)
            require(self._account(meta), topic=topic, group=group, perm=Perm.SUB)
            lease_ms, codes = invisible_ms(request), tag_codes(request.filter_expression)
            pop = self._pop()
            deliveries = await self._receive(pop, request, client.client_id, lease_ms, codes, context)
        except (GrpcError, KrocketError) as exc:
            yield rpc.ReceiveMessageResponse(status=status_of(exc))
            return
        if not deliveries:
            yield rpc.ReceiveMessageResponse(status=status(pb.MESSAGE_NOT_FOUND, "no new message"))
            return
        yield rpc.ReceiveMessageResponse(status=status())
        namespace = request.group.resource_namespace
        for delivery in deliveries:
            yield rpc.ReceiveMessageResponse(message=delivered_message(delivery, namespace))
        yield rpc.ReceiveMessageResponse(delivery_timestamp=timestamp(int(time.time() * 1000)))

    async def _receive(
        self,
        pop: PopService,
        request: rpc.ReceiveMessageRequest,
        client_id: str,
        lease_ms: int,
        codes: set[int] | None,
        context: grpc.aio.ServicerContext,
    ) -> list[Delivery]:
        group, topic = request.group.name, request.message_queue.topic.name
        end = time.monotonic() + long_poll_s(request, context.time_remaining())
        while True:
            deliveries = await pop.pop(group, topic, codes, request.batch_size or 32, lease_ms, client_id,
                                       request.auto_renew)  # fmt: skip
            left = end - time.monotonic()
            if deliveries or left <= 0:
                return deliveries
            began = time.monotonic()
            watched = pop.watch_list(group, topic)
            await self._service.polling.wait_any(watched, codes, left, _arrived(self._service, watched))
            if time.monotonic() - began < 0.05:  # woken at once (a FIFO queue still in flight): do not spin
                await asyncio.sleep(min(0.2, max(end - time.monotonic(), 0)))

    def _on_receipt(self, context: grpc.aio.ServicerContext, topic: str, group: str, handle: str) -> ReceiptHandle:
        """Checks of a call on one delivery (a known client, SUB on the topic and group, a master): its handle."""
        meta = _metadata(context)
        self._client(meta)
        require(self._account(meta), topic=topic, group=group, perm=Perm.SUB)
        self._pop()
        return ReceiptHandle.parse(handle)

    async def AckMessage(self, request: rpc.AckMessageRequest, context: grpc.aio.ServicerContext) -> Any:
        meta = _metadata(context)
        try:
            self._client(meta)
            group = request.group.name
            require(self._account(meta), topic=request.topic.name, group=group, perm=Perm.SUB)
            pop = self._pop()
        except (GrpcError, KrocketError) as exc:
            return rpc.AckMessageResponse(status=status_of(exc))
        entries = []
        for entry in request.entries:
            try:
                await pop.ack(group, ReceiptHandle.parse(entry.receipt_handle))
                result = status()
            except (GrpcError, KrocketError) as exc:
                result = status_of(exc)
            entries.append(
                rpc.AckMessageResultEntry(
                    message_id=entry.message_id, receipt_handle=entry.receipt_handle, status=result
                )
            )
        codes = {e.status.code for e in entries}
        if len(codes) <= 1:
            top = entries[0].status if entries else status()
        else:
            top = status(pb.MULTIPLE_RESULTS, "the entries were answered differently: see each entry")
        return rpc.AckMessageResponse(status=top, entries=entries)

    async def ChangeInvisibleDuration(
        self, request: rpc.ChangeInvisibleDurationRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        group = request.group.name
        try:
            handle = self._on_receipt(context, request.topic.name, group, request.receipt_handle)
            renewed = await self._pop().change_invisible(group, handle, change_ms(request.invisible_duration))
        except (GrpcError, KrocketError) as exc:
            return rpc.ChangeInvisibleDurationResponse(status=status_of(exc))
        return rpc.ChangeInvisibleDurationResponse(status=status(), receipt_handle=renewed.encode())

    async def ForwardMessageToDeadLetterQueue(
        self, request: rpc.ForwardMessageToDeadLetterQueueRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        group = request.group.name
        try:
            handle = self._on_receipt(context, request.topic.name, group, request.receipt_handle)
            await self._pop().forward_to_dlq(group, handle)
        except (GrpcError, KrocketError) as exc:
            return rpc.ForwardMessageToDeadLetterQueueResponse(status=status_of(exc))
        log.info("5.x consumer of group %s sent message %s to the DLQ", group, request.message_id)
        return rpc.ForwardMessageToDeadLetterQueueResponse(status=status())

    # -- transactions -------------------------------------------------------------------------------------
    async def EndTransaction(self, request: rpc.EndTransactionRequest, context: grpc.aio.ServicerContext) -> Any:
        """A producer's outcome (its own, or its checker's answer to a check-back) for a half message, found by its
        message id (the transaction id) in the half topic's index: nothing is kept in memory, so it works after
        a broker restart too."""
        meta = _metadata(context)
        try:
            self._client(meta)
            topic = request.topic.name
            require(self._account(meta), topic=topic, perm=Perm.PUB)
            if not request.transaction_id.strip():
                raise GrpcError(pb.INVALID_TRANSACTION_ID, "the transaction id is blank")
            kinds = {pb.COMMIT: SYSFLAG_TRANSACTION_COMMIT, pb.ROLLBACK: SYSFLAG_TRANSACTION_ROLLBACK}
            if request.resolution not in kinds:
                raise GrpcError(pb.BAD_REQUEST, "the resolution must be COMMIT or ROLLBACK")
            transactions = self._service.transactions
            if transactions is None:
                raise ServiceNotAvailableError("this broker is a slave: end transactions at its master")
            half = self._half_message(request.transaction_id, topic)
            header = EndTransactionHeader(
                producer_group=half.properties.get(PROPERTY_PRODUCER_GROUP, topic),
                tran_state_table_offset=half.queue_offset,
                commit_log_offset=half.commit_log_offset,
                commit_or_rollback=kinds[request.resolution],
                from_transaction_check=request.source == pb.SOURCE_SERVER_CHECK,
                msg_id=request.message_id,
                transaction_id=request.transaction_id,
                topic=topic,
            )
            done = transactions.end(header)
        except (GrpcError, KrocketError) as exc:
            return rpc.EndTransactionResponse(status=status_of(exc))
        log.info("5.x transaction %s on %s: %s", request.transaction_id, topic, done)
        return rpc.EndTransactionResponse(status=status())

    def _half_message(self, transaction_id: str, topic: str) -> MessageExt:
        """The newest copy of the half message whose unique key is ``transaction_id`` (a check-back puts copies)."""
        for raw in self._service.store.query_by_key(HALF_TOPIC, transaction_id, max_num=4):
            half = decode_record(raw, decompress=False)
            if half.msg_id == transaction_id and half.properties.get(PROPERTY_REAL_TOPIC) == topic:
                return half
        raise GrpcError(
            pb.INVALID_TRANSACTION_ID, f"no half message {transaction_id} of topic {topic} waits on this broker"
        )

    def check_transaction(self, half: MessageExt, properties: dict[str, str]) -> bool:
        """Ask a live 5.x producer of the half message's topic for its outcome, over its Telemetry stream
        (RecoverOrphanedTransactionCommand); False when none is connected here."""
        topic = properties.get(PROPERTY_REAL_TOPIC, half.topic)
        for client in sorted(self.clients.producers_of(topic), key=lambda c: -c.last_seen):
            message = to_grpc_message(half, topic=topic)
            command = rpc.TelemetryCommand(
                recover_orphaned_transaction_command=rpc.RecoverOrphanedTransactionCommand(
                    message=message, transaction_id=half.msg_id
                )
            )
            if client.push(command):
                log.info("asked 5.x producer %s for the outcome of transaction %s", client.client_id, half.msg_id)
                return True
        return False


def _arrived(service: BrokerService, watched: list[tuple[str, int, int]]) -> Callable[[], bool]:
    def arrived() -> bool:
        return any(service.store.max_offset(t, q) > o for t, q, o in watched)

    return arrived


def _nonce(command: rpc.TelemetryCommand) -> str:
    kind = command.WhichOneof("command")
    value = getattr(command, kind) if kind else None
    return str(getattr(value, "nonce", "")) if value is not None else ""


def _unimplemented_rpc(name: str) -> Callable[..., Awaitable[Any]]:
    async def handler(self: MessagingService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not served by this krocket broker")

    handler.__name__ = name
    return handler


# RPCs RocketMQ's proxy leaves unimplemented, and RecallMessage: gRPC UNIMPLEMENTED.
for _name in (
    "PullMessage",
    "UpdateOffset",
    "GetOffset",
    "QueryOffset",
    "RecallMessage",
    "SyncLiteSubscription",
):
    setattr(MessagingService, _name, _unimplemented_rpc(_name))
