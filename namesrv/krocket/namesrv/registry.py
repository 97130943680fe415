"""The route registry: which brokers are alive and which topics' queues they carry (RouteInfoManager).

Pure logic, no I/O; the clock is injectable so expiry can be tested with a fake one. Tables, as in
RocketMQ's ``RouteInfoManager``:

- live brokers by address (``BrokerLiveInfo``: identity, HA address, last registration, connection id);
- ``brokerAddrTable``: brokerName -> BrokerData (cluster, brokerName, brokerId -> address);
- ``clusterAddrTable``: cluster -> brokerNames;
- ``topicQueueTable``: topic -> brokerName -> QueueData, defined by the group's master (brokerId 0) only, with its
  index brokerName -> topics, so that nothing but a full registration or a listing walks every topic.

A master's full registration is the whole truth about its group's topics (one it does not name is gone from the
group); a topic delta (``apply_delta``) changes only the topics it names; ``query_data_version`` tells a broker
whether what this name server holds is what the broker has, and keeps it alive, at the cost of a comparison.

Each live broker also keeps the gRPC endpoint it registered (``krocket.common.register_body``); routes and the
cluster info give each group's as BrokerData's ``grpcAddrs``, for the brokers that serve gRPC.

A group keeps its BrokerData while any of its brokers is registered, and its topics' queue data stays
with it, so consumers can read from a slave when the master is gone; the queue data goes with the last
broker of the group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from krocket.common.codes import PERM_WRITE, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.register_body import DataVersion, TopicDelta
from krocket.common.route import MASTER_ID, BrokerData, QueueData, TopicRouteData
from krocket.common.topic import TopicConfig

BROKER_EXPIRY_SECONDS = 120.0

Clock = Callable[[], float]


class RegistrationConflictError(KrocketError):
    """A REGISTER_BROKER for a broker name and id that a live registration from elsewhere holds."""

    code = ResponseCode.NO_PERMISSION

    def __init__(self, registration: Registration, holder: BrokerLiveInfo) -> None:
        self.registration = registration
        self.holder = holder
        super().__init__(
            f"{registration.broker_name} id {registration.broker_id} is held by the live broker {holder.addr}"
            f" (connected from {holder.peer_host or '?'}); registration as {registration.addr}"
            f" from {registration.peer_host or '?'} refused"
        )


@dataclass(slots=True)
class BrokerLiveInfo:
    """One registered broker process, keyed by its address."""

    cluster: str
    broker_name: str
    broker_id: int
    addr: str
    ha_server_addr: str
    last_update: float
    conn_id: int | None = None
    data_version: dict[str, Any] | None = None
    peer_host: str | None = None  # the host the registration's connection came from
    http_url: str = ""  # the broker's HTTP admin API (krocket.common.register_body), "" when it named none
    grpc_addr: str = ""  # the broker's 5.x gRPC endpoint (krocket.common.register_body), "" when it serves none


@dataclass(slots=True)
class Registration:
    """One REGISTER_BROKER request, already parsed."""

    cluster: str
    broker_name: str
    broker_id: int
    addr: str
    ha_server_addr: str = ""
    topic_configs: Mapping[str, TopicConfig] | None = None
    data_version: dict[str, Any] | None = None
    conn_id: int | None = None
    peer_host: str | None = None
    http_url: str = ""
    grpc_addr: str = ""


@dataclass(slots=True)
class RegisterResult:
    """What REGISTER_BROKER answers, and what happened (for logging only changes)."""

    master_addr: str | None = None
    ha_server_addr: str | None = None
    first: bool = False
    changed: bool = False
    topics_updated: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DeltaResult:
    """What a topic delta did: whether the broker is known here (else it must register in full), whether this
    name server now holds the delta's data version (False: it missed a change, a full registration follows) and
    the topics whose queue data changed."""

    known: bool
    caught_up: bool = False
    topics_updated: list[str] = field(default_factory=list)


class UnregistrationRefusedError(KrocketError):
    """An UNREGISTER_BROKER for a live broker that arrives over another connection than its registration."""

    code = ResponseCode.NO_PERMISSION


def _from_elsewhere(reg: Registration, holder: BrokerLiveInfo) -> bool:
    """Whether ``reg`` comes from another process than ``holder``: not over the holder's connection, and
    naming another address or coming from another host."""
    if holder.conn_id is not None and holder.conn_id == reg.conn_id:
        return False
    if holder.addr != reg.addr:
        return True
    return holder.peer_host is not None and reg.peer_host is not None and holder.peer_host != reg.peer_host


class RouteRegistry:
    """Broker registrations and topic routes. Not thread-safe; meant for one asyncio loop."""

    def __init__(self, clock: Clock = time.monotonic, expiry: float = BROKER_EXPIRY_SECONDS) -> None:
        self._clock = clock
        self.expiry = expiry
        self._live: dict[str, BrokerLiveInfo] = {}
        self._broker_addr_table: dict[str, BrokerData] = {}
        self._cluster_addr_table: dict[str, set[str]] = {}
        self._topic_queue_table: dict[str, dict[str, QueueData]] = {}
        self._topics_of_group: dict[str, set[str]] = {}  # brokerName -> the topics it has queue data for

    # -- registration -------------------------------------------------------------------------------
    def register(self, reg: Registration, now: float | None = None) -> RegisterResult:
        """Register or refresh one broker. Only a master's topic configs define queue data.

        Raises ``RegistrationConflictError`` when the broker name and id are held by a live registration from
        another address (see ``holder_conflict``): no one takes over a live broker's routes."""
        now = self._clock() if now is None else now
        holder = self.holder_conflict(reg, now)
        if holder is not None:
            raise RegistrationConflictError(reg, holder)
        result = RegisterResult()
        old = self._live.get(reg.addr)
        if old is not None and (old.cluster, old.broker_name, old.broker_id) != (
            reg.cluster,
            reg.broker_name,
            reg.broker_id,
        ):
            # The same process comes back under another identity (e.g. a slave switched to master):
            # forget the old identity first, keeping the group if it is the same one.
            self._detach(old, prune=old.broker_name != reg.broker_name)
            old = None
        first = old is None

        self._cluster_addr_table.setdefault(reg.cluster, set()).add(reg.broker_name)
        broker_data = self._broker_addr_table.get(reg.broker_name)
        if broker_data is None:
            broker_data = BrokerData(reg.cluster, reg.broker_name)
            self._broker_addr_table[reg.broker_name] = broker_data
        elif broker_data.cluster != reg.cluster:
            self._move_group(broker_data, reg.cluster)
        displaced = broker_data.broker_addrs.get(reg.broker_id)
        if displaced is not None and displaced != reg.addr:
            # Another process took over this brokerId (a restarted pod with a new address).
            self._live.pop(displaced, None)
            result.changed = True
        broker_data.broker_addrs[reg.broker_id] = reg.addr

        version_changed = old is None or old.data_version != reg.data_version or reg.data_version is None
        if reg.broker_id == MASTER_ID and reg.topic_configs is not None and (first or version_changed):
            result.topics_updated = self._apply_topic_configs(reg.broker_name, reg.topic_configs.values())
            gone = self._topics_of_group.get(reg.broker_name, set()) - reg.topic_configs.keys()
            result.topics_updated += self._remove_topics(reg.broker_name, gone)

        if old is not None and (old.ha_server_addr, old.grpc_addr) != (reg.ha_server_addr, reg.grpc_addr):
            result.changed = True
        self._live[reg.addr] = BrokerLiveInfo(
            reg.cluster,
            reg.broker_name,
            reg.broker_id,
            reg.addr,
            reg.ha_server_addr,
            now,
            reg.conn_id,
            reg.data_version,
            reg.peer_host,
            reg.http_url,
            reg.grpc_addr,
        )

        master_addr = broker_data.broker_addrs.get(MASTER_ID)
        if reg.broker_id != MASTER_ID and master_addr is not None:
            master = self._live.get(master_addr)
            if master is not None:
                result.master_addr = master_addr
                result.ha_server_addr = master.ha_server_addr
        result.first = first
        result.changed = result.changed or first or bool(result.topics_updated)
        return result

    def holder_conflict(self, reg: Registration, now: float | None = None) -> BrokerLiveInfo | None:
        """The live registration that holds ``reg``'s broker name and id, when ``reg`` comes from elsewhere.

        A holder is live while it is registered within the expiry; one that registered over a connection is
        removed when that connection closes (``remove_by_connection``), so a restarted broker gets its slot back
        as soon as the old process's connection is gone. ``reg`` comes from elsewhere when it names another
        broker address, or the same address over another connection from another host. The holder's own
        connection, and a reconnect from the holder's host, may re-register."""
        now = self._clock() if now is None else now
        broker_data = self._broker_addr_table.get(reg.broker_name)
        held_by = broker_data.broker_addrs.get(reg.broker_id) if broker_data is not None else None
        holder = self._live.get(held_by) if held_by is not None else None
        if holder is not None and self._is_live(holder, now) and _from_elsewhere(reg, holder):
            return holder
        # The same address under another identity (a slave becoming master) must be that process too.
        at_addr = self._live.get(reg.addr)
        if (
            at_addr is not None
            and (at_addr.broker_name, at_addr.broker_id) != (reg.broker_name, reg.broker_id)
            and self._is_live(at_addr, now)
            and _from_elsewhere(reg, at_addr)
        ):
            return at_addr
        return None

    def _is_live(self, info: BrokerLiveInfo, now: float) -> bool:
        return now - info.last_update <= self.expiry

    def _apply_topic_configs(self, broker_name: str, configs: Iterable[TopicConfig]) -> list[str]:
        """Create or update the queue data of ``broker_name``; returns the topics that changed."""
        changed: list[str] = []
        owned = self._topics_of_group.setdefault(broker_name, set())
        for config in configs:
            queue = QueueData(
                broker_name, config.read_queue_nums, config.write_queue_nums, config.perm, config.topic_sys_flag
            )
            by_broker = self._topic_queue_table.setdefault(config.topic_name, {})
            if by_broker.get(broker_name) != queue:
                by_broker[broker_name] = queue
                owned.add(config.topic_name)
                changed.append(config.topic_name)
        return changed

    def _remove_topics(self, broker_name: str, topics: Iterable[str]) -> list[str]:
        """Drop ``broker_name``'s queue data of ``topics`` (a topic no group carries is forgotten); the removed."""
        owned = self._topics_of_group.get(broker_name, set())
        removed: list[str] = []
        for topic in topics:
            by_broker = self._topic_queue_table.get(topic)
            if by_broker is None or by_broker.pop(broker_name, None) is None:
                continue
            removed.append(topic)
            owned.discard(topic)
            if not by_broker:
                del self._topic_queue_table[topic]
        if not owned:
            self._topics_of_group.pop(broker_name, None)
        return removed

    # -- deltas and version checks ----------------------------------------------------------------------------
    def _live_holder(self, addr: str, broker_name: str, broker_id: int, conn_id: int | None) -> BrokerLiveInfo | None:
        """The live registration of ``addr`` if it is that broker, over that connection (when it registered
        over one): only it may change or refresh what it registered."""
        info = self._live.get(addr)
        if info is None or (info.broker_name, info.broker_id) != (broker_name, broker_id):
            return None
        if info.conn_id is not None and conn_id is not None and info.conn_id != conn_id:
            return None
        return info if self._is_live(info, self._clock()) else None

    def apply_delta(
        self, broker_name: str, broker_id: int, addr: str, delta: TopicDelta, conn_id: int | None = None
    ) -> DeltaResult:
        """REGISTER_TOPIC_IN_NAMESRV: apply a registered broker's topic changes (a master's only define queue
        data); it holds the delta's version after only if it held the delta's starting version."""
        info = self._live_holder(addr, broker_name, broker_id, conn_id)
        if info is None:
            return DeltaResult(known=False)
        info.last_update = self._clock()
        result = DeltaResult(known=True)
        if broker_id == MASTER_ID:
            result.topics_updated = self._apply_topic_configs(broker_name, delta.upserted.values())
            result.topics_updated += self._remove_topics(broker_name, delta.deleted)
        if info.data_version == delta.from_version:
            info.data_version = delta.to_version
            result.caught_up = True
        return result

    def query_data_version(
        self, broker_name: str, broker_id: int, addr: str, version: DataVersion | None, conn_id: int | None = None
    ) -> bool:
        """QUERY_DATA_VERSION: whether the broker's ``version`` differs from what is held for it (True also when
        it is not registered here, or not over this connection); a registered broker is kept alive by it."""
        info = self._live_holder(addr, broker_name, broker_id, conn_id)
        if info is None:
            return True
        info.last_update = self._clock()
        return version is None or info.data_version != version

    def _move_group(self, broker_data: BrokerData, cluster: str) -> None:
        names = self._cluster_addr_table.get(broker_data.cluster)
        if names is not None:
            names.discard(broker_data.broker_name)
            if not names:
                del self._cluster_addr_table[broker_data.cluster]
        broker_data.cluster = cluster
        for info in self._live.values():
            if info.broker_name == broker_data.broker_name:
                info.cluster = cluster

    # -- removal ------------------------------------------------------------------------------------------
    def unregister(
        self, cluster: str, broker_name: str, broker_id: int, addr: str, conn_id: int | None = None
    ) -> BrokerLiveInfo | None:
        """UNREGISTER_BROKER: drop one broker (a clean shutdown). Returns what was removed, if anything.

        A broker that registered over a connection (still open, or it would be gone) is unregistered only over
        that connection: ``UnregistrationRefusedError`` otherwise, so no one else takes a live broker's routes
        away."""
        info = self._live.get(addr)
        if info is None:
            # Not live (already expired), but make sure no stale address lingers in the group.
            broker_data = self._broker_addr_table.get(broker_name)
            if broker_data is not None and broker_data.broker_addrs.get(broker_id) == addr:
                del broker_data.broker_addrs[broker_id]
                self._prune_group(broker_name)
            return None
        if (info.broker_name, info.broker_id) != (broker_name, broker_id):
            return None
        if info.conn_id is not None and conn_id is not None and conn_id != info.conn_id:
            raise UnregistrationRefusedError(
                f"{addr} ({broker_name} id {broker_id}) is registered over another live connection; "
                "only that connection may unregister it"
            )
        self._detach(info, prune=True)
        return info

    def remove_by_connection(self, conn_id: int) -> list[BrokerLiveInfo]:
        """Drop every broker that registered over connection ``conn_id`` (it closed)."""
        gone = [info for info in self._live.values() if info.conn_id == conn_id]
        for info in gone:
            self._detach(info, prune=True)
        return gone

    def scan_expired(self, now: float | None = None) -> list[BrokerLiveInfo]:
        """Drop every broker whose last registration is older than ``expiry`` seconds."""
        now = self._clock() if now is None else now
        gone = [info for info in self._live.values() if now - info.last_update > self.expiry]
        for info in gone:
            self._detach(info, prune=True)
        return gone

    def _detach(self, info: BrokerLiveInfo, prune: bool) -> None:
        self._live.pop(info.addr, None)
        broker_data = self._broker_addr_table.get(info.broker_name)
        if broker_data is not None and broker_data.broker_addrs.get(info.broker_id) == info.addr:
            del broker_data.broker_addrs[info.broker_id]
        if prune:
            self._prune_group(info.broker_name)

    def _prune_group(self, broker_name: str) -> None:
        """Forget a group with no broker left: its BrokerData, its cluster entry and its queue data."""
        broker_data = self._broker_addr_table.get(broker_name)
        if broker_data is None or broker_data.broker_addrs:
            return
        del self._broker_addr_table[broker_name]
        names = self._cluster_addr_table.get(broker_data.cluster)
        if names is not None:
            names.discard(broker_name)
            if not names:
                del self._cluster_addr_table[broker_data.cluster]
        self._remove_topics(broker_name, list(self._topics_of_group.get(broker_name, ())))

    # -- topics -------------------------------------------------------------------------------------------
    def delete_topic(self, topic: str, cluster: str | None = None) -> bool:
        """DELETE_TOPIC_IN_NAMESRV: forget the topic (only its queues in ``cluster`` when given)."""
        by_broker = self._topic_queue_table.get(topic)
        if by_broker is None:
            return False
        names = self._cluster_addr_table.get(cluster, set()) if cluster is not None else set(by_broker)
        removed = [name for name in list(by_broker) if name in names]
        for name in removed:
            self._remove_topics(name, [topic])
        return bool(removed)

    def wipe_write_perm(self, broker_name: str) -> int:
        """WIPE_WRITE_PERM_OF_BROKER: producers stop writing to ``broker_name`` (reads go on); the number of
        topics whose queues there lost the write permission. It holds until the broker's topic configs change
        (a registration with a new data version applies them again) or ``add_write_perm``."""
        return self._change_perm(broker_name, lambda perm: perm & ~PERM_WRITE)

    def add_write_perm(self, broker_name: str) -> int:
        """ADD_WRITE_PERM_OF_BROKER: the write permission back on every queue of ``broker_name``."""
        return self._change_perm(broker_name, lambda perm: perm | PERM_WRITE)

    def _change_perm(self, broker_name: str, change: Callable[[int], int]) -> int:
        changed = 0
        for topic in self._topics_of_group.get(broker_name, ()):
            queue = self._topic_queue_table[topic].get(broker_name)
            if queue is not None and change(queue.perm) != queue.perm:
                queue.perm = change(queue.perm)
                changed += 1
        return changed

    def topics(self) -> list[str]:
        return sorted(self._topic_queue_table)

    def route(self, topic: str) -> TopicRouteData | None:
        """The topic's route, or None when no live group carries it."""
        by_broker = self._topic_queue_table.get(topic)
        if not by_broker:
            return None
        queue_datas: list[QueueData] = []
        broker_datas: list[BrokerData] = []
        for name in sorted(by_broker):
            q = by_broker[name]
            queue_datas.append(
                QueueData(q.broker_name, q.read_queue_nums, q.write_queue_nums, q.perm, q.topic_sys_flag)
            )
            broker_data = self._broker_addr_table.get(name)
            if broker_data is not None:
                broker_datas.append(self._broker_data_view(broker_data))
        if not broker_datas:
            return None
        return TopicRouteData(queue_datas, broker_datas)

    def _broker_data_view(self, broker_data: BrokerData) -> BrokerData:
        """A copy of a group's BrokerData to hand out, with the gRPC endpoints of its live brokers that serve one."""
        grpc_addrs: dict[int, str] = {}
        for broker_id, addr in broker_data.broker_addrs.items():
            info = self._live.get(addr)
            if info is not None and info.grpc_addr:
                grpc_addrs[broker_id] = info.grpc_addr
        return BrokerData(broker_data.cluster, broker_data.broker_name, dict(broker_data.broker_addrs), grpc_addrs)

    # -- cluster ------------------------------------------------------------------------------------------
    def cluster_info(self) -> dict[str, Any]:
        """ClusterInfo JSON: ``{"brokerAddrTable": {name: BrokerData}, "clusterAddrTable": {c: [names]}}``."""
        return {
            "brokerAddrTable": {
                name: self._broker_data_view(self._broker_addr_table[name]).to_json()
                for name in sorted(self._broker_addr_table)
            },
            "clusterAddrTable": {cluster: sorted(names) for cluster, names in sorted(self._cluster_addr_table.items())},
        }

    def live_brokers(self) -> list[BrokerLiveInfo]:
        return sorted(self._live.values(), key=lambda i: (i.cluster, i.broker_name, i.broker_id, i.addr))

    def broker(self, addr: str) -> BrokerLiveInfo | None:
        return self._live.get(addr)

    def now(self) -> float:
        return self._clock()

    @property
    def broker_count(self) -> int:
        return len(self._live)

    @property
    def topic_count(self) -> int:
        return len(self._topic_queue_table)
