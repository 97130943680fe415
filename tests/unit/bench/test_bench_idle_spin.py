"""``krocket bench --idle-spin-micros N``: the options carry N to the --local cluster's broker flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from krocket.cli.bench import command, system
from krocket.common.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "produce", *argv])


def test_the_spin_reaches_every_local_broker_flag_list(tmp_path: Path) -> None:
    opts = command.options_from(_args("--idle-spin-micros", "150"))
    assert opts.idle_spin_micros == 150 and opts.broker_args == ["--idle-spin-micros", "150"]
    cluster = system.BenchCluster(slaves=1, data_dir=str(tmp_path), broker_args=opts.broker_args)
    assert len(cluster.cluster.brokers) == 2
    for broker in cluster.cluster.brokers:
        assert broker.args[-2:] == ["--idle-spin-micros", "150"]


def test_no_spin_adds_no_broker_flag() -> None:
    opts = command.options_from(_args())
    assert opts.idle_spin_micros == 0 and opts.broker_args == []


def test_the_spin_with_uvloop_is_refused_before_anything_starts() -> None:
    args = _args("--idle-spin-micros", "50", "--loop", "uvloop")
    with pytest.raises(ConfigError, match="--idle-spin-micros needs the asyncio event loop"):
        command.options_from(args)
