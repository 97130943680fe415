"""The send checks (krocket.common.message_checks) and the record's IPv4 host form."""

from __future__ import annotations

import zlib

import pytest

from krocket.common.codes import ResponseCode
from krocket.common.message import encode_properties
from krocket.common.message_checks import (
    InvalidMessageError,
    TransactionNotSupportedError,
    check_compressed_body,
    check_int32,
    check_properties,
    check_raw_properties,
    check_sys_flag,
    check_transaction,
)
from krocket.common.record import record_host


@pytest.mark.parametrize(("sent", "stored"), [(0, 0), (0x1, 0x1), (0x2, 0x2), (0x10, 0), (0x20, 0), (0x33, 0x3)])
def test_allowed_sys_flags_are_stored_without_the_ipv6_host_bits(sent: int, stored: int) -> None:
    assert check_sys_flag(sent) == stored


def test_zlib_compression_type_bits_ride_with_the_compressed_bit() -> None:
    assert check_sys_flag(0x301) == 0x301
    for bad in (0x300, 0x101, 0x201, 0x701):
        with pytest.raises(InvalidMessageError):
            check_sys_flag(bad)


@pytest.mark.parametrize("sys_flag", [0x40, 0x80, 0x800, 1 << 30, -1, -(2**31)])
def test_other_sys_flag_bits_are_illegal(sys_flag: int) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        check_sys_flag(sys_flag)
    assert caught.value.code == ResponseCode.MESSAGE_ILLEGAL and caught.value.field == "sysFlag"


@pytest.mark.parametrize("sys_flag", [0x8, 0xC, 0x9, 0xD])
def test_commit_and_rollback_types_on_a_send_are_refused_with_no_permission(sys_flag: int) -> None:
    with pytest.raises(TransactionNotSupportedError) as caught:
        check_sys_flag(sys_flag)
    assert caught.value.code == ResponseCode.NO_PERMISSION
    assert "END_TRANSACTION" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("sys_flag", [0x4, 0x5, 0x14])
def test_the_prepared_type_passes_the_sys_flag_check(sys_flag: int) -> None:
    assert check_sys_flag(sys_flag) == sys_flag & ~0x30


def test_a_half_message_is_tran_msg_true_with_a_producer_group_and_the_prepared_type_needs_them() -> None:
    half = {"TRAN_MSG": "true", "PGROUP": "g"}
    assert check_transaction(0x4, half) is True
    assert check_transaction(0x5, half) is True
    assert check_transaction(0x0, half) is True  # TRAN_MSG decides, as Apache RocketMQ's broker does
    assert check_transaction(0x0, {"TRAN_MSG": "false"}) is False
    assert check_transaction(0x1, {}) is False
    for sys_flag, props, field in [
        (0x4, {}, "sysFlag"),
        (0x4, {"TRAN_MSG": "true"}, "properties"),
        (0x4, {"TRAN_MSG": "true", "PGROUP": ""}, "properties"),
        (0x0, {"TRAN_MSG": "true"}, "properties"),
    ]:
        with pytest.raises(InvalidMessageError) as caught:
            check_transaction(sys_flag, props)
        assert caught.value.field == field and caught.value.code == ResponseCode.MESSAGE_ILLEGAL
    with pytest.raises(InvalidMessageError, match="batch"):
        check_transaction(0x4, {}, batch=True)
    assert check_transaction(0x0, {}, batch=True) is False


def test_raw_properties_that_encode_back_are_decoded() -> None:
    props = {"TAGS": "a", "KEYS": "k1 k2", "empty": "", "ünï": "cödé ✓"}
    raw = encode_properties(props)
    assert check_raw_properties(raw) == props
    assert check_raw_properties(raw.decode()) == props
    assert check_raw_properties(raw.decode()[:-1]) == props  # without the last separator, as some clients send
    assert check_raw_properties("") == {}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("a\x01b\x01c\x02", "property 'a'"),
        ("k\x01v\x02k\x01w\x02", "property 'k'"),
        ("\x01v\x02", "property #0"),
        ("a\x01b\x02novalue\x02", "property 'novalue'"),
        ("a\x01b\x02\x02c\x01d\x02", "property #1"),
        ("\x02", "property #0"),
    ],
)
def test_raw_properties_that_would_not_decode_back_are_refused_naming_the_pair(raw: str, named: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        check_raw_properties(raw)
    assert caught.value.field == named


def test_raw_properties_must_be_utf8_and_fit_the_record() -> None:
    with pytest.raises(InvalidMessageError, match="UTF-8"):
        check_raw_properties(b"k\x01\xff\x02")
    with pytest.raises(InvalidMessageError, match="UTF-8"):
        check_raw_properties("k\x01\ud800\x02")
    with pytest.raises(InvalidMessageError, match="32767"):
        check_raw_properties("k\x01" + "v" * 40000 + "\x02")


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"k5": "x\x02DELAY\x013"}, "property 'k5'"),
        ({"a\x01b": "c"}, "property 'a\\x01b'"),
        ({"a\x02b": "c"}, "property 'a\\x02b'"),
        ({"k": "v\x01"}, "property 'k'"),
        ({"": "v"}, "property ''"),
        ({"k": "\udc80"}, "property 'k'"),
        ({"k": "v" * 40000}, "properties"),
    ],
)
def test_client_properties_with_separators_or_bad_text_are_refused(props: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_properties(props)
    assert getattr(caught.value, "field", None) == field


def test_compressed_bodies_must_inflate_whole_within_the_limit() -> None:
    assert check_compressed_body(zlib.compress(b"abc" * 100), 300) == 300
    with pytest.raises(InvalidMessageError, match="does not inflate"):
        check_compressed_body(b"not zlib at all", 1000)
    with pytest.raises(InvalidMessageError, match="more than 299"):
        check_compressed_body(zlib.compress(b"abc" * 100), 299)
    with pytest.raises(InvalidMessageError, match="incomplete"):
        check_compressed_body(zlib.compress(b"abc" * 100)[:-3], 1000)
    with pytest.raises(InvalidMessageError, match="follow the zlib stream"):
        check_compressed_body(zlib.compress(b"abc") + b"\x00", 1000)
    bomb = zlib.compress(bytes(64 * 1024 * 1024), 9)  # 64 MiB of zeros in ~64 KB: inflated only up to the bound
    with pytest.raises(InvalidMessageError, match="more than"):
        check_compressed_body(bomb, 4 * 1024 * 1024)


def test_int32_fields() -> None:
    assert check_int32("flag", -(2**31)) == -(2**31)
    with pytest.raises(InvalidMessageError, match="flag"):
        check_int32("flag", 2**31)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("127.0.0.1:5000", bytes([127, 0, 0, 1, 0, 0, 0x13, 0x88])),
        (("10.1.2.3", 1), bytes([10, 1, 2, 3, 0, 0, 0, 1])),
        ("::ffff:10.1.2.3:7", bytes([10, 1, 2, 3, 0, 0, 0, 7])),
        (("::1", 9, 0, 0), bytes([127, 0, 0, 1, 0, 0, 0, 9])),
        ("2001:db8::1:80", bytes([0, 0, 0, 0, 0, 0, 0, 80])),
        ("fe80::1%eth0:80", bytes([0, 0, 0, 0, 0, 0, 0, 80])),
        ("?", bytes(8)),
    ],
)
def test_record_host_is_always_the_ipv4_form(peer: str | tuple, host: bytes) -> None:
    assert record_host(peer) == host
