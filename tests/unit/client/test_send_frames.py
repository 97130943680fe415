"""The pre-encoded send frame decodes to exactly what the RemotingCommand path sends (and is the same bytes)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from krocket.client.broker_api import send_command
from krocket.client.send_frames import SendFrameTemplate, json_string, properties_json, properties_text
from krocket.common.codes import RequestCode
from krocket.common.headers import SendMessageHeader
from krocket.common.message import decode_properties, encode_properties
from krocket.common.remoting.command import RemotingCommand, decode_frame, encode_parts

INT32 = st.integers(-(2**31), 2**31 - 1)
# Property text as the client allows it: no \x01/\x02 (the separators) and no lone surrogates.
PROP_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x01\x02"), max_size=40)
NAMES = st.from_regex(r"[%|a-zA-Z0-9_-]{1,40}", fullmatch=True)


def todays_frame(
    group: str,
    topic: str,
    opaque: int,
    queue_id: int,
    sys_flag: int,
    born: int,
    flag: int,
    props: dict[str, str],
    body: bytes,
    batch: bool = False,
) -> bytes:
    """The frame as Producer._header + broker_api.send_command + encode_parts build it."""
    header = SendMessageHeader(
        producer_group=group,
        topic=topic,
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=queue_id,
        sys_flag=sys_flag,
        born_timestamp=born,
        flag=flag,
        properties=encode_properties(props).decode(),
        reconsume_times=0,
        unit_mode=False,
        batch=batch,
    )
    cmd = send_command(header, body, batch)
    cmd.opaque = opaque
    head, tail = encode_parts(cmd)
    return head + tail


def template_frame(
    group: str,
    topic: str,
    opaque: int,
    queue_id: int,
    sys_flag: int,
    born: int,
    flag: int,
    props: dict[str, str],
    body: bytes,
    batch: bool = False,
) -> bytes:
    template = SendFrameTemplate(group, topic, batch)
    return template.head(opaque, queue_id, sys_flag, born, flag, properties_json(props), len(body)) + body


def decoded(frame: bytes) -> RemotingCommand:
    (length,) = struct.unpack_from(">i", frame)
    assert length == len(frame) - 4
    return decode_frame(frame[4:])


def assert_same_command(a: RemotingCommand, b: RemotingCommand) -> None:
    assert (a.code, a.opaque, a.flag, a.language, a.version, a.serialize, a.remark) == (
        b.code,
        b.opaque,
        b.flag,
        b.language,
        b.version,
        b.serialize,
        b.remark,
    )
    assert a.ext_fields == b.ext_fields
    assert list(a.ext_fields) == list(b.ext_fields)
    assert a.body == b.body


def test_plain_send_frame_is_todays_frame() -> None:
    props = {"TAGS": "created", "KEYS": "42 43", "UNIQ_KEY": "7F0000010001", "WAIT": "true"}
    args = ("orders-producer", "orders", 17, 3, 0, 1_733_000_000_123, 0, props, b"order 42")
    frame = template_frame(*args)
    assert frame == todays_frame(*args)
    cmd = decoded(frame)
    assert cmd.code == RequestCode.SEND_MESSAGE_V2 and cmd.opaque == 17 and cmd.body == b"order 42"
    header = SendMessageHeader.from_fields(cmd.ext_fields)
    assert header.queue_id == 3 and header.born_timestamp == 1_733_000_000_123 and header.topic == "orders"
    assert decode_properties(header.properties) == props


def test_batch_frame_and_percent_signs_in_names() -> None:
    args = ("%grp%d%s", "%RETRY%grp", 2**31 - 1, -1, 1, 0, -(2**31), {"WAIT": "true"}, b"\x00" * 5)
    assert template_frame(*args, batch=True) == todays_frame(*args, batch=True)
    cmd = decoded(template_frame(*args, batch=True))
    assert cmd.code == RequestCode.SEND_BATCH_MESSAGE and cmd.ext_fields["m"] == "true"
    assert cmd.ext_fields["a"] == "%grp%d%s" and cmd.ext_fields["b"] == "%RETRY%grp"


def test_escaping_of_quotes_backslashes_controls_and_non_ascii() -> None:
    props = {
        'quote"d': 'va"lue',
        "back\\slash": "C:\\path\\",
        "tab\tnew\nline": "\x00\x1f\x7f",
        "ümlaut": "日本語 🚀",
        "TAGS": "\u2028\u2029",
        "UNIQ_KEY": "X",
    }
    args = ("g", "t", 1, 0, 0, 0, 0, props, b"b")
    frame = template_frame(*args)
    assert frame == todays_frame(*args)
    assert decode_properties(decoded(frame).ext_fields["i"]) == props
    assert b"\\u0001" in frame and b"\\u0002" in frame
    header_json = frame[8:-1]  # after the length prefix, before the 1-byte body
    assert b"\x01" not in header_json and b"\x02" not in header_json  # the separators are escaped, never raw
    assert "日本語".encode() in header_json  # non-ASCII as UTF-8


def test_no_properties() -> None:
    no_props: dict[str, str] = {}
    args = ("g", "t", 5, 2, 0, 9, 0, no_props, b"b")
    assert template_frame(*args) == todays_frame(*args)
    assert decoded(template_frame(*args)).ext_fields["i"] == ""


@settings(max_examples=300, deadline=None)
@given(
    group=NAMES,
    topic=NAMES,
    opaque=INT32,
    queue_id=INT32,
    sys_flag=INT32,
    born=st.integers(-(2**63), 2**63 - 1),
    flag=INT32,
    props=st.dictionaries(PROP_TEXT.filter(bool), PROP_TEXT, max_size=6),
    body=st.binary(min_size=1, max_size=64),
    batch=st.booleans(),
)
def test_any_send_decodes_to_what_todays_path_sends(
    group: str,
    topic: str,
    opaque: int,
    queue_id: int,
    sys_flag: int,
    born: int,
    flag: int,
    props: dict[str, str],
    body: bytes,
    batch: bool,
) -> None:
    args = (group, topic, opaque, queue_id, sys_flag, born, flag, props, body, batch)
    ours, theirs = template_frame(*args), todays_frame(*args)
    assert_same_command(decoded(ours), decoded(theirs))
    assert ours == theirs
    assert decode_properties(decoded(ours).ext_fields["i"]) == props


def test_a_plain_messages_properties_take_the_shortcut_with_the_same_bytes() -> None:
    plain = {"UNIQ_KEY": "7F00000100002A9F0000000000001234", "WAIT": "true"}
    assert properties_json(plain) == json_string(properties_text(plain))
    for near in (
        {"WAIT": "true", "UNIQ_KEY": "ABC"},  # another order
        {"UNIQ_KEY": 'a"b', "WAIT": "true"},  # an id that needs escaping
        {"UNIQ_KEY": "日本", "WAIT": "true"},  # non-ASCII
        {"UNIQ_KEY": "ABC", "WAIT": "false"},
        {"UNIQ_KEY": "ABC", "TAGS": "true"},
    ):
        assert properties_json(near) == json_string(properties_text(near)), near


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(PROP_TEXT.filter(bool), PROP_TEXT, max_size=4), st.booleans())
def test_properties_json_is_the_escaped_properties_text(props: dict[str, str], plain_order: bool) -> None:
    if plain_order:
        props = {"UNIQ_KEY": next(iter(props.values()), "X"), "WAIT": "true"}
    assert properties_json(props) == json_string(properties_text(props))
