"""`krocket bench` smoke test: every mode runs about a second against its own --local cluster through the CLI and
produces and consumes something. Speed is never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SHORT = ["--n", "3000", "--duration", "1", "--consume-budget", "20", "--json", "-q"]

CASES = {
    "produce-seq": ["produce", "--mode", "seq", *SHORT],
    "produce-seq-sync-client": ["produce", "--mode", "seq", "--client", "sync", *SHORT],
    "produce-window": ["produce", "--mode", "window", "--window", "32", *SHORT],
    "produce-batch-sync-flush": ["produce", "--mode", "batch", "--batch", "50", "--flush", "sync", *SHORT],
    "consume": ["consume", "--backlog", "2000", *SHORT],
    "e2e": ["e2e", "--mode", "window", "--rate", "2000", *SHORT],
    "backlog-pinned": ["backlog", "--backlog", "1500", "--pin", *SHORT],
}


def run_bench(argv: list[str], timeout: float = 60) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "--log-level", "WARNING", "bench", *argv, "--local"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints exactly one line per run, got:\n{proc.stdout}"
    return json.loads(lines[0])


@pytest.mark.parametrize("case", list(CASES))
def test_bench_mode_produces_and_consumes(case: str) -> None:
    r = run_bench(CASES[case])
    assert r["system"] == "krocket"
    assert set(r["produce"]) == {"msgs", "msgs_per_s", "p50_us", "p99_us", "secs"}
    assert set(r["consume"]) == {"msgs", "msgs_per_s", "secs"}
    assert r["msg_bytes"] == 1024 and r["window"] >= 0
    assert r["produce"]["msgs"] > 0 and r["produce"]["msgs_per_s"] > 0
    assert r["consume"]["msgs"] > 0 and r["consume"]["msgs_per_s"] > 0
    assert r["consume"]["msgs"] == r["produce"]["msgs"], "everything produced is consumed"
    assert "send_errors" not in r and "pull_errors" not in r
    if case.startswith("produce"):
        assert r["mode"] == case.split("-")[1] and r["produce"]["p99_us"] >= r["produce"]["p50_us"] > 0
    assert r["client"] == ("sync" if case == "produce-seq-sync-client" else "async")
    if case == "produce-batch-sync-flush":
        assert r["flush"] == "sync" and r["batch"] == 50
    if case == "e2e":
        assert r["e2e"]["msgs"] == r["consume"]["msgs"]
        assert r["e2e"]["p999_us"] >= r["e2e"]["p99_us"] >= r["e2e"]["p50_us"] > 0
    if case in ("consume", "backlog-pinned"):
        assert r["mode"] == "backlog" and r["commits"] >= 1
        b = r["backlog"]
        assert b["msgs"] == r["produce"]["msgs"]
        assert b["rss_empty_kib"] > 0 and b["rss_backlog_kib"] > 0 and b["rss_ratio"] > 0


def test_bench_floor_measures_echo_and_broker_round_trips() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "--log-level", "WARNING", "bench", "floor", "--n", "300", "--json"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    runs = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["mode"] for r in runs] == ["echo-asyncio", "echo-blocking", "broker-blocking"]
    for r in runs:
        assert r["system"] == "floor" and r["round_trips"] == 300 and r["server_loop"] == "asyncio"
        assert r["round_trips_per_s"] > 0 and r["round_trip_us"] > 0 and r["client_us_per_rt"] >= 0
        assert r["server_us_per_rt"] is not None and r["server_us_per_rt"] >= 0


def test_bench_floor_rejects_a_bad_count() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "bench", "floor", "--n", "0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr


def test_the_global_loop_option_reaches_the_bench_and_its_cluster() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "--log-level", "WARNING", "--loop", "uvloop", "bench", "produce",
         "--mode", "seq", *SHORT, "--local"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["loop"] == "uvloop" and r["produce"]["msgs"] > 0


def test_bench_sync_client_only_measures_one_at_a_time_sends() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "bench", "produce", "--mode", "batch", "--client", "sync"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "use it with produce --mode seq" in proc.stderr


def test_bench_delay_reports_rss_and_lateness() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "--log-level", "WARNING", "bench", "delay", "--pending", "300"]
        + ["--timed", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["bench"] == "delay" and row["pending"] == 300 and row["received"] == 20
    assert row["earliest_ms"] >= 0, "a delayed message arrived before it was due"
    assert row["rss_empty_mib"] > 0 and row["rss_pending_mib"] > 0
