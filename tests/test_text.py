"""Whole text: where a JSON value holds a lone UTF-16 surrogate, and the cheap look at raw JSON before it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbrelay.text import lone_surrogate, may_hold_surrogate

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"a": "x\ud800"}, "a holds '\\ud800'"),
        ({"p": {"n": [1, "ok", "\udfff"]}}, "p.n[2] holds '\\udfff'"),
        ([{"k\udc80": 1}], "a key of [0] holds '\\udc80'"),
        ({"k\ud83d": 1}, "a key of the top level holds '\\ud83d'"),
        ("\ud800", "the text holds '\\ud800'"),
    ],
)
def test_names_where_a_lone_surrogate_is(value: Any, found: str) -> None:
    assert lone_surrogate(value) == found


def test_deep_nesting_is_no_recursion() -> None:
    value: Any = "\ud800"
    for _ in range(5000):
        value = [value]
    assert lone_surrogate(value) is not None


@given(json_values)
def test_text_that_encodes_as_utf8_is_whole(value: Any) -> None:
    encodes = True
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        encodes = False
    assert (lone_surrogate(value) is None) == encodes


@given(json_values)
def test_the_raw_look_misses_no_surrogate(value: Any) -> None:
    """Whatever a writer makes of a value that holds one, escaped or as bytes, the raw look flags it."""
    if lone_surrogate(value) is None:
        return
    escaped = json.dumps(value)  # ensure_ascii: "\\ud800"
    assert may_hold_surrogate(escaped) and may_hold_surrogate(escaped.encode())
    raw = json.dumps(value, ensure_ascii=False)
    assert may_hold_surrogate(raw) and may_hold_surrogate(raw.encode("utf-8", "surrogatepass"))


def test_a_pair_of_escapes_is_one_character() -> None:
    document = '{"s": "\\ud83d\\ude00"}'
    assert may_hold_surrogate(document)  # looked at closer: the decoded value decides
    assert lone_surrogate(json.loads(document)) is None
    assert not may_hold_surrogate('{"s": "\\u00e9 \U0001f600"}'.encode())
