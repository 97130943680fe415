"""The bench tool's statistics, JSON shape, options and comparison verdicts (no cluster needed)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from krocket.cli.bench import compare_rows, compare_tables, compare_verdicts, stats
from krocket.cli.bench.bodies import STAMP_BYTES, payload, stamped
from krocket.cli.bench.command import add_run_arguments, options_from
from krocket.cli.bench.options import BenchOptions
from krocket.cli.bench.produce import Pacer
from krocket.cli.bench.system import can_pin, rss_kib

# ------------------------------------------------------------------------------------------- percentiles


def test_percentiles_of_1_to_1000() -> None:
    data = list(range(1, 1001))
    assert stats.percentile(data, 0.5) == 501
    assert stats.percentile(data, 0.99) == 991
    assert stats.percentile(data, 0.999) == 1000
    assert stats.percentile(data, 0.0) == 1
    assert stats.percentile(data, 1.0) == 1000  # clamped to the last sample


def test_percentile_ignores_input_order_and_matches_the_peer_kit_index() -> None:
    data = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.percentile(data, 0.5) == 3.0  # sorted[int(5 * 0.5)] = sorted[2]
    assert stats.percentile(data, 0.99) == 5.0
    assert stats.percentile(sorted(data), 0.2, presorted=True) == 2.0


def test_percentile_p999_needs_a_thousand_samples_to_differ_from_max() -> None:
    data = list(range(10_000))
    assert stats.percentile(data, 0.999) == 9990
    assert stats.percentile(data[:100], 0.999) == 99


def test_percentile_edge_cases() -> None:
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([7.0], 0.999) == 7.0
    with pytest.raises(ValueError):
        stats.percentile([1.0], 1.5)
    with pytest.raises(ValueError):
        stats.percentile([1.0], -0.1)


# ------------------------------------------------------------------------------------------- rates


def test_rate_rounds_and_survives_zero_time() -> None:
    assert stats.rate(1000, 0.5) == 2000
    assert stats.rate(1, 3.0) == 0
    assert stats.rate(2, 3.0) == 1
    assert stats.rate(100, 0.0) == 0
    assert stats.rate(0, 1.0) == 0


def test_produce_summary_converts_seconds_to_microseconds() -> None:
    lat = [i / 1e6 for i in range(1, 101)]  # 1..100 us
    s = stats.produce_summary(lat, 100, 0.25)
    assert s == {"msgs": 100, "msgs_per_s": 400, "p50_us": 51, "p99_us": 100, "secs": 0.25}
    assert tuple(s) == stats.PRODUCE_KEYS


def test_empty_summaries() -> None:
    assert stats.produce_summary([], 0, 0.0) == {
        "msgs": 0,
        "msgs_per_s": 0,
        "p50_us": None,
        "p99_us": None,
        "secs": 0.0,
    }
    assert stats.latency_summary([]) == {"msgs": 0, "p50_us": None, "p99_us": None, "p999_us": None, "max_us": None}


def test_consume_and_latency_summaries() -> None:
    c = stats.consume_summary(150_000, 1.0)
    assert c == {"msgs": 150_000, "msgs_per_s": 150_000, "secs": 1.0}
    assert tuple(c) == stats.CONSUME_KEYS
    lat = stats.latency_summary([i / 1e6 for i in range(1000, 0, -1)])  # 1000..1 us, unsorted
    assert lat == {"msgs": 1000, "p50_us": 501, "p99_us": 991, "p999_us": 1000, "max_us": 1000}
    assert tuple(lat) == stats.LATENCY_KEYS


def test_latency_recorder_repeats_a_batch_latency() -> None:
    r = stats.LatencyRecorder()
    r.add(0.001)
    r.add(0.002, 3)
    assert len(r) == 4
    assert r.samples == [0.001, 0.002, 0.002, 0.002]


def test_median_of_skips_none() -> None:
    assert stats.median_of([3, None, 1, 2]) == 2
    assert stats.median_of([None, None]) is None
    assert stats.median_of([1, 2]) == 1.5


# ------------------------------------------------------------------------------------------- JSON shape


def test_result_line_has_the_peer_kit_shape() -> None:
    prod = stats.produce_summary([0.0001] * 10, 10, 0.01)
    cons = stats.consume_summary(10, 0.001)
    line = stats.result_line("seq", prod, cons, msg_bytes=1024, window=1, flush="async")
    decoded = json.loads(json.dumps(line))
    assert decoded["system"] == "krocket"
    assert decoded["mode"] == "seq"
    assert set(decoded["produce"]) == {"msgs", "msgs_per_s", "p50_us", "p99_us", "secs"}
    assert set(decoded["consume"]) == {"msgs", "msgs_per_s", "secs"}
    assert decoded["msg_bytes"] == 1024 and decoded["window"] == 1 and decoded["flush"] == "async"
    assert list(decoded)[:6] == ["system", "mode", "produce", "consume", "msg_bytes", "window"]


def test_result_line_fills_missing_phases() -> None:
    line = stats.result_line("window", None, None, msg_bytes=10, window=8)
    assert line["produce"]["msgs"] == 0 and line["consume"]["msgs_per_s"] == 0


# ------------------------------------------------------------------------------------------- options


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    p.set_defaults(verb="produce")
    return p.parse_args(list(argv))


def test_option_defaults() -> None:
    args = _parse()
    assert (args.size, args.n, args.mode, args.flush, args.replication) == (1024, 200_000, "seq", "async", "async")
    opts = options_from(args)
    assert opts.inflight == 1 and opts.msgs_per_request == 1 and opts.window_msgs == 1


def test_window_and_batch_in_flight() -> None:
    w = options_from(_parse("--mode", "window", "--window", "64", "--producers", "2"))
    assert (w.inflight, w.msgs_per_request, w.window_msgs) == (64, 1, 128)
    b = options_from(_parse("--mode", "batch", "--batch", "50"))
    assert (b.inflight, b.msgs_per_request, b.window_msgs) == (4, 50, 200)
    s = options_from(_parse("--mode", "seq", "--window", "99"))
    assert s.inflight == 1  # seq is one at a time whatever --window says


def test_bad_options_are_refused() -> None:
    for argv in (["--size", "0"], ["--mode", "pipelined"], ["--rate", "-1"], ["--flush", "never"]):
        with pytest.raises(SystemExit):
            _parse(*argv)


def test_consume_budget_defaults_like_the_peer_kit() -> None:
    assert BenchOptions(duration=45).consume_limit_s == 110
    assert BenchOptions(consume_budget=3).consume_limit_s == 3


# ------------------------------------------------------------------------------------------- bodies, pacing


def test_payload_and_stamped_bodies() -> None:
    assert len(payload(1024)) == 1024 and len(payload(1)) == 1
    make = stamped(1024)
    before = time.time_ns()
    body = make()
    after = time.time_ns()
    assert len(body) == 1024
    assert before <= int.from_bytes(body[:STAMP_BYTES], "big") <= after


async def test_pacer_holds_the_offered_rate() -> None:
    pacer = Pacer(2000.0)  # 100 messages take 50 ms
    t0 = time.perf_counter()
    for _ in range(10):
        await pacer.wait(10)
    assert time.perf_counter() - t0 >= 0.040


def test_rss_of_this_process_and_pinning_probe() -> None:
    import os

    kib = rss_kib(os.getpid())
    assert kib is None or kib > 1000
    assert rss_kib(2**22 + 12345) is None
    assert isinstance(can_pin(), bool)


# ------------------------------------------------------------------------------------------- compare


def _run(peer_or_row: str, mode: str, rate: int, p99: int | None, consume: int = 0, **extra: object) -> dict:
    r = {
        "mode": mode,
        "loop": "asyncio",
        "produce": {"msgs_per_s": rate, "p50_us": 1, "p99_us": p99},
        "consume": {"msgs_per_s": consume},
        **extra,
    }
    r["peer" if peer_or_row in compare_verdicts.PEER_CLASS else "row"] = peer_or_row
    return r


def test_verdicts() -> None:
    assert compare_verdicts.verdict(12_000, 100, 10_000, 200).startswith("**ahead**")
    assert compare_verdicts.verdict(12_000, 300, 10_000, 200).startswith("faster, p99 worse")
    assert compare_verdicts.verdict(11_000, 100, 10_000, 200).startswith("parity")
    assert compare_verdicts.verdict(7_000, 100, 10_000, 200).startswith("behind")
    assert compare_verdicts.verdict(20_000, 900, 10_000, 200, rate_only=True).startswith("**ahead**")
    assert compare_verdicts.verdict(None, None, 10_000, 200) == "-"


def test_best_peer_is_per_durability_class_and_mode() -> None:
    runs = [
        _run("redis", "seq", 8000, 200, 200_000),
        _run("redis", "seq", 9000, 250, 100_000),
        _run("redis", "seq", 8500, 220, 150_000),
        _run("nats", "seq", 6000, 300, 30_000),
        _run("rabbit", "seq", 1500, 900, 12_000),
        _run("redis", "batch", 100_000, 9000, 120_000),
    ]
    pmed = compare_verdicts.peer_medians(runs)
    (peer, mode, _loop), m = compare_verdicts.best_peer(pmed, "async", "seq")
    assert (peer, mode, m["produce"], m["p99"], m["runs"]) == ("redis", "seq", 8500, 220, 3)
    (peer, _, _), m = compare_verdicts.best_peer(pmed, "sync", "seq")
    assert peer == "rabbit" and m["produce"] == 1500
    (peer, mode, _), m = compare_verdicts.best_peer(pmed, "async", "consume")
    assert (peer, mode, m["consume"]) == ("redis", "seq", 150_000)  # median of the three seq runs
    assert compare_verdicts.best_peer(pmed, "sync", "batch") is None


def test_target_checks() -> None:
    rows = {r.key: r for r in compare_rows.default_rows(1000, 20_000)}
    pmed = compare_verdicts.peer_medians(
        [_run("redis", "seq", 8000, 300), _run("redis", "batch", 80_000, 9000), _run("nats", "seq", 20_000, 100)]
    )
    ok = compare_verdicts.medians([_run("seq-async", "seq", 9000, 350)])
    assert compare_verdicts.target_met(rows["seq-async"], ok, pmed=pmed) == "met"  # >= 1.0x Redis seq
    assert compare_verdicts.target_met(rows["seq-async-py"], ok, pmed=pmed) == "met"  # the twin: same target
    assert compare_verdicts.target_met(rows["seq-async"], ok) == "**missed**"  # no Redis figure: not met
    assert compare_verdicts.target_met(rows["seq-async-spin"], ok, pmed=pmed) == "**missed**"  # < 1.2x, p99 worse
    spun = compare_verdicts.medians([_run("seq-async-spin", "seq", 9700, 250)])
    assert compare_verdicts.target_met(rows["seq-async-spin"], spun, pmed=pmed) == "met"
    window = compare_verdicts.medians(
        [_run("window-async", "window", 101_000, 5000, cpu={"produce": {"broker_us_per_msg": 4.0}})]
    )
    assert compare_verdicts.target_met(rows["window-async"], window, pmed=pmed) == "met"
    assert compare_verdicts.target_met(rows["window-async-py"], window, pmed=pmed) == "met"
    costly = compare_verdicts.medians(
        [_run("window-async", "window", 101_000, 5000, cpu={"produce": {"broker_us_per_msg": 8.0}})]
    )
    assert compare_verdicts.target_met(rows["window-async"], costly, pmed=pmed) == "**missed**"  # > 5 us (C)
    assert compare_verdicts.target_met(rows["window-async-py"], costly, pmed=pmed) == "met"  # <= 12 us (twin)
    assert rows["window-async-py"].env == {"KROCKET_NO_EXTENSIONS": "1"} and not rows["window-async"].env
    e2e = compare_verdicts.medians(
        [_run("e2e", "window", 20_000, 1, e2e={"p50_us": 800, "p99_us": 4000, "p999_us": 1})]
    )
    assert compare_verdicts.target_met(rows["e2e"], e2e) == "met"
    flat = compare_verdicts.medians(
        [_run("backlog", "backlog", 1, 1, backlog={"rss_empty_kib": 100, "rss_backlog_kib": 109, "msgs": 10})]
    )
    assert compare_verdicts.target_met(rows["backlog"], flat) == "met"
    sm = compare_verdicts.medians([_run("batch-sync-master", "batch", 70_000, 1)])
    assert compare_verdicts.target_met(rows["batch-sync-master"], sm, async_batch_rate=100_000) == "met"
    assert compare_verdicts.target_met(rows["batch-sync-master"], sm, async_batch_rate=110_000) == "**missed**"
    assert compare_verdicts.target_met(rows["batch-async-master"], sm) == "-"  # a reference row, no floor of its own


def test_sync_master_row_is_held_against_async_master_with_a_slave_when_it_ran() -> None:
    rows = compare_rows.default_rows(1000, 20_000)
    sync_master = [_run("batch-sync-master", "batch", 60_000, 1)]
    args = argparse.Namespace(rounds=1)
    alone = {"batch-async": [_run("batch-async", "batch", 130_000, 1)], "batch-sync-master": sync_master}
    line = next(
        x for x in compare_tables.render(rows, alone, [], [], args, "t", 1).splitlines() if ", SYNC_MASTER with" in x
    )
    assert line.endswith("| **missed** |")  # 60 k < 0.7 x 130 k (no slave)
    paired = {**alone, "batch-async-master": [_run("batch-async-master", "batch", 70_000, 1)]}
    line = next(
        x for x in compare_tables.render(rows, paired, [], [], args, "t", 1).splitlines() if ", SYNC_MASTER with" in x
    )
    assert line.endswith("| met |")  # 60 k >= 0.7 x 70 k (ASYNC_MASTER with a slave)


def test_render_and_write_section(tmp_path: Path) -> None:
    rows = compare_rows.default_rows(1000, 20_000)
    k_runs = {"seq-async": [_run("seq-async", "seq", 12_000, 150, 90_000)] * 3}
    peers = [_run("redis", "seq", 9000, 200, 200_000), _run("rabbit", "batch", 9000, 90_000, 10_000)]
    args = argparse.Namespace(rounds=3)
    section = compare_tables.render(rows, k_runs, peers, ["cmd one"], args, "today", 60.0)
    assert section.startswith(compare_tables.BEGIN) and section.rstrip().endswith(compare_tables.END)
    assert "**ahead** (1.33x)" in section and "cmd one" in section and "not run" in section
    doc = tmp_path / "perf.md"
    doc.write_text("# Performance\n\nintro\n\n## Profile\n\nkept\n")
    compare_tables.write_section(doc, section)
    compare_tables.write_section(doc, section.replace("cmd one", "cmd two"))
    text = doc.read_text()
    assert text.count(compare_tables.BEGIN) == 1 and "cmd two" in text and "cmd one" not in text
    assert "intro" in text and "kept" in text
