"""Receipt handles: what a client acks a pop delivery by; anything a krocket broker did not give out is refused."""

from __future__ import annotations

import pytest

from krocket.broker.pop.handle import HANDLE_VERSION, MAX_HANDLE_LENGTH, InvalidReceiptHandle, ReceiptHandle
from krocket.common.errors import MessageIllegalError

HANDLE = ReceiptHandle("%RETRY%G_T", 3, 1234, 1_800_000_000_000, 30_000, "broker-a")


def test_encode_is_space_separated_fields_after_the_version() -> None:
    assert HANDLE.encode() == f"{HANDLE_VERSION} 1800000000000 30000 broker-a 3 1234 %RETRY%G_T"


def test_parse_of_encode_gives_the_same_handle() -> None:
    assert ReceiptHandle.parse(HANDLE.encode()) == HANDLE


def test_zero_numbers_round_trip() -> None:
    handle = ReceiptHandle("T", 0, 0, 0, 0, "b")
    assert ReceiptHandle.parse(handle.encode()) == handle


def test_due_ms_is_pop_time_plus_invisible_time() -> None:
    assert HANDLE.due_ms == 1_800_000_030_000


def test_invalid_receipt_handle_is_a_message_illegal_error() -> None:
    assert issubclass(InvalidReceiptHandle, MessageIllegalError)


def test_a_handle_of_exactly_the_maximum_length_parses() -> None:
    prefix = f"{HANDLE_VERSION} 1 2 b 0 0 "
    text = prefix + "T" * (MAX_HANDLE_LENGTH - len(prefix))
    assert len(text) == MAX_HANDLE_LENGTH
    assert ReceiptHandle.parse(text).topic == "T" * (MAX_HANDLE_LENGTH - len(prefix))


def test_a_handle_one_past_the_maximum_length_is_refused() -> None:
    prefix = f"{HANDLE_VERSION} 1 2 b 0 0 "
    text = prefix + "T" * (MAX_HANDLE_LENGTH + 1 - len(prefix))
    with pytest.raises(InvalidReceiptHandle, match="too long"):
        ReceiptHandle.parse(text)


def test_an_empty_handle_is_refused() -> None:
    with pytest.raises(InvalidReceiptHandle, match="empty"):
        ReceiptHandle.parse("")


@pytest.mark.parametrize(
    "text",
    [
        "k2 1 2 b 0 0 T",  # another version
        "K1 1 2 b 0 0 T",  # the version is case sensitive
        "1 2 b 0 0 T",  # no version
        "k1 1 2 b 0 0",  # a field missing
        "k1 1 2 b 0 0 T extra",  # a field too many
        "k1  1 2 b 0 0 T",  # a double space makes an eighth field
        "some opaque handle from another broker",
    ],
)
def test_a_handle_of_another_shape_or_version_is_refused(text: str) -> None:
    with pytest.raises(InvalidReceiptHandle, match="not given out by a krocket broker"):
        ReceiptHandle.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "k1 x 2 b 0 0 T",  # pop time
        "k1 1 2.5 b 0 0 T",  # invisible time
        "k1 1 2 b q 0 T",  # queue id
        "k1 1 2 b 0 0x10 T",  # offset
    ],
)
def test_a_handle_with_a_non_integer_number_is_malformed(text: str) -> None:
    with pytest.raises(InvalidReceiptHandle, match="malformed"):
        ReceiptHandle.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "k1 -1 2 b 0 0 T",
        "k1 1 -2 b 0 0 T",
        "k1 1 2 b -1 0 T",
        "k1 1 2 b 0 -5 T",
    ],
)
def test_a_handle_with_a_negative_number_is_malformed(text: str) -> None:
    with pytest.raises(InvalidReceiptHandle, match="malformed"):
        ReceiptHandle.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "k1 1 2  0 0 T",  # no broker name
        "k1 1 2 b 0 0 ",  # no topic
    ],
)
def test_a_handle_with_an_empty_broker_or_topic_is_malformed(text: str) -> None:
    with pytest.raises(InvalidReceiptHandle, match="malformed"):
        ReceiptHandle.parse(text)
