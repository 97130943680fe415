"""The brokerId a pod reads from KROCKET_BROKER_ID: an empty or non-numeric value stops the broker at start."""

from __future__ import annotations

import pytest

from krocket.broker.config import load_broker_config
from krocket.common.errors import ConfigError


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_broker_id_is_a_start_error_not_a_second_master(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KROCKET_BROKER_ID", value)
    with pytest.raises(ConfigError, match="KROCKET_BROKER_ID is set but empty.*second master"):
        load_broker_config(None, {"brokerName": "broker-a"})


@pytest.mark.parametrize("value", ["one", "-1", "1.5"])
def test_a_non_numeric_broker_id_is_a_start_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KROCKET_BROKER_ID", value)
    with pytest.raises(ConfigError, match="whole number"):
        load_broker_config(None, {"brokerName": "broker-a"})


def test_a_numeric_broker_id_and_an_unset_one_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KROCKET_BROKER_ID", "2")
    assert load_broker_config(None, {"brokerName": "broker-a"}).broker_id == 2
    monkeypatch.delenv("KROCKET_BROKER_ID")
    assert load_broker_config(None, {"brokerName": "broker-a"}).broker_id == 0
