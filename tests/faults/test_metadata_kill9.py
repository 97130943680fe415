"""Topic metadata survives ``kill -9`` of the broker in the middle of a stream of changes: every create, update and
delete the broker acknowledged is there after the restart (journal lines are on disk before the answer, compactions
run in the background), the change in flight at the kill may or may not be, and nothing else is."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.broker_http import http_call
from tests.support.cluster import start_cluster, wait_until


def test_acknowledged_topic_changes_survive_kill_9(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("registerNameServerPeriod: 1000\n")
    cluster = start_cluster(
        tmp_path / "cluster", namesrvs=1, groups=1, auto_create=False, extra_broker_args=["--config", str(config)]
    )
    try:
        broker = cluster.brokers[0]
        acked: dict[str, int | None] = {}  # topic -> queues, None: deleted
        in_flight: list[str] = []
        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set() and i < 100_000:
                name = f"Churn{i}"
                in_flight[:] = [name]
                try:
                    if i % 7 == 6:  # now and then delete an earlier one
                        victim = f"Churn{i - 3}"
                        in_flight[:] = [victim]
                        http_call(broker, "DELETE", f"/api/v1/topics/{victim}")
                        acked[victim] = None
                    else:
                        queues = 1 + i % 8
                        body = {"topicName": name, "readQueueNums": queues, "writeQueueNums": queues, "perm": 6}
                        http_call(broker, "POST", "/api/v1/topics", body)
                        acked[name] = queues
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    return  # the broker is gone: this change was not acknowledged
                i += 1

        worker = threading.Thread(target=churn)
        worker.start()
        # Past 1,000 journal lines, so a compaction (in a thread) has run or runs when the kill comes.
        wait_until(lambda: len(acked) >= 1500, 120, message="1,500 acknowledged changes")
        broker.kill()
        stop.set()
        worker.join(10)
        assert not worker.is_alive()

        broker.start()
        broker.wait_ports()
        cluster.wait_registered()
        on_broker = {
            t["topicName"]: t["writeQueueNums"]
            for t in http_call(broker, "GET", "/api/v1/topics")["topics"]
            if t["topicName"].startswith("Churn")
        }
        unsure = set(in_flight)  # the change in flight at the kill: either outcome is right
        for name, queues in acked.items():
            if name in unsure:
                continue
            if queues is None:
                assert name not in on_broker, f"{name} was deleted (acknowledged) but is back"
            else:
                assert on_broker.get(name) == queues, f"{name} was acknowledged with {queues} queues"
        assert set(on_broker) - set(acked) <= unsure, set(on_broker) - set(acked)
        assert len(on_broker) > 1000
    finally:
        cluster.stop()
