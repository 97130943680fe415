"""``krocket bench scale`` end to end on a small table: one JSON line whose figures say what the run did."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_scale_reports_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "bench", "scale", "--topics", "300", "--batch", "50",
         "--register-period-ms", "1000", "--lookups", "100", "--slave"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "created 300/300 topics" in done.stderr  # progress on stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert (line["bench"], line["topics"], line["batch"]) == ("scale", 300, 50)
    create = line["create"]
    assert create["request_latency"]["n"] == 6 and create["topics_per_s"] > 0
    idle = line["periodic_registration"]
    assert idle["rounds"] >= 2 and idle["full_registrations"] == 0 and idle["deltas"] == 0
    assert 0 < idle["bytes_per_namesrv_per_round"] < 1024
    catch_up = line["namesrv_restart_catch_up"]
    assert catch_up["full_registrations"] >= 1 and catch_up["full_registration_bytes"] > 1000
    assert line["route_lookup"]["n"] == 100 and line["route_lookup"]["p50_us"] > 0
    assert line["rss_kib"]["full"]["broker"] > 0 and line["broker_restart_to_ready_s"] > 0
    assert line["slave"]["copied_all_after_s"] >= 0
