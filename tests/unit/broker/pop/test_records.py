"""The pop log's records: JSON bodies that round-trip, and anything else refused as MessageIllegalError."""

from __future__ import annotations

import json

import pytest

from krocket.broker.pop.records import ACK, CHECKPOINT, REWIND, PopRecord
from krocket.common.errors import MessageIllegalError


def checkpoint(**changes: object) -> PopRecord:
    fields: dict[str, object] = dict(
        kind=CHECKPOINT,
        group="G",
        topic="T",
        queue_id=2,
        offsets=[10, 11, 12],
        pop_ms=1_000,
        invisible_ms=30_000,
        attempts=[1, 2, 3],
        client_id="client-1",
        auto_renew=True,
        first_pop_ms=500,
    )
    fields.update(changes)
    return PopRecord(**fields)  # type: ignore[arg-type]


def test_checkpoint_round_trips_every_field() -> None:
    record = checkpoint()
    assert PopRecord.decode(record.encode()) == record


def test_checkpoint_encodes_its_fields_compactly() -> None:
    raw = json.loads(checkpoint().encode())
    assert raw == {
        "k": "ck",
        "g": "G",
        "t": "T",
        "q": 2,
        "o": [10, 11, 12],
        "p": 1_000,
        "i": 30_000,
        "a": [1, 2, 3],
        "c": "client-1",
        "r": True,
        "f": 500,
    }
    assert b" " not in checkpoint().encode()


def test_checkpoint_without_a_separate_first_pop_time_leaves_it_out() -> None:
    for first in (0, 1_000):  # none, or the same as the pop time
        body = checkpoint(first_pop_ms=first).encode()
        assert "f" not in json.loads(body)
        assert PopRecord.decode(body).first_pop_ms == 0


def test_ack_round_trips() -> None:
    record = PopRecord(ACK, "G", "%RETRY%G_T", 0, [7], pop_ms=1_234)
    assert PopRecord.decode(record.encode()) == record


def test_ack_encodes_only_what_settling_needs() -> None:
    record = PopRecord(ACK, "G", "T", 0, [7], pop_ms=1_234, invisible_ms=9, attempts=[4], client_id="c")
    assert json.loads(record.encode()) == {"k": "ack", "g": "G", "t": "T", "q": 0, "o": [7], "p": 1_234}


def test_rewind_round_trips_without_attempts() -> None:
    record = PopRecord(REWIND, "G", "T", 1, [5, 6])
    assert PopRecord.decode(record.encode()) == record


def test_rewind_has_no_pop_time() -> None:
    raw = json.loads(PopRecord(REWIND, "G", "T", 1, [5, 6], pop_ms=99).encode())
    assert "p" not in raw
    assert raw["k"] == "rw" and raw["o"] == [5, 6]


def test_rewind_round_trips_its_attempts() -> None:
    record = PopRecord(REWIND, "G", "T", 1, [5, 6], attempts=[2, 3])
    assert PopRecord.decode(record.encode()).attempts == [2, 3]


def test_checkpoint_with_fewer_attempts_than_offsets_gets_attempts_of_one() -> None:
    body = json.dumps({"k": "ck", "g": "G", "t": "T", "q": 0, "o": [1, 2, 3], "p": 5, "a": [4]}).encode()
    assert PopRecord.decode(body).attempts == [1, 1, 1]


def test_checkpoint_with_more_attempts_than_offsets_gets_attempts_of_one() -> None:
    body = json.dumps({"k": "ck", "g": "G", "t": "T", "q": 0, "o": [1], "p": 5, "a": [4, 5]}).encode()
    assert PopRecord.decode(body).attempts == [1]


def test_checkpoint_without_attempts_gets_attempts_of_one() -> None:
    body = json.dumps({"k": "ck", "g": "G", "t": "T", "q": 0, "o": [8, 9], "p": 5}).encode()
    assert PopRecord.decode(body).attempts == [1, 1]


def test_decode_fills_optional_fields_with_defaults() -> None:
    record = PopRecord.decode(json.dumps({"k": "ack", "g": "G", "t": "T", "q": 3, "o": [1]}).encode())
    assert record == PopRecord(ACK, "G", "T", 3, [1])


def test_decode_takes_numbers_given_as_strings() -> None:
    record = PopRecord.decode(json.dumps({"k": "ack", "g": "G", "t": "T", "q": "3", "o": ["4"], "p": "5"}).encode())
    assert (record.queue_id, record.offsets, record.pop_ms) == (3, [4], 5)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"ck"',
        b"null",
        b"42",
        b"{}",
    ],
)
def test_decode_of_garbage_raises_message_illegal(body: bytes) -> None:
    with pytest.raises(MessageIllegalError, match="not a pop log record"):
        PopRecord.decode(body)


@pytest.mark.parametrize("missing", ["k", "g", "t", "q", "o"])
def test_decode_without_a_required_key_raises_message_illegal(missing: str) -> None:
    raw = {"k": "ck", "g": "G", "t": "T", "q": 0, "o": [1], "p": 5}
    del raw[missing]
    with pytest.raises(MessageIllegalError):
        PopRecord.decode(json.dumps(raw).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {"k": "nack"},  # an unknown kind
        {"q": "zero"},
        {"q": None},
        {"o": 5},  # not a list
        {"o": ["x"]},
        {"p": "soon"},
        {"i": [1]},
        {"a": None},
        {"a": ["x"]},
        {"f": "later"},
    ],
)
def test_decode_with_a_bad_value_raises_message_illegal(changes: dict[str, object]) -> None:
    raw: dict[str, object] = {"k": "ck", "g": "G", "t": "T", "q": 0, "o": [1], "p": 5}
    raw.update(changes)
    with pytest.raises(MessageIllegalError):
        PopRecord.decode(json.dumps(raw).encode())
