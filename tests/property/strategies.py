"""Hypothesis strategies over what a client may send: topics, property dicts, bodies, flags, sysFlags."""

from __future__ import annotations

from hypothesis import strategies as st

from krocket.common.message import NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR

# Property text a producer may use: any unicode but the two separators and lone surrogates.
allowed_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=NAME_VALUE_SEPARATOR + PROPERTY_SEPARATOR),
    max_size=20,
)
allowed_properties = st.dictionaries(allowed_text.filter(bool), allowed_text, max_size=6)
# Anything a careless or hostile producer could put in a property: separators and lone surrogates included.
any_text = st.text(st.sampled_from(["a", "ü", "✓", "\x01", "\x02", "\ud800", " ", "\x00"]), max_size=8) | st.text(
    max_size=8
)
any_properties = st.dictionaries(any_text, any_text, max_size=5)
topics = st.text(st.sampled_from("abcXYZ019-_%|"), min_size=1, max_size=40)
bodies = st.binary(max_size=3000)
int32s = st.integers(-(2**31), 2**31 - 1)
sys_flags = st.sampled_from([0, 0x1, 0x2, 0x4, 0x8, 0xC, 0x10, 0x20, 0x30, 0x40, 0x80, 0x101, 0x301, -1]) | st.integers(
    -(2**31), 2**31 - 1
)
