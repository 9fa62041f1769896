"""Vary and the secondary cache key (RFC 9111 section 4.1, RFC 9110 section 12.5.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from multidict import CIMultiDictProxy

from edgeproxy.http.vary import STAR, matches, normalise, secondary_key, vary_names
from tests.unit.http.helpers import Lines, hdrs, headers_st


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], ()),
        ([("Vary", "")], ()),
        ([("Vary", "Accept-Encoding")], ("accept-encoding",)),
        # field names are case-insensitive (RFC 9110 5.1); order and repeats
        # of the list carry no meaning, so one canonical form
        ([("Vary", "Accept-Language, accept-encoding")], ("accept-encoding", "accept-language")),
        ([("Vary", "accept-encoding, ACCEPT-ENCODING")], ("accept-encoding",)),
        # OWS and empty members (RFC 9110 5.6.1.2), across field lines (5.3)
        ([("Vary", " ,Accept ,, "), ("vary", "\tCookie")], ("accept", "cookie")),
        # "*" always fails to match (4.1), whatever else is listed
        ([("Vary", "*")], STAR),
        ([("Vary", "Accept, *")], STAR),
        ([("Vary", "Accept"), ("Vary", " * ")], STAR),
    ],
)
def test_vary_names(lines: Lines, expected: tuple[str, ...]) -> None:
    assert vary_names(hdrs(lines)) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # absent and present-but-empty are different (4.1)
        ([], None),
        ([("Accept-Encoding", "")], ""),
        ([("Accept-Encoding", "  ")], ""),
        # 4.1: adding or removing whitespace where the syntax allows it
        ([("Accept-Encoding", "gzip,br")], "gzip,br"),
        ([("Accept-Encoding", " gzip ,\tbr ")], "gzip,br"),
        ([("Accept-Encoding", "gzip, , br,")], "gzip,br"),
        # 4.1: combining multiple field lines with the same name
        ([("Accept-Encoding", "gzip"), ("accept-encoding", "br")], "gzip,br"),
        # whitespace inside a member is content, not OWS
        ([("Accept-Language", "en; q=0.5")], "en; q=0.5"),
        # a quoted string is one member: its commas and spaces are content
        ([("X-Q", '"a , b", c')], '"a , b",c'),
        # order is kept (significant for some fields), case too
        ([("Accept-Encoding", "br, GZIP")], "br,GZIP"),
    ],
)
def test_normalise(lines: list[tuple[str, str]], expected: str | None) -> None:
    name = lines[0][0] if lines else "Accept-Encoding"
    assert normalise(hdrs(lines), name) == expected


def test_secondary_key_absent_vs_empty() -> None:
    names = ("accept", "accept-language")
    assert secondary_key(hdrs(), names) == (None, None)
    assert secondary_key(hdrs({"Accept": ""}), names) == ("", None)
    assert secondary_key(hdrs({"accept-language": "fr"}), names) == (None, "fr")
    assert secondary_key(hdrs(), ()) == ()
    assert secondary_key(hdrs({"Accept": "x"}), STAR) is None


@pytest.mark.parametrize(
    ("stored_request", "presented", "expected"),
    [
        # 4.1: equivalent after whitespace and line combining
        ({"Accept-Language": "en, fr"}, [("Accept-Language", "en,fr")], True),
        (
            {"Accept-Language": "en, fr"},
            [("accept-language", "en"), ("Accept-Language", "fr")],
            True,
        ),
        ({"Accept-Language": "en"}, [("Accept-Language", "fr")], False),
        # 4.1: an absent field only matches an absent field
        ({}, [], True),
        ({}, [("Accept-Language", "")], False),
        ({"Accept-Language": ""}, [], False),
        ({"Accept-Language": ""}, [("Accept-Language", " ")], True),
        # fields not nominated by Vary do not matter
        ({"Accept-Language": "en"}, [("Accept-Language", "en"), ("Cookie", "a=1")], True),
    ],
)
def test_matches(stored_request: dict[str, str], presented: Lines, expected: bool) -> None:
    names = vary_names(hdrs({"Vary": "Accept-Language"}))
    stored_key = secondary_key(hdrs(stored_request), names)
    assert stored_key is not None
    assert matches(hdrs(presented), names, stored_key) is expected


@pytest.mark.parametrize(
    ("stored_request", "presented", "key", "expected"),
    [
        # Accept-Encoding is keyed by the edge's normalised coding
        # (http/accept_encoding.py; RFC 9110 section 12.5.3 for the choice):
        # spellings of one choice share a variant (RFC 9111 section 4.1).
        ({"Accept-Encoding": "gzip, deflate, br"}, [("Accept-Encoding", "br;q=1, gzip")],
         "br", True),
        ({"Accept-Encoding": "gzip, br"}, [("accept-encoding", "gzip"), ("Accept-Encoding", "br")],
         "br", True),
        ({"Accept-Encoding": "gzip, deflate"}, [("Accept-Encoding", "x-gzip")], "gzip", True),
        ({"Accept-Encoding": "gzip"}, [("Accept-Encoding", "br")], "gzip", False),
        ({"Accept-Encoding": "gzip;q=1, br;q=0.5"}, [("Accept-Encoding", "br")], "gzip", False),
        # absent, empty and nothing producible are all "identity" (12.5.3)
        ({}, [("Accept-Encoding", "")], "identity", True),
        ({"Accept-Encoding": "deflate"}, [], "identity", True),
        ({"Accept-Encoding": "gzip;q=0"}, [("Accept-Encoding", "identity")], "identity", True),
        # a no-transform request is keyed identity (RFC 9111 section 5.2.1.6)
        ({"Accept-Encoding": "gzip", "Cache-Control": "no-transform"}, [], "identity", True),
        ({}, [("Accept-Encoding", "gzip")], "identity", False),
    ],
)  # fmt: skip
def test_accept_encoding_keyed_by_normalised_coding(
    stored_request: dict[str, str], presented: Lines, key: str, expected: bool
) -> None:
    names = vary_names(hdrs({"Vary": "Accept-Encoding, Accept-Language"}))
    stored_key = secondary_key(hdrs(stored_request), names)
    assert stored_key == (key, None)
    assert matches(hdrs(presented), names, stored_key) is expected


def test_star_never_matches() -> None:
    # 4.1: "A Vary header field value containing a member '*' always fails to match"
    assert not matches(hdrs(), STAR, ())
    assert not matches(hdrs(), STAR, ("*",))


@given(headers_st, headers_st)
def test_vary_total(response: CIMultiDictProxy[str], request: CIMultiDictProxy[str]) -> None:
    names = vary_names(response)
    assert names == STAR or (list(names) == sorted(set(names)) and all(names))
    key = secondary_key(request, names)
    if names == STAR:
        assert key is None
    else:
        assert key is not None and len(key) == len(names)
        # a request always selects the response stored under its own key
        assert matches(request, names, key)
