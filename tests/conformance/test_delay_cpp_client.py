"""The unmodified RocketMQ C++ client's delay levels (``msg.set_delay_time_level(2)``: 5 s with the default
``messageDelayLevel``) against krocket: the delayed message arrives no earlier than 5 s after its send and soon
after; a normal one sent with it at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from krocket.client import ConsumeStatus, PushConsumer

from tests.support.cluster import LocalCluster, create_topic, wait_until

pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")

# Sends "normal" and "delayed" (level 2) with the C++ client; prints each send's start time.
PRODUCER = """
import json, os, sys, time
from rocketmq.client import Message, Producer
producer = Producer("cpp-delay-producer", timeout=5000)
producer.set_namesrv_addr(sys.argv[1])
producer.start()
for body, level in (("normal", 0), ("delayed", 2)):
    msg = Message(sys.argv[2])
    msg.set_body(body)
    if level:
        msg.set_delay_time_level(level)
    for attempt in range(4):
        start = time.time()
        try:
            result = producer.send_sync(msg)
            break
        except Exception:
            if attempt == 3:
                raise
            time.sleep(0.3)
    print(json.dumps({"sent": body, "at": start, "status": int(result.status)}), flush=True)
print(json.dumps({"done": True}), flush=True)
os._exit(0)
"""


def test_cpp_delay_level_2_arrives_no_earlier_than_5_s(cluster: LocalCluster, tmp_path: Path) -> None:
    topic = "DelayCpp"
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    def listener(messages):  # type: ignore[no-untyped-def]
        with lock:
            for m in messages:
                arrived.setdefault(m.body.decode(), time.time())
        return ConsumeStatus.SUCCESS

    async def run() -> list[dict]:
        await create_topic(cluster, topic, queues=2)
        consumer = PushConsumer("cpp-delay-group", cluster.namesrv_addr, consume_from="FIRST")
        consumer.subscribe(topic)
        consumer.register_listener(listener)
        await consumer.start()
        home = tmp_path / "cpp-home"  # the C++ client writes its logs under $HOME/logs
        home.mkdir(exist_ok=True)
        script = tmp_path / "cpp_delay_producer.py"
        script.write_text(PRODUCER)
        proc = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: subprocess.run(
                [sys.executable, str(script), cluster.namesrv_addr, topic],
                capture_output=True,
                timeout=60,
                env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
            ),
        )
        lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
        assert lines and lines[-1].get("done"), f"producer failed: {proc.stderr.decode()[-2000:]}"
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: {"normal", "delayed"} <= set(arrived), 20, message="both messages")
        )
        await consumer.shutdown()
        return lines[:-1]

    sent = {s["sent"]: s for s in asyncio.run(run())}
    assert all(s["status"] == 0 for s in sent.values())
    assert arrived["normal"] - sent["normal"]["at"] < 2.0
    delay = arrived["delayed"] - sent["delayed"]["at"]
    assert 5.0 <= delay < 6.0, f"level 2 arrived {delay:.3f} s after its send"
