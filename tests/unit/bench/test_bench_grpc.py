"""`krocket bench grpc`'s pure parts: the clients it measures, where the 5.x SDK lives, the driver's JSON lines
read back and the result line shaped like the other bench rows (no cluster, no SDK needed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from krocket.cli.bench import compare, compare_rows, compare_tables, compare_verdicts, grpc_report, grpc_sdk_driver
from krocket.cli.bench.grpc_report import Variant
from krocket.cli.bench.grpc_sdk import check_sdk, driver_args
from krocket.common.errors import ConfigError

DRIVER_OUTPUT = "\n".join(
    [
        "some SDK chatter",
        json.dumps({"ready": {"startup_s": 0.05, "warmup": 20}}),
        json.dumps(
            {
                "produce": {
                    "msgs": 4,
                    "secs": 0.004,
                    "latencies_us": [400, 100, 300, 200],
                    "errors": 0,
                    "first_error": None,
                    "client_cpu_s": 0.002,
                    "broker_cpu_s": 0.001,
                    "threads_cpu_s": {"io_loop": 0.0012, "callers": 0.0008},
                }
            }
        ),
        "{not json",
        json.dumps(
            {
                "consume": {
                    "msgs": 25,
                    "unique": 24,
                    "missing": 0,
                    "acked": 24,
                    "secs": 0.012,
                    "errors": 0,
                    "first_error": None,
                    "client_cpu_s": 0.0048,
                    "broker_cpu_s": None,
                }
            }
        ),
        json.dumps({"done": True}),
    ]
)


def test_clients_parse_in_order_without_repeats_and_name_their_rows() -> None:
    assert grpc_report.parse_clients("all") == list(grpc_report.CLIENTS)
    assert grpc_report.parse_clients("sdk-async, sdk-seq,sdk-async") == ["sdk-async", "sdk-seq"]
    with pytest.raises(ConfigError, match="unknown sdk-fast"):
        grpc_report.parse_clients("sdk-seq,sdk-fast")
    with pytest.raises(ConfigError):
        grpc_report.parse_clients(" , ")
    vs = grpc_report.variants(list(grpc_report.CLIENTS), threads=8, window=64, stub_window=256)
    assert [v.name for v in vs] == ["grpc-sdk-seq", "grpc-sdk-threads8", "grpc-sdk-async", "grpc-stubs-window"]
    assert [(v.send, v.inflight, v.sdk) for v in vs] == [
        ("sync", 1, True),
        ("sync", 8, True),
        ("async", 64, True),
        ("async", 256, False),
    ]


def test_sdk_python_is_the_flag_then_the_env_venv_then_dot_venv_rmq5(tmp_path: Path) -> None:
    assert grpc_report.sdk_python_path("/opt/x/bin/python", {"KROCKET_RMQ5_VENV": "/v"}) == Path("/opt/x/bin/python")
    assert grpc_report.sdk_python_path(None, {"KROCKET_RMQ5_VENV": "/v"}) == Path("/v/bin/python")
    assert grpc_report.sdk_python_path(None, {}, cwd=tmp_path) == tmp_path / ".venv-rmq5" / "bin" / "python"


def test_a_missing_sdk_says_how_to_make_its_environment(tmp_path: Path) -> None:
    python = tmp_path / "venv5" / "bin" / "python"
    with pytest.raises(ConfigError) as err:
        check_sdk(python)
    text = str(err.value)
    assert f"python3 -m venv {tmp_path / 'venv5'}" in text and "pip install rocketmq-python-client==5.1.2" in text
    with pytest.raises(ConfigError, match="rocketmq"):  # an interpreter without the SDK (this one has the 4.x one)
        check_sdk(Path(sys.executable))


def test_the_cli_exits_non_zero_before_starting_a_cluster_without_the_sdk(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "krocket.cli.main", "bench", "grpc", "--local", "--sdk-python",
         str(tmp_path / "none" / "bin" / "python")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and proc.stdout == ""
    assert "pip install rocketmq-python-client==5.1.2" in proc.stderr and "starting" not in proc.stderr
    assert time.monotonic() - t0 < 30


def test_driver_output_is_read_back_ignoring_other_lines() -> None:
    parsed = grpc_report.parse_driver_output(DRIVER_OUTPUT)
    assert parsed.ok and parsed.ready["startup_s"] == 0.05
    assert parsed.produce is not None and parsed.produce["msgs"] == 4
    assert parsed.consume is not None and parsed.consume["acked"] == 24
    broken = grpc_report.parse_driver_output(json.dumps({"error": "RuntimeError: no route"}))
    assert not broken.ok and broken.error == "RuntimeError: no route"
    assert not grpc_report.parse_driver_output(DRIVER_OUTPUT.rsplit("\n", 1)[0]).ok  # no "done": not finished


def test_result_line_has_the_other_rows_shape_and_cpu_per_message() -> None:
    parsed = grpc_report.parse_driver_output(DRIVER_OUTPUT)
    assert parsed.produce is not None
    variant = Variant("sdk-threads", threads=8)
    figures = grpc_report.phase_result(variant, parsed.produce, parsed.consume)
    line = grpc_report.result_line(variant, figures, msg_bytes=1024, pinned=True, run=0)
    assert line["system"] == "krocket" and line["mode"] == "grpc-sdk-threads8" and line["verb"] == "grpc"
    assert line["produce"] == {"msgs": 4, "msgs_per_s": 1000, "p50_us": 300, "p99_us": 400, "secs": 0.0}
    assert set(line["consume"]) == {"msgs", "msgs_per_s", "secs"}
    assert line["consume"]["msgs"] == 24 and line["consume"]["msgs_per_s"] == 2000  # acked / secs
    assert line["deliveries"] == 25 and line["missing"] == 0 and line["window"] == 8 and line["threads"] == 8
    assert line["cpu"]["produce"] == {
        "client_us_per_msg": 500.0,
        "broker_us_per_msg": 250.0,
        "threads_us_per_msg": {"io_loop": 300.0, "callers": 200.0},
    }
    assert line["cpu"]["consume"] == {"client_us_per_msg": 200.0, "broker_us_per_msg": None}
    assert not grpc_report.failed(line)
    json.dumps(line)  # one JSON line
    assert "grpc-sdk-threads8" in grpc_report.human_line(line)
    m = compare_verdicts.medians([line])
    assert m["produce"] == 1000 and m["consume"] == 2000 and m["broker_cpu"] == 250.0


def test_missing_messages_and_failed_calls_make_a_failed_run() -> None:
    variant = Variant("sdk-seq")
    produce = {"msgs": 2, "secs": 1.0, "latencies_us": [1, 2], "errors": 3, "first_error": "Timeout"}
    figures = grpc_report.phase_result(variant, produce, {"msgs": 1, "acked": 1, "missing": 1, "secs": 1.0})
    line = grpc_report.result_line(variant, figures, msg_bytes=16)
    assert line["send_errors"] == 3 and line["first_error"] == "Timeout" and line["missing"] == 1
    assert grpc_report.failed(line) and "1 never received" in grpc_report.human_line(line)
    no_consume = grpc_report.result_line(variant, grpc_report.phase_result(variant, produce, None), msg_bytes=16)
    assert no_consume["consume"] == {"msgs": 0, "msgs_per_s": 0, "secs": 0.0}


def test_driver_arguments_follow_the_variant() -> None:
    from krocket.cli.bench.grpc_sdk import GrpcOptions

    class Topic:
        topic, group = "bench-t", "bench_g"

    opts = GrpcOptions(n=300, duration=5.0, quiet=True)
    args = driver_args(Variant("sdk-async", window=32), opts, "127.0.0.1:8081", Topic(), 4242)  # type: ignore[arg-type]
    parsed = grpc_sdk_driver.parse_args(args)
    assert (parsed.endpoints, parsed.topic, parsed.group, parsed.n, parsed.send, parsed.window) == (
        "127.0.0.1:8081",
        "bench-t",
        "bench_g",
        300,
        "async",
        32,
    )
    assert parsed.broker_pid == 4242 and parsed.quiet and parsed.consume_budget == opts.consume_limit_s == 30.0


def test_driver_tally_stops_at_the_limit_and_claims_failed_sends_again() -> None:
    tally = grpc_sdk_driver.Tally(limit=3, deadline=time.monotonic() + 60)
    assert tally.claim() and tally.claim()
    tally.failed(RuntimeError("x"))
    assert tally.claim() and tally.claim() and not tally.claim()  # 3 claimed, the failed one again
    tally.ok(time.perf_counter(), "id-1")
    assert tally.done == 1 and tally.ids == ["id-1"] and tally.errors == 1 and tally.first_error == "RuntimeError: x"
    got = grpc_sdk_driver.Received({"a", "b"}, time.monotonic() + 60)
    assert got.running()
    got.got("a")
    got.got("b")
    assert not got.running() and got.elapsed(time.perf_counter()) >= 0


def test_driver_splits_its_cpu_by_thread_group() -> None:
    assert grpc_sdk_driver.thread_group("channel_io_loop_thread") == "io_loop"
    assert grpc_sdk_driver.thread_group("client_callback_worker_vm@1@0@x_0") == "callbacks"
    assert grpc_sdk_driver.thread_group("vm@1@0@x_message_decode_thread_0") == "decode"
    assert grpc_sdk_driver.thread_group("bench-send-3") == grpc_sdk_driver.thread_group("MainThread") == "callers"
    assert grpc_sdk_driver.thread_group("bench-progress") == "other"
    meter = grpc_sdk_driver.Meter(None)
    sum(i * i for i in range(200_000))
    cpu = meter.read()
    assert cpu["broker_cpu_s"] is None and cpu["client_cpu_s"] > 0
    assert set(cpu["threads_cpu_s"]) == {"callers", "io_loop", "callbacks", "decode", "other"}
    assert sum(cpu["threads_cpu_s"].values()) == pytest.approx(cpu["client_cpu_s"], abs=0.03)


def test_driver_imports_nothing_of_krocket() -> None:
    lines = Path(grpc_sdk_driver.__file__).read_text().splitlines()
    assert not [x for x in lines if x.lstrip().startswith(("import krocket", "from krocket"))]


def test_compare_runs_the_grpc_rows_without_a_target() -> None:
    rows = {r.key: r for r in compare_rows.default_rows(1000, 20_000)}
    keys = ["grpc-sdk-seq", "grpc-sdk-threads8", "grpc-sdk-async", "grpc-stubs-window"]
    assert all(k in rows for k in keys)
    for key in keys:
        assert rows[key].durability is None and rows[key].peer_mode is None
        assert compare_verdicts.target_met(rows[key], compare_verdicts.medians([])) == "-"
    args = argparse.Namespace(loop="asyncio", quick=False, n=100_000, budget=8)
    cmd = compare.krocket_command(rows["grpc-sdk-threads8"], args)
    assert cmd[cmd.index("bench") + 1 :][:5] == ["grpc", "--clients", "sdk-threads", "--threads", "8"]
    assert "--local" in cmd and "--pin" in cmd and "--json" in cmd and cmd[-4:] == ["--n", "100000", "--duration", "8"]
    line = {
        "row": "grpc-sdk-seq",
        "mode": "grpc-sdk-seq",
        "produce": {"msgs_per_s": 900, "p50_us": 900, "p99_us": 3000},
        "consume": {"msgs_per_s": 800},
        "cpu": {"produce": {"broker_us_per_msg": 300.0}},
    }
    section = compare_tables.render(
        list(rows.values()), {"grpc-sdk-seq": [line]}, [], [], argparse.Namespace(rounds=1), "t", 1
    )
    row = next(
        x for x in section.splitlines() if x.startswith("| 5.x SDK (rocketmq-python-client 5.1.2) over gRPC: send one")
    )
    assert "0.9 k/s, p99 3.00 ms" in row and row.endswith("| - |")
    assert "| grpc-sdk-seq | 1 | 0.9 k/s | 900 us | 3.00 ms | 300.0 us | 0.8 k/s | - |" in section
