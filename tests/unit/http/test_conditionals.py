"""Preconditions against a stored response (RFC 9110 section 13, RFC 9111 section 4.3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from edgeproxy.http.conditionals import Precondition, evaluate, has_preconditions
from edgeproxy.http.dates import format_http_date
from tests.unit.http.helpers import Lines, hdrs, headers_st

PASS, NOT_MODIFIED, FAILED = Precondition.PASS, Precondition.NOT_MODIFIED, Precondition.FAILED

T = 1_800_000_000.0  # the stored response's Date / receipt time
LM = T - 1000.0  # its Last-Modified


def d(ts: float) -> str:
    return format_http_date(ts)


STRONG = {"ETag": '"v1"', "Last-Modified": d(LM)}
WEAK = {"ETag": 'W/"v1"', "Last-Modified": d(LM)}
NO_ETAG = {"Last-Modified": d(LM)}
NO_VALIDATORS: dict[str, str] = {}

CASES: list[tuple[str, str, Lines, Lines, Precondition]] = [
    # -- step 1: If-Match, strong comparison (13.1.1, 13.2.2 step 1) --------
    ("13.1.1 match", "GET", {"If-Match": '"v1"'}, STRONG, PASS),
    ("13.1.1 no match", "GET", {"If-Match": '"v2"'}, STRONG, FAILED),
    ("13.1.1 strong: weak request tag", "GET", {"If-Match": 'W/"v1"'}, STRONG, FAILED),
    ("13.1.1 strong: weak stored tag", "GET", {"If-Match": '"v1"'}, WEAK, FAILED),
    ("13.1.1 list member", "GET", {"If-Match": '"x", "v1"'}, STRONG, PASS),
    (
        "13.1.1 lines combine (5.3)",
        "GET",
        [("If-Match", '"x"'), ("If-Match", '"v1"')],
        STRONG,
        PASS,
    ),
    ("13.1.1 * with ETag", "GET", {"If-Match": "*"}, STRONG, PASS),
    (
        "13.1.1 * without ETag: a representation exists",
        "GET",
        {"If-Match": "*"},
        NO_VALIDATORS,
        PASS,
    ),
    ("13.1.1 no stored ETag", "GET", {"If-Match": '"v1"'}, NO_ETAG, FAILED),
    ("13.1.1 malformed: otherwise false", "GET", {"If-Match": "v1"}, STRONG, FAILED),
    ("13.1.1 empty list: otherwise false", "GET", {"If-Match": ""}, STRONG, FAILED),
    (
        "13.2.2 If-Match true continues to If-None-Match",
        "GET",
        {"If-Match": '"v1"', "If-None-Match": '"v1"'},
        STRONG,
        NOT_MODIFIED,
    ),
    (
        "13.2.2 If-Match false beats If-None-Match",
        "GET",
        {"If-Match": '"v2"', "If-None-Match": '"v1"'},
        STRONG,
        FAILED,
    ),
    (
        "13.1.4 If-Match present: If-Unmodified-Since ignored",
        "GET",
        {"If-Match": '"v1"', "If-Unmodified-Since": d(LM - 1)},
        STRONG,
        PASS,
    ),
    # -- step 2: If-Unmodified-Since (13.1.4, 13.2.2 step 2) ----------------
    ("13.1.4 not modified since", "GET", {"If-Unmodified-Since": d(LM + 1)}, STRONG, PASS),
    ("13.1.4 equal is true", "GET", {"If-Unmodified-Since": d(LM)}, STRONG, PASS),
    ("13.1.4 modified since", "GET", {"If-Unmodified-Since": d(LM - 1)}, STRONG, FAILED),
    ("13.1.4 modified since, PUT", "PUT", {"If-Unmodified-Since": d(LM - 1)}, STRONG, FAILED),
    ("13.1.4 invalid date ignored", "GET", {"If-Unmodified-Since": "yesterday"}, STRONG, PASS),
    (
        "13.1.4 list of dates ignored",
        "GET",
        {"If-Unmodified-Since": f"{d(LM - 1)}, {d(LM - 2)}"},
        STRONG,
        PASS,
    ),
    (
        "13.1.4 two lines are a list: ignored",
        "GET",
        [("If-Unmodified-Since", d(LM - 1)), ("If-Unmodified-Since", d(LM - 1))],
        STRONG,
        PASS,
    ),
    (
        "13.1.4 no modification date: ignored",
        "GET",
        {"If-Unmodified-Since": d(LM - 1)},
        {"ETag": '"v1"'},
        PASS,
    ),
    (
        "13.2.2 If-Unmodified-Since false beats If-None-Match",
        "GET",
        {"If-Unmodified-Since": d(LM - 1), "If-None-Match": '"v1"'},
        STRONG,
        FAILED,
    ),
    (
        "13.2.2 If-Unmodified-Since true continues",
        "GET",
        {"If-Unmodified-Since": d(LM), "If-None-Match": '"v1"'},
        STRONG,
        NOT_MODIFIED,
    ),
    # -- step 3: If-None-Match, weak comparison (13.1.2, 13.2.2 step 3) -----
    ("13.1.2 match GET", "GET", {"If-None-Match": '"v1"'}, STRONG, NOT_MODIFIED),
    ("13.1.2 match HEAD", "HEAD", {"If-None-Match": '"v1"'}, STRONG, NOT_MODIFIED),
    ("13.1.2 match POST is 412", "POST", {"If-None-Match": '"v1"'}, STRONG, FAILED),
    ("13.1.2 match PUT is 412", "PUT", {"If-None-Match": '"v1"'}, STRONG, FAILED),
    ("13.1.2 weak: weak request tag", "GET", {"If-None-Match": 'W/"v1"'}, STRONG, NOT_MODIFIED),
    ("13.1.2 weak: weak stored tag", "GET", {"If-None-Match": '"v1"'}, WEAK, NOT_MODIFIED),
    ("13.1.2 weak: both weak", "GET", {"If-None-Match": 'W/"v1"'}, WEAK, NOT_MODIFIED),
    ("13.1.2 no match", "GET", {"If-None-Match": '"v2"'}, STRONG, PASS),
    ("13.1.2 list member", "GET", {"If-None-Match": 'W/"x", "v1"'}, STRONG, NOT_MODIFIED),
    (
        "13.1.2 lines combine (5.3)",
        "GET",
        [("If-None-Match", '"x"'), ("If-None-Match", '"v1"')],
        STRONG,
        NOT_MODIFIED,
    ),
    ("13.1.2 * GET", "GET", {"If-None-Match": "*"}, STRONG, NOT_MODIFIED),
    ("13.1.2 * without ETag", "GET", {"If-None-Match": "*"}, NO_VALIDATORS, NOT_MODIFIED),
    ("13.1.2 * PUT", "PUT", {"If-None-Match": "*"}, STRONG, FAILED),
    ("13.1.2 no stored ETag", "GET", {"If-None-Match": '"v1"'}, NO_ETAG, PASS),
    ("13.1.2 malformed: true", "GET", {"If-None-Match": "v1"}, STRONG, PASS),
    (
        "13.1.3 If-None-Match present: If-Modified-Since ignored",
        "GET",
        {"If-None-Match": '"v2"', "If-Modified-Since": d(LM)},
        STRONG,
        PASS,
    ),
    (
        "13.1.3 even a malformed If-None-Match",
        "GET",
        {"If-None-Match": "bogus", "If-Modified-Since": d(LM)},
        STRONG,
        PASS,
    ),
    # -- step 4: If-Modified-Since (13.1.3, 13.2.2 step 4) -----------------
    ("13.1.3 not modified GET", "GET", {"If-Modified-Since": d(LM + 1)}, STRONG, NOT_MODIFIED),
    ("13.1.3 not modified HEAD", "HEAD", {"If-Modified-Since": d(LM)}, STRONG, NOT_MODIFIED),
    ("13.1.3 modified", "GET", {"If-Modified-Since": d(LM - 1)}, STRONG, PASS),
    ("13.1.3 ignored for POST", "POST", {"If-Modified-Since": d(LM + 1)}, STRONG, PASS),
    ("13.1.3 ignored for PUT", "PUT", {"If-Modified-Since": d(LM + 1)}, STRONG, PASS),
    ("13.1.3 invalid date ignored", "GET", {"If-Modified-Since": "not a date"}, STRONG, PASS),
    (
        "13.1.3 non-GMT zone invalid (9111 4.2)",
        "GET",
        {"If-Modified-Since": d(LM + 1).replace("GMT", "EST")},
        STRONG,
        PASS,
    ),
    (
        "13.1.3 more than one member ignored",
        "GET",
        {"If-Modified-Since": f"{d(LM + 1)}, {d(LM + 2)}"},
        STRONG,
        PASS,
    ),
    (
        "13.1.3 two lines are two members: ignored",
        "GET",
        [("If-Modified-Since", d(LM + 1)), ("If-Modified-Since", d(LM + 1))],
        STRONG,
        PASS,
    ),
    (
        "13.1.3 obsolete forms accepted (5.6.7)",
        "GET",
        {"If-Modified-Since": "Sunday, 06-Nov-94 08:49:37 GMT"},
        {"Last-Modified": "Sun Nov  6 08:49:37 1994"},
        NOT_MODIFIED,
    ),
    # RFC 9111 4.3.2: no Last-Modified, use the stored Date / receipt time
    (
        "9111 4.3.2 Date stands in: not modified",
        "GET",
        {"If-Modified-Since": d(T)},
        {"ETag": '"v1"'},
        NOT_MODIFIED,
    ),
    (
        "9111 4.3.2 Date stands in: modified",
        "GET",
        {"If-Modified-Since": d(T - 1)},
        {"ETag": '"v1"'},
        PASS,
    ),
    # -- none at all --------------------------------------------------------
    ("no preconditions", "GET", {}, STRONG, PASS),
    ("unrelated fields", "GET", {"If-Range": '"v2"', "Range": "bytes=0-1"}, STRONG, PASS),
]


@pytest.mark.parametrize(
    ("method", "request_lines", "stored_lines", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_evaluate(
    method: str, request_lines: Lines, stored_lines: Lines, expected: Precondition
) -> None:
    assert evaluate(method, hdrs(request_lines), hdrs(stored_lines), T) is expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ({}, False),
        ({"If-Range": '"x"'}, False),  # evaluated with ranges, not here
        ({"if-match": "*"}, True),
        ({"If-None-Match": '"x"'}, True),
        ({"If-Modified-Since": "garbage"}, True),  # present counts, valid or not
        ({"IF-UNMODIFIED-SINCE": d(T)}, True),
    ],
)
def test_has_preconditions(lines: dict[str, str], expected: bool) -> None:
    assert has_preconditions(hdrs(lines)) is expected


METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "get", ""]) | st.text(max_size=8)


@given(METHODS, headers_st, headers_st, st.floats(allow_nan=False, allow_infinity=False))
def test_evaluate_total(
    method: str, request: CIMultiDictProxy[str], stored: CIMultiDictProxy[str], when: float
) -> None:
    outcome = evaluate(method, request, stored, when)
    assert isinstance(outcome, Precondition)
    # 304 is only ever the answer to GET or HEAD (13.1.2, 13.1.3)
    if method not in ("GET", "HEAD"):
        assert outcome is not NOT_MODIFIED
    if not has_preconditions(request):
        assert outcome is PASS


# Realistic values, so that the property reaches every branch of evaluate().
VALIDATOR_VALUES = st.sampled_from(
    ['"v1"', 'W/"v1"', '"v2"', "*", '"v1", "v2"', "v1", "", d(LM - 1), d(LM), d(LM + 1), "junk"]
)
CONDITIONAL_LINES = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "If-Match",
                "If-None-Match",
                "If-Modified-Since",
                "If-Unmodified-Since",
                "ETag",
                "Last-Modified",
            ]
        ),
        VALIDATOR_VALUES,
    ),
    max_size=6,
)


@given(st.sampled_from(["GET", "HEAD", "POST", "PUT"]), CONDITIONAL_LINES, CONDITIONAL_LINES)
def test_evaluate_realistic(
    method: str, request_lines: list[tuple[str, str]], stored_lines: list[tuple[str, str]]
) -> None:
    request, stored = hdrs(request_lines), hdrs(stored_lines)
    outcome = evaluate(method, request, stored, T)
    if method not in ("GET", "HEAD"):
        assert outcome is not NOT_MODIFIED
    # If-Match "*" alone never fails: the stored response is a representation
    if list(request.items()) == [("If-Match", "*")]:
        assert outcome is PASS
    # If-None-Match "*" alone always fails: 304 for GET/HEAD, else 412 (13.1.2)
    if list(request.items()) == [("If-None-Match", "*")]:
        assert outcome is (NOT_MODIFIED if method in ("GET", "HEAD") else FAILED)
