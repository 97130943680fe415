"""Start real name server and broker processes on 127.0.0.1 with random free ports."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from krocket.cli.local_cluster import ChildProcess, LocalCluster

__all__ = ["ChildProcess", "LocalCluster", "create_topic", "start_cluster", "wait_until", "wait_until_async"]


def start_cluster(
    data_dir: Path,
    namesrvs: int = 2,
    groups: int = 2,
    flush: str = "async",
    auto_create: bool = True,
    segment_bytes: int | None = None,
    extra_broker_args: list[str] | None = None,
    slaves: int = 0,
    replication: str = "async",
    acl_file: Path | None = None,
) -> LocalCluster:
    cluster = LocalCluster.plan(
        data_dir,
        namesrvs=namesrvs,
        groups=groups,
        flush=flush,
        auto_create=auto_create,
        segment_bytes=segment_bytes,
        extra_broker_args=extra_broker_args,
        slaves=slaves,
        replication=replication,
        acl_file=acl_file,
    )
    # gRPC ports are fixed when planned, probed free from this one upward: a random start keeps clusters planned
    # at the same moment in parallel test workers off each other's ports (and off the default 8081).
    cluster.first_grpc_port = random.randrange(20000, 30000)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


async def wait_until_async(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


async def create_topic(
    cluster: LocalCluster, topic: str, queues: int = 4, brokers: list[str] | None = None, **admin_options: Any
) -> None:
    """Create ``topic`` on the masters and wait until a name server routes it to all of them (``admin_options``:
    the ``Admin``'s keyword options, e.g. ``tls``)."""
    from krocket.client import Admin

    async with Admin(cluster.namesrv_addr, **admin_options) as admin:
        applied = await admin.create_topic(topic, queues, queues, broker_names=brokers)

        async def routed() -> bool:
            try:
                route = await admin.topic_route(topic)
            except Exception:
                return False
            return {q.broker_name for q in route.queue_datas} == set(applied)

        await wait_until_async(routed, timeout=40, message=f"route of {topic} on {applied}")
