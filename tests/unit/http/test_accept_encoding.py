"""Accept-Encoding (RFC 9110 section 12.5.3) and the edge's normalised coding."""

from __future__ import annotations

import pytest
from hypothesis import given
from multidict import CIMultiDictProxy

from edgeproxy.http.accept_encoding import (
    TOKENS,
    choose,
    parse_accept_encoding,
    request_coding,
)
from tests.unit.http.helpers import Lines, grammar_text, hdrs, headers_st


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),  # absent is not empty (12.5.3)
        ("", {}),
        ("gzip", {"gzip": 1.0}),
        # 12.5.3 examples
        ("compress, gzip", {"compress": 1.0, "gzip": 1.0}),
        ("*", {"*": 1.0}),
        ("compress;q=0.5, gzip;q=1.0", {"compress": 0.5, "gzip": 1.0}),
        ("gzip;q=1.0, identity; q=0.5, *;q=0", {"gzip": 1.0, "identity": 0.5, "*": 0.0}),
        # codings are case-insensitive (8.4.1), "q" too (12.4.2)
        ("GZip;Q=0.3", {"gzip": 0.3}),
        # x-gzip is gzip (8.4.1.3)
        ("x-gzip", {"gzip": 1.0}),
        # OWS around ";" (12.4.2 weight) and empty list members (5.6.1)
        ("br ; q=0.7 ,, gzip", {"br": 0.7, "gzip": 1.0}),
        # qvalue grammar (12.4.2): at most 3 decimals, at most 1
        ("gzip;q=0.001", {"gzip": 0.001}),
        ("gzip;q=1.000", {"gzip": 1.0}),
        ("gzip;q=1.5, br", {"br": 1.0}),
        ("gzip;q=0.0001, br", {"br": 1.0}),
        ("gzip;q=, br", {"br": 1.0}),
        ("gzip;q=-1, br", {"br": 1.0}),
        # only the q parameter exists for codings: others make the member unusable
        ("gzip;level=9, br", {"br": 1.0}),
        ("gzip;q=0.5;x=1, br", {"br": 1.0}),
        # not a token
        ('"gzip", br', {"br": 1.0}),
        # the first occurrence counts
        ("gzip;q=0.2, gzip", {"gzip": 0.2}),
    ],
)
def test_parse_accept_encoding(value: str | None, expected: dict[str, float] | None) -> None:
    assert parse_accept_encoding(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # absent: identity (a documented choice; 12.5.3 would allow any coding)
        (None, "identity"),
        # empty: "does not want any content coding" (12.5.3)
        ("", "identity"),
        ("gzip", "gzip"),
        ("br", "br"),
        # equal qvalues: br is preferred
        ("gzip, deflate, br", "br"),
        ("br;q=1, gzip", "br"),
        ("GZIP;Q=0.8, br;q=0.8", "br"),
        # the highest non-zero qvalue wins (12.5.3)
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("gzip;q=0.5, br;q=0.9", "br"),
        # q=0 is "not acceptable" (12.4.2)
        ("gzip;q=0", "identity"),
        ("br;q=0, gzip", "gzip"),
        # "*" matches any coding not listed (12.5.3)
        ("*", "br"),
        ("br;q=0, *", "gzip"),
        ("*;q=0, gzip", "gzip"),
        ("*;q=0", "identity"),
        # codings we can't produce don't count
        ("deflate, compress", "identity"),
        ("zstd;q=1, gzip;q=0.1", "gzip"),
        # identity explicitly preferred to compression
        ("identity, gzip;q=0.5", "identity"),
        ("identity;q=0.5, gzip", "gzip"),
        # identity;q=0 with nothing producible: still identity (12.5.3 fallback)
        ("identity;q=0", "identity"),
        ("x-gzip", "gzip"),
    ],
)
def test_choose(value: str | None, expected: str) -> None:
    assert choose(parse_accept_encoding(value)) == expected


def test_choose_among_available_only() -> None:
    # Without the brotli package, br is not producible: gzip, or identity.
    assert choose(parse_accept_encoding("br, gzip;q=0.5"), available=("gzip",)) == "gzip"
    assert choose(parse_accept_encoding("br"), available=("gzip",)) == "identity"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], "identity"),
        ([("Accept-Encoding", "gzip, deflate, br")], "br"),
        # field lines are combined (RFC 9110 section 5.3)
        ([("Accept-Encoding", "gzip;q=0.5"), ("accept-encoding", "br;q=0.4")], "gzip"),
        # the client asked intermediaries not to transform (RFC 9111 section 5.2.1.6)
        ([("Accept-Encoding", "gzip"), ("Cache-Control", "no-transform")], "identity"),
        ([("Accept-Encoding", "gzip"), ("Cache-Control", "max-age=0, No-Transform")], "identity"),
        ([("Accept-Encoding", "gzip"), ("Cache-Control", "no-cache")], "gzip"),
    ],
)
def test_request_coding(lines: Lines, expected: str) -> None:
    assert request_coding(hdrs(lines)) == expected


@given(grammar_text)
def test_parse_never_raises(value: str) -> None:
    parsed = parse_accept_encoding(value)
    assert parsed is not None
    assert all(0.0 <= q <= 1.0 for q in parsed.values())
    assert choose(parsed) in TOKENS


@given(headers_st)
def test_request_coding_is_always_a_token(request: CIMultiDictProxy[str]) -> None:
    assert request_coding(request) in TOKENS
