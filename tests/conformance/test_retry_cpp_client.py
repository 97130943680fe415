"""The unmodified RocketMQ C++ client's push consumer returning RECONSUME_LATER against krocket: it sends the
message back (CONSUMER_SEND_MSG_BACK, 36, version 63, delayLevel 0) and gets it again through %RETRY%<group> with
reconsume_times 1 after delay level 3, with its first topic restored, while the other messages of its queue keep
flowing. The binding's Python ``subscribe`` turns a raised exception into an error, so the consumer here registers
its callback with the library's own ctypes function to return RECONSUME_LATER itself (this file, run as a script,
is that consumer)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.test_rocketmq_cpp_client import run_driver
from tests.support.cluster import LocalCluster, create_topic, start_cluster

LEVEL_3_DELAY_S = 3.0
DELAY_LEVELS = f"1s 1s {LEVEL_3_DELAY_S:g}s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s"
POISON = "poison-0"


@pytest.fixture
def retry_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    config = tmp_path / "broker.yaml"
    config.write_text(f"messageDelayLevel: {DELAY_LEVELS}\n")
    cluster = start_cluster(tmp_path / "cluster", namesrvs=1, groups=1, extra_broker_args=["--config", str(config)])
    try:
        yield cluster
    finally:
        cluster.stop()


def start_failing_consumer(tmp_path: Path, namesrv: str, topic: str, group: str, expect: int) -> subprocess.Popen[str]:
    home = tmp_path / "cpp-home"  # the C++ client writes its logs under $HOME/logs
    home.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, __file__, namesrv, topic, group, str(expect)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def read_lines(proc: subprocess.Popen[str], into: list[dict]) -> threading.Thread:
    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                into.append(json.loads(line))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_cpp_push_consumer_reconsume_later_gets_the_message_again_after_level_3(
    retry_cluster: LocalCluster, tmp_path: Path
) -> None:
    pytest.importorskip("rocketmq.client", reason="the conformance client rocketmq==0.4.4 is a dev dependency")
    topic, group, namesrv = "RetryCpp", "cpp-retry", retry_cluster.namesrv_addr
    asyncio.run(create_topic(retry_cluster, topic, queues=1))
    produce = ["produce", "--namesrv", namesrv, "--topic", topic]
    assert [s["sent"] for s in run_driver(tmp_path, *produce, "--prefix", "poison")] == [POISON]
    got: list[dict] = []
    proc = start_failing_consumer(tmp_path, namesrv, topic, group, expect=5)
    reader = read_lines(proc, got)
    try:
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and got[0]["got"] == POISON, "the C++ consumer never got the poison message"
        # The C++ listener fails its whole pulled batch: the others are sent once the poison one has failed.
        others_sent = run_driver(tmp_path, *produce, "--prefix", "ok", "--count", "3")
        assert [s["sent"] for s in others_sent] == ["ok-0", "ok-1", "ok-2"]
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(5)
    assert got and got[-1].get("done"), f"consumer failed (rc {proc.returncode}): {proc.stderr.read()[-2000:]}"
    got = got[:-1]
    poison = [g for g in got if g["got"] == POISON]
    others = [g for g in got if g["got"] != POISON]
    assert sorted(g["got"] for g in others) == ["ok-0", "ok-1", "ok-2"]  # each once
    assert [g["reconsume_times"] for g in others] == [0, 0, 0]
    assert [g["reconsume_times"] for g in poison] == [0, 1]
    assert [g["topic"] for g in poison] == [topic, topic]  # the client restores the topic from RETRY_TOPIC
    assert all(g["at"] < poison[1]["at"] for g in others)  # the rest of the queue did not wait for the retry
    waited = poison[1]["at"] - poison[0]["at"]
    # Level 3 here is 3 s; the client pulls the new %RETRY% topic from its next rebalance (it runs every 10 s).
    assert LEVEL_3_DELAY_S - 0.2 <= waited <= 30, waited


def _consume(namesrv: str, topic: str, group: str, expect: int) -> None:
    """The C++ push consumer: RECONSUME_LATER for the first delivery of the poison message, SUCCESS otherwise."""
    from rocketmq.client import PushConsumer, RecvMessage, dll, ffi_check
    from rocketmq.ffi import _CConsumeStatus

    lock = threading.Lock()
    seen: list[int] = []
    enough = threading.Event()

    def on_message(_consumer: object, handle: object) -> int:
        msg = RecvMessage(handle)
        body = msg.body.decode()
        with lock:
            print(
                json.dumps(
                    {"got": body, "reconsume_times": msg.reconsume_times, "topic": msg.topic, "at": time.time()}
                ),
                flush=True,
            )
            seen.append(1)
            if len(seen) >= expect:
                enough.set()
        if body == POISON and msg.reconsume_times == 0:  # the first delivery fails
            return int(_CConsumeStatus.RECONSUME_LATER.value)
        return int(_CConsumeStatus.CONSUME_SUCCESS.value)

    consumer = PushConsumer(group)
    consumer.set_namesrv_addr(namesrv)
    ffi_check(dll.Subscribe(consumer._handle, topic.encode(), b"*"))
    consumer._register_callback(on_message)
    consumer.start()
    enough.wait(120)
    time.sleep(2)  # nothing more may come
    print(json.dumps({"done": True, "count": len(seen)}), flush=True)
    os._exit(0)  # the C++ client's shutdown can block on its background threads


if __name__ == "__main__":
    _consume(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
