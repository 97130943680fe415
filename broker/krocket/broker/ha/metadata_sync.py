"""Slaves copy topic configs, subscription groups and consumer offsets from their master every 10 s, to serve
reads with them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from krocket.broker.offset_manager import ConsumerOffsetManager
from krocket.broker.schedule.offsets import copy_from_master
from krocket.broker.subscription_group_manager import SubscriptionGroupManager
from krocket.broker.topic_manager import TopicManager
from krocket.common.codes import RequestCode, ResponseCode
from krocket.common.errors import KrocketError
from krocket.common.register_body import (
    ACCEPT_COMPRESSED_FIELD,
    COMPRESSED_FIELD,
    KNOWN_VERSION_FIELD,
    UNCHANGED_FIELD,
    inflate,
    version_key,
)
from krocket.common.remoting import ConnectionPool, RemotingCommand
from krocket.common.subscription_group import SubscriptionGroupConfig
from krocket.common.topic import TopicConfig

log = logging.getLogger(__name__)


class MetadataSync:
    def __init__(
        self,
        topics: TopicManager,
        offsets: ConsumerOffsetManager,
        master_addr: Callable[[], str | None],
        period_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        sign: Callable[[RemotingCommand], None] | None = None,
        groups: SubscriptionGroupManager | None = None,
        delay_offsets_dir: Path | None = None,
    ) -> None:
        self._delay_offsets_dir = delay_offsets_dir  # where config/delayOffset.json is copied to
        self._topics = topics
        self._topics_version = ""  # the master's topic data version copied last ("": none yet)
        self._groups = groups
        self._offsets = offsets
        self._master_addr = master_addr
        self._period_s = period_s
        self._pool = ConnectionPool(ssl_context=ssl_context)
        self._pool.request_hook = sign  # with the ACL on: the broker's admin account signs (krocket.broker.acl)
        self._task: asyncio.Task[None] | None = None
        self.last_sync_ok = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pool.close()

    async def _loop(self) -> None:
        while True:
            addr = self._master_addr()
            if addr:
                try:
                    await self.sync_once(addr)
                    self.last_sync_ok = True
                except KrocketError as exc:
                    if self.last_sync_ok:
                        log.warning("cannot copy metadata from master %s: %s", addr, exc)
                    self.last_sync_ok = False
            await asyncio.sleep(self._period_s if self.last_sync_ok else 1.0)

    async def sync_once(self, addr: str) -> None:
        await self._sync_topics(addr)
        if self._groups is not None:
            table = await self._fetch(addr, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
            raws = (table.get("subscriptionGroupTable") or {}).values()
            self._groups.replace_all([SubscriptionGroupConfig.from_json(raw) for raw in raws])
        offsets = await self._fetch(addr, RequestCode.GET_ALL_CONSUMER_OFFSET)
        for key, queues in offsets.get("offsetTable", {}).items():
            topic, _, group = key.partition("@")
            for queue_id, offset in queues.items():
                # Offsets committed here while the master was away are kept when they are ahead.
                mine = self._offsets.query(group, topic, int(queue_id))
                if mine is None or int(offset) > mine:
                    self._offsets.commit(group, topic, int(queue_id), int(offset))
        self._offsets.persist()
        if self._delay_offsets_dir is not None:
            copy_from_master(self._delay_offsets_dir, await self._fetch(addr, RequestCode.GET_ALL_DELAY_OFFSET))

    async def _sync_topics(self, addr: str) -> None:
        """The master's topic table, fetched only when its data version is not the one copied last (the master
        answers "unchanged" without the table), deflated when large."""
        fields = {ACCEPT_COMPRESSED_FIELD: "true"}
        if self._topics_version:
            fields[KNOWN_VERSION_FIELD] = self._topics_version
        response = await self._request(addr, RemotingCommand(RequestCode.GET_ALL_TOPIC_CONFIG, ext_fields=fields))
        if response.ext_fields.get(UNCHANGED_FIELD) == "true":
            return
        compressed = response.ext_fields.get(COMPRESSED_FIELD) == "true"
        # Read off the event loop: 100 k topics take a second to inflate, parse and check.
        configs, version = await asyncio.get_running_loop().run_in_executor(
            None, _read_topic_table, response.body or b"{}", compressed
        )
        self._topics.replace_all(configs)
        self._topics_version = version

    async def _request(self, addr: str, cmd: RemotingCommand) -> RemotingCommand:
        response = await self._pool.request(addr, cmd, timeout=10.0)
        if response.code != ResponseCode.SUCCESS:
            raise KrocketError(f"master answered code {response.code} to request {cmd.code}: {response.remark}")
        return response

    async def _fetch(self, addr: str, code: int) -> dict:
        response = await self._request(addr, RemotingCommand(code))
        return _json(response.body or b"{}", code)


def _read_topic_table(body: bytes, compressed: bool) -> tuple[list[TopicConfig], str]:
    """A GET_ALL_TOPIC_CONFIG answer: the topic configs and the version key ("" when it names none)."""
    topics = _json(inflate(body) if compressed else body, RequestCode.GET_ALL_TOPIC_CONFIG)
    configs = [TopicConfig.from_json(raw) for raw in topics.get("topicConfigTable", {}).values()]
    version = topics.get("dataVersion")
    return configs, version_key(version) if isinstance(version, dict) else ""


def _json(body: bytes, code: int) -> dict:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise KrocketError(f"master sent a body that is not JSON for request {code}: {exc}") from None
