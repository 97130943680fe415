"""Validation the CLI does before it talks to any server: numeric arguments, queue counts, system topics, the
bench target."""

from __future__ import annotations

import argparse

import pytest

from krocket.cli import arg_types
from krocket.cli.bench.command import bench_target
from krocket.cli.main import main
from krocket.common import transaction
from krocket.common.errors import ConfigError
from krocket.common.topic import AUTO_CREATE_TOPIC_KEY, SCHEDULE_TOPIC, TIMER_TOPIC, is_system_topic

NOWHERE = ["--namesrv", "127.0.0.1:1"]  # never reached: each refusal comes first


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["consume", "-t", "T", "--count", "-5"], "--count/-n: must be at least 1, got -5"),
        (["consume", "-t", "T", "--timeout", "0"], "--timeout: must be more than 0"),
        (["consume", "-t", "T", "--timeout", "nan"], "--timeout: must be a finite number"),
        (["send", "-t", "T", "--count", "0", "x"], "--count/-n: must be at least 1, got 0"),
        (["topic", "create", "foo", "-r", "0", "-w", "0"], "--read-queues/-r: must be between 1 and 1024, got 0"),
        (["topic", "update", "foo", "-r", "2000"], "--read-queues/-r: must be between 1 and 1024, got 2000"),
        (["topic", "create", "foo", "-w", "x"], "--write-queues/-w: 'x' is not a whole number"),
        (["broker", "--listen-port", "70000"], "--listen-port: must be between 0 and 65535, got 70000"),
        (["broker", "--broker-id", "-1"], "--broker-id: must be at least 0, got -1"),
        (["operator", "-A", "--liveness-port", "-3"], "--liveness-port: must be between 0 and 65535, got -3"),
        (["bench", "produce", "--local", "--slaves", "-1"], "--slaves: must be at least 0, got -1"),
    ],
)
def test_bad_numbers_exit_2_naming_the_argument(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["topic", "create", "foo", "-r", "8", "-w", "16"], "writeQueueNums must be between 1 and readQueueNums (8)"),
        (["topic", "create", AUTO_CREATE_TOPIC_KEY], "TBW102 is a system topic the brokers rely on; pass --force"),
        (["topic", "update", SCHEDULE_TOPIC], "SCHEDULE_TOPIC_XXXX is a system topic"),
        (["topic", "delete", "%DLQ%orders"], "%DLQ%orders is a system topic"),
        (["topic", "delete", "%RETRY%orders"], "%RETRY%orders is a system topic"),
        (["topic", "create", transaction.HALF_TOPIC], "RMQ_SYS_TRANS_HALF_TOPIC is a system topic"),
    ],
)
def test_refusals_before_any_request_are_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, *NOWHERE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_system_topic_names_come_from_one_place() -> None:
    for name in (AUTO_CREATE_TOPIC_KEY, SCHEDULE_TOPIC, TIMER_TOPIC, transaction.HALF_TOPIC):
        assert is_system_topic(name), name
    assert is_system_topic(transaction.OP_HALF_TOPIC) and is_system_topic(transaction.CHECK_MAX_TIME_TOPIC)
    assert is_system_topic("RMQ_SYS_ANYTHING") and is_system_topic("rmq_sys_wheel_timer")
    assert not is_system_topic("orders") and not is_system_topic("TBW1020")


def test_argument_types_parse_and_bound() -> None:
    assert arg_types.port("9876") == 9876 and arg_types.port_or_zero("0") == 0
    assert arg_types.queue_count("1024") == 1024 and arg_types.seconds("0.5") == 0.5
    for parse, text in ((arg_types.port, "0"), (arg_types.queue_count, "1025"), (arg_types.seconds, "-1")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_bench_target_is_namesrv_then_env_then_local_only_when_asked() -> None:
    ns = argparse.Namespace
    assert bench_target(ns(local=False, namesrv="h:1"), env={"NAMESRV_ADDR": "e:2"}) == "h:1"
    assert bench_target(ns(local=False, namesrv=None), env={"NAMESRV_ADDR": "e:2"}) == "e:2"
    assert bench_target(ns(local=True, namesrv=None), env={"NAMESRV_ADDR": "e:2"}) is None
    with pytest.raises(ConfigError, match="--namesrv HOST:PORT .* or --local"):
        bench_target(ns(local=False, namesrv=None), env={})
