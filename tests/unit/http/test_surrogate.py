"""Surrogate keys from `Surrogate-Key` (Fastly, space-separated) and `Cache-Tag`
(Cloudflare, comma-separated). No RFC defines them; the list syntax follows
RFC 9110 section 5.6.1 (OWS and empty members dropped) and section 5.3
(repeated field lines combine)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from edgeproxy.http.surrogate import (
    MAX_KEY_LENGTH,
    MAX_KEYS,
    is_surrogate_key,
    surrogate_keys,
)
from tests.unit.http.helpers import Lines, field_value, hdrs, headers_st

LONG = "k" * MAX_KEY_LENGTH


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], (), id="absent"),
        pytest.param([("Surrogate-Key", "")], (), id="empty"),
        pytest.param([("Surrogate-Key", "a b c")], ("a", "b", "c"), id="space-separated"),
        pytest.param([("Cache-Tag", "a,b, c")], ("a", "b", "c"), id="comma-separated"),
        pytest.param(
            [("Surrogate-Key", " \ta  ,, b\t ")], ("a", "b"), id="5.6.1-ows-and-empty-members"
        ),
        pytest.param(
            [("Surrogate-Key", "a b"), ("surrogate-key", "c")], ("a", "b", "c"), id="5.3-lines"
        ),
        pytest.param([("Surrogate-Key", "b a b a")], ("b", "a"), id="duplicates-first-kept"),
        pytest.param([("Surrogate-Key", "A a")], ("A", "a"), id="case-sensitive"),
        # Both fields, Surrogate-Key first (the `names` order), de-duplicated across them.
        pytest.param(
            [("Cache-Tag", "x,shared"), ("Surrogate-Key", "shared y")],
            ("shared", "y", "x"),
            id="both-fields",
        ),
        pytest.param(
            [("Surrogate-Key", "product-42 user/7 a:b;c=d")],
            ("product-42", "user/7", "a:b;c=d"),
            id="visible-ascii-kept",
        ),
        # Dropped whole, never truncated: a cut key could be someone else's.
        pytest.param([("Surrogate-Key", f"a {LONG}k b")], ("a", "b"), id="too-long-dropped"),
        pytest.param([("Surrogate-Key", f"{LONG}")], (LONG,), id="longest-kept"),
        pytest.param([("Surrogate-Key", "caf\u00e9 ok")], ("ok",), id="non-ascii-dropped"),
        pytest.param([("Surrogate-Key", "a\x00b c\x7f ok")], ("ok",), id="controls-dropped"),
        pytest.param([("Surrogate-Key", "a\r\nb")], (), id="crlf-inside-dropped"),
        pytest.param([("Other-Tag", "a")], (), id="other-fields-ignored"),
    ],
)
def test_surrogate_keys(lines: Lines, expected: tuple[str, ...]) -> None:
    assert surrogate_keys(hdrs(lines)) == expected


def test_names_choose_the_fields() -> None:
    h = hdrs([("Surrogate-Key", "a"), ("Cache-Tag", "b"), ("X-Tags", "c d")])
    assert surrogate_keys(h, ("x-tags",)) == ("c", "d")
    assert surrogate_keys(h, ("cache-tag",)) == ("b",)


def test_count_is_bounded() -> None:
    many = " ".join(f"t{i}" for i in range(MAX_KEYS + 50))
    keys = surrogate_keys(hdrs({"Surrogate-Key": many}))
    assert keys == tuple(f"t{i}" for i in range(MAX_KEYS))


def test_duplicates_do_not_use_up_the_bound() -> None:
    line = " ".join(["same"] * (MAX_KEYS * 2) + ["other"])
    assert surrogate_keys(hdrs({"Surrogate-Key": line})) == ("same", "other")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("product-42", True),
        ("a", True),
        (LONG, True),
        ("", False),
        (LONG + "k", False),
        ("a b", False),
        ("a,b", False),
        ("a\tb", False),
        ("\u00e9", False),
        ("\x7f", False),
    ],
)
def test_is_surrogate_key(value: str, ok: bool) -> None:
    assert is_surrogate_key(value) is ok


# Lines of the two fields the parser reads, with any text in them.
surrogate_headers = st.lists(
    st.tuples(st.sampled_from(["Surrogate-Key", "cache-tag", "CACHE-TAG"]), field_value),
    max_size=8,
).map(hdrs)


@given(st.one_of(headers_st, surrogate_headers))
def test_never_raises_and_output_is_well_formed(h: CIMultiDictProxy[str]) -> None:
    keys = surrogate_keys(h)
    assert len(keys) <= MAX_KEYS
    assert len(set(keys)) == len(keys)
    assert all(is_surrogate_key(k) for k in keys)


@given(st.lists(field_value, max_size=6))
def test_keys_survive_a_round_trip(values: list[str]) -> None:
    # What we parse, written back as one Surrogate-Key line, parses the same:
    # no key can contain a separator.
    keys = surrogate_keys(hdrs([("Surrogate-Key", v) for v in values]))
    assert surrogate_keys(hdrs({"Surrogate-Key": " ".join(keys)})) == keys
    assert surrogate_keys(hdrs({"Cache-Tag": ",".join(keys)})) == keys
