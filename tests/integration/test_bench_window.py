"""`krocket bench produce --mode window` on the callback-driven send path: the window is kept full from one loop,
every message is acknowledged, consumed and has its latency recorded. Speed is never asserted."""

from __future__ import annotations

import pytest

from tests.integration.test_bench_smoke import SHORT, run_bench


@pytest.mark.parametrize("producers", [1, 2])
def test_window_mode_sends_everything_through_the_callback_path(producers: int) -> None:
    r = run_bench(["produce", "--mode", "window", "--window", "256", "--producers", str(producers), *SHORT])
    assert r["mode"] == "window" and r["window"] == 256 * producers
    produced = r["produce"]
    assert produced["msgs"] > 0 and produced["msgs"] == r["consume"]["msgs"], "every acknowledged message is consumed"
    assert produced["p99_us"] >= produced["p50_us"] > 0, "latencies are recorded per message"
    assert "send_errors" not in r and "send_statuses" not in r
    assert r["cpu"]["produce"]["client_us_per_msg"] > 0
