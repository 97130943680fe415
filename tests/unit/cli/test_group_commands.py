"""`krocket group|consumer|message` verbs: arguments and the reset target."""

from __future__ import annotations

import pytest

from krocket.cli.group_commands import _group_config, parse_reset_target
from krocket.cli.main import build_parser
from krocket.common.errors import ConfigError


def test_reset_targets() -> None:
    assert parse_reset_target("first") == 0
    assert parse_reset_target("LAST") == -1
    assert parse_reset_target("1700000000000") == 1_700_000_000_000
    assert parse_reset_target("2023-11-14T22:13:20") == 1_700_000_000_000  # naive: UTC
    assert parse_reset_target("2023-11-15T00:13:20+02:00") == 1_700_000_000_000
    with pytest.raises(ConfigError, match="--to 'yesterday'"):
        parse_reset_target("yesterday")


def test_group_create_arguments_make_the_config() -> None:
    args = build_parser().parse_args(
        ["group", "create", "g1", "--retry-max-times", "4", "--disable-consume", "--orderly", "--namesrv", "x:1"]
    )
    config = _group_config(args)
    assert (config.group_name, config.retry_max_times, config.consume_enable, config.consume_message_orderly) == (
        "g1",
        4,
        False,
        True,
    )
    assert config.consume_broadcast_enable and config.retry_queue_nums == 1


def test_group_create_fifo_is_an_orderly_group() -> None:
    args = build_parser().parse_args(["group", "create", "g5", "--fifo", "--namesrv", "x:1"])
    assert _group_config(args).consume_message_orderly


@pytest.mark.parametrize(
    "argv",
    [
        ["consumer", "connections", "g"],
        ["consumer", "stats", "g", "--topic", "T"],
        ["consumer", "reset", "g", "--topic", "T", "--to", "first"],
        ["group", "list"],
        ["group", "delete", "g"],
        ["message", "show", "0A00000100002A9F0000000000000000"],
        ["message", "query", "--topic", "T", "--key", "k"],
    ],
)
def test_verbs_parse(argv: list[str]) -> None:
    assert callable(build_parser().parse_args(argv).func)
