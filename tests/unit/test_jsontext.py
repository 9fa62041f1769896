"""jsontext.py: orjson's speed, json's reach, for what the stores keep."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edgeproxy import jsontext

# Strings as field values arrive: any code point, lone surrogates included
# (surrogateescape keeps an origin's undecodable bytes as \udc80-\udcff).
TEXT = st.text(st.characters(codec=None, categories=None))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too: orjson refuses them
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@given(VALUES)
@example("\udc80")
@example(2**64)
@example({"fields": [["ETag", '"\udcff"'], ["X", "caf\u00e9"]]})
def test_dumps_reads_back_as_json_reads_json(value: Any) -> None:
    text = jsontext.dumps(value)
    assert jsontext.loads(text) == json.loads(compact(value))
    assert json.loads(text) == json.loads(compact(value))  # and json reads ours alike


@given(VALUES)
@example("\udc80")
@example(1e16)
@example(-(2**63) - 1)  # orjson reads it as a float
@example([2**64])
def test_loads_reads_what_json_wrote(value: Any) -> None:
    for text in (compact(value), json.dumps(value)):
        assert jsontext.loads(text) == json.loads(text)
        assert jsontext.loads(text.encode("utf-8", "surrogatepass")) == json.loads(text)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"t":-Infinity}'])
def test_loads_takes_the_literals_json_takes(text: str) -> None:
    got, want = jsontext.loads(text), json.loads(text)
    assert json.dumps(got) == json.dumps(want)
    assert text != "NaN" or math.isnan(got)


@pytest.mark.parametrize("text", ["", "{", "[1,]", "nul", '{"a":1}x', b"\xff"])
def test_loads_refuses_what_json_refuses(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsontext.loads(text)


VARY_IDS = st.lists(st.lists(st.none() | TEXT, max_size=4), min_size=2, max_size=2)


@given(VARY_IDS)
@example([["Accept-Encoding"], ["gzip, br"]])
@example([["X"], ['"q\\"\x7f']])  # DEL: json escapes it, orjson does not
@example([["X"], ["\x1f\t\n"]])
@example([["X"], ["caf\u00e9", None, "\udc80"]])
def test_dumps_exact_is_json_text_byte_for_byte(ident: list[list[str | None]]) -> None:
    assert jsontext.dumps_exact(ident) == compact(ident)
