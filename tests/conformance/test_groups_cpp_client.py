"""The unmodified RocketMQ C++ client (``rocketmq==0.4.4``) and krocket's consumer tooling: GET_CONSUMER_CONNECTION_LIST
(203) shows it as a CPP client, and an offset reset by time (222) reaches it with RESET_CONSUMER_CLIENT_OFFSET (220)
in the list form its decoder reads: it takes the new offsets (its commits do not undo the reset) and, restarted,
consumes again from the reset point."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from krocket.client import Admin, Message, Producer

from tests.conformance.test_rocketmq_cpp_client import DRIVER, run_driver
from tests.support.cluster import LocalCluster, create_topic, wait_until_async

pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")

EARLY, LATE = 5, 5


def test_cpp_push_consumer_shows_in_connections_and_obeys_a_reset_by_time(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    topic, group = "ResetCpp", "cpp-reset"

    async def send_all() -> int:
        await create_topic(cluster, topic, queues=2)
        async with Producer("cpp-reset-producer", cluster.namesrv_addr) as producer:
            for i in range(EARLY):
                await producer.send(Message(topic, f"early-{i}".encode()))
            await asyncio.sleep(0.3)
            reset_at = int(time.time() * 1000)
            await asyncio.sleep(0.3)
            for i in range(LATE):
                await producer.send(Message(topic, f"late-{i}".encode()))
        return reset_at

    reset_at = asyncio.run(send_all())
    home = tmp_path / "cpp-home"
    home.mkdir()
    args = ["push", "--namesrv", cluster.namesrv_addr, "--topic", topic, "--group", group, "--timeout", "60"]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    # The first consumer stays connected (--linger) while the offsets are reset under it.
    first = subprocess.Popen(
        [sys.executable, str(DRIVER), *args, "--expect", str(EARLY + LATE), "--linger", "12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert first.stdout is not None
        got: list[str] = []
        while len(got) < EARLY + LATE:
            line = first.stdout.readline()
            assert line, "the C++ consumer ended before it got every message"
            got.append(json.loads(line)["got"])
        assert sorted(got) == sorted([f"early-{i}" for i in range(EARLY)] + [f"late-{i}" for i in range(LATE)])

        async def tooling() -> None:
            async with Admin(cluster.namesrv_addr) as admin:
                connections = await admin.consumer_connections(group)
                assert [c["language"] for c in connections["connectionSet"]] == ["CPP"]
                assert topic in connections["subscriptionTable"]

                async def committed(total: int) -> bool:
                    return sum(r["consumerOffset"] for r in await admin.consume_stats(group, topic)) == total

                await wait_until_async(lambda: committed(EARLY + LATE), timeout=30, message="offsets committed")
                table = await admin.reset_offset_by_time(group, topic, reset_at)
                assert sum(table.values()) == EARLY
                # The C++ client took the new offsets (220): its own commits (every 5 s) do not undo the reset.
                await asyncio.sleep(6.0)
                assert await committed(EARLY)

        asyncio.run(tooling())
        out, err = first.communicate(timeout=60)
        assert out.decode().splitlines()[-1].startswith('{"done"'), err.decode()[-2000:]  # it did not crash
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # The 1.x C++ client does not resume its dropped queues until it restarts (its own limitation, as against
    # Apache RocketMQ); restarted, it continues from the reset point.
    again = run_driver(tmp_path, *args, "--expect", str(LATE), "--linger", "2", timeout=90)
    assert sorted(g["got"] for g in again) == sorted(f"late-{i}" for i in range(LATE))
