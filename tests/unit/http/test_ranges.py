"""Range requests (RFC 9110 section 14), If-Range (13.1.5), 206/416 framing (15.3.7, 15.5.17)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from itertools import pairwise

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from edgeproxy.http.dates import format_http_date
from edgeproxy.http.ranges import (
    CLAMP,
    IGNORE,
    INVALID,
    MAX_PARTS,
    UNKNOWN_UNIT,
    UNSATISFIABLE,
    ByteRange,
    IntRange,
    NotPartial,
    RangeSpec,
    RangesSpecifier,
    SuffixRange,
    Unusable,
    coalesce,
    content_range,
    evaluate_range,
    if_range_allows,
    multipart_content_type,
    multipart_length,
    multipart_parts,
    multipart_trailer,
    parse_range,
    resolve,
    unsatisfied_content_range,
)
from tests.unit.http.helpers import Lines, any_text, grammar_text, hdrs


def spec(*ranges: RangeSpec) -> RangesSpecifier:
    return RangesSpecifier(tuple(ranges))


def R(first: int, last: int | None = None) -> IntRange:
    return IntRange(first, last)


def S(n: int) -> SuffixRange:
    return SuffixRange(n)


NINES = "9" * 5000  # past Python's int() digit limit: must not raise (14.1.2)

# -- parse_range -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 14.1.2's examples
        pytest.param("bytes=0-499", spec(R(0, 499)), id="14.1.2 first 500"),
        pytest.param("bytes=500-999", spec(R(500, 999)), id="14.1.2 second 500"),
        pytest.param("bytes=-500", spec(S(500)), id="14.1.2 final 500 suffix"),
        pytest.param("bytes=9500-", spec(R(9500)), id="14.1.2 final 500 open"),
        pytest.param("bytes=0-0,-1", spec(R(0, 0), S(1)), id="14.1.2 first and last"),
        pytest.param(
            "bytes= 0-999, 4500-5499, -1000",
            spec(R(0, 999), R(4500, 5499), S(1000)),
            id="14.1.2 first middle last, OWS after =",
        ),
        pytest.param(
            "bytes=500-600,601-999", spec(R(500, 600), R(601, 999)), id="14.1.2 non-canonical"
        ),
        pytest.param(
            "bytes=500-700,601-999", spec(R(500, 700), R(601, 999)), id="14.1.2 overlapping"
        ),
        # 14.1: range unit names are case-insensitive
        pytest.param("Bytes=0-1", spec(R(0, 1)), id="14.1 unit case Bytes"),
        pytest.param("BYTES=0-1", spec(R(0, 1)), id="14.1 unit case BYTES"),
        # 5.6.1: OWS around commas, empty list members skipped by recipients
        pytest.param("bytes=0-1 ,\t2-3", spec(R(0, 1), R(2, 3)), id="5.6.1 OWS around comma"),
        pytest.param("bytes=0-1,,2-3", spec(R(0, 1), R(2, 3)), id="5.6.1 empty member"),
        pytest.param("bytes=,0-1,", spec(R(0, 1)), id="5.6.1 leading/trailing comma"),
        pytest.param(" \tbytes=0-1 \t", spec(R(0, 1)), id="5.5 OWS around value"),
        pytest.param("bytes =0-1", spec(R(0, 1)), id="lenient OWS before ="),
        # 14.1.1: last-pos equal to first-pos is valid; leading zeros are digits
        pytest.param("bytes=5-5", spec(R(5, 5)), id="14.1.1 one byte"),
        pytest.param("bytes=007-010", spec(R(7, 10)), id="14.1.1 leading zeros"),
        pytest.param("bytes=0-", spec(R(0)), id="14.1.1 whole as open range"),
        pytest.param("bytes=-0", spec(S(0)), id="14.1.1 -0 is valid, unsatisfiable"),
        # order and overlap are kept as received: resolve() decides
        pytest.param("bytes=9-9,0-0,0-0", spec(R(9, 9), R(0, 0), R(0, 0)), id="order kept"),
        # 14.1.2: large numerals must not overflow; exact up to 20 digits
        pytest.param(
            "bytes=0-99999999999999999999", spec(R(0, 10**20 - 1)), id="14.1.2 20 digits exact"
        ),
        pytest.param(f"bytes={NINES}-", spec(R(CLAMP)), id="14.1.2 huge first-pos clamped"),
        pytest.param(f"bytes=0-{NINES}", spec(R(0, CLAMP)), id="14.1.2 huge last-pos clamped"),
        pytest.param(f"bytes=-{NINES}", spec(S(CLAMP)), id="14.1.2 huge suffix clamped"),
        pytest.param(
            f"bytes={'0' * 5000}1-{'0' * 5000}2", spec(R(1, 2)), id="14.1.2 long zero padding"
        ),
        pytest.param(
            "bytes=1" + "0" * 30 + "-2" + "0" * 30,
            spec(R(CLAMP, CLAMP)),
            id="14.1.1 huge ordered pair is valid",
        ),
        # absent is not invalid
        pytest.param(None, None, id="absent"),
        # 14.1.1 / 14.2: invalid ranges-specifier -> ignored
        pytest.param("bytes=5-4", INVALID, id="14.1.1 last-pos < first-pos"),
        pytest.param("bytes=0-1,5-4", INVALID, id="14.1.1 one invalid spec invalidates all"),
        pytest.param(
            "bytes=2" + "0" * 30 + "-1" + "0" * 30, INVALID, id="14.1.1 huge reversed pair"
        ),
        pytest.param("", INVALID, id="empty value"),
        pytest.param("bytes", INVALID, id="no ="),
        pytest.param("bytes=", INVALID, id="1# needs a member"),
        pytest.param("bytes=,", INVALID, id="1# only empty members"),
        pytest.param("=0-1", INVALID, id="no unit"),
        pytest.param('"bytes"=0-1', INVALID, id="unit is a token"),
        pytest.param("by tes=0-1", INVALID, id="space in unit"),
        pytest.param("bytes=1", INVALID, id="no dash"),
        pytest.param("bytes=-", INVALID, id="suffix without length"),
        pytest.param("bytes=--1", INVALID, id="double dash"),
        pytest.param("bytes=-1-2", INVALID, id="suffix with last-pos"),
        pytest.param("bytes=1-2-3", INVALID, id="three positions"),
        pytest.param("bytes=0 - 1", INVALID, id="no OWS inside a range-spec"),
        pytest.param("bytes=a-b", INVALID, id="not digits"),
        pytest.param("bytes=0x10-", INVALID, id="hex"),
        pytest.param("bytes=+1-", INVALID, id="sign"),
        pytest.param("bytes=1.5-2", INVALID, id="decimal point"),
        pytest.param("bytes=\u0663-", INVALID, id="non-ASCII digit"),
        pytest.param("bytes=0-1;x", INVALID, id="parameters"),
        pytest.param("bytes=0-1, bytes=2-3", INVALID, id="5.3 two field lines combined"),
        pytest.param("bytes=0-1\x00", INVALID, id="NUL"),
        # 14.2: an unknown unit is ignored (kept apart so a proxy may forward it)
        pytest.param("items=0-5", UNKNOWN_UNIT, id="14.2 unknown unit"),
        pytest.param("none=0-1", UNKNOWN_UNIT, id="14.3 none is not a unit to request"),
        pytest.param("exampleunit=1.2-4.3", UNKNOWN_UNIT, id="14.6 exampleunit"),
        pytest.param("x=", UNKNOWN_UNIT, id="unknown unit, other-range not judged"),
    ],
)
def test_parse_range(value: str | None, expected: RangesSpecifier | Unusable | None) -> None:
    assert parse_range(value) == expected


def test_specifier_str() -> None:
    assert str(spec(R(0, 0), S(1), R(9500))) == "bytes=0-0,-1,9500-"


# -- resolve -----------------------------------------------------------------

L = 10_000  # 14.1.2's example representation length


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        # 14.1.2's examples against a 10000-byte representation
        pytest.param("bytes=0-499", L, [(0, 499)], id="14.1.2 first 500"),
        pytest.param("bytes=500-999", L, [(500, 999)], id="14.1.2 second 500"),
        pytest.param("bytes=-500", L, [(9500, 9999)], id="14.1.2 final 500 suffix"),
        pytest.param("bytes=9500-", L, [(9500, 9999)], id="14.1.2 final 500 open"),
        pytest.param("bytes=0-0,-1", L, [(0, 0), (9999, 9999)], id="14.1.2 first and last"),
        pytest.param(
            "bytes= 0-999, 4500-5499, -1000",
            L,
            [(0, 999), (4500, 5499), (9000, 9999)],
            id="14.1.2 first middle last",
        ),
        # ...the two non-canonical forms coalesce into the canonical 500-999
        # (15.3.7.2 MAY coalesce overlapping ranges; adjacent ones too)
        pytest.param("bytes=500-600,601-999", L, [(500, 999)], id="14.1.2 adjacent coalesced"),
        pytest.param("bytes=500-700,601-999", L, [(500, 999)], id="14.1.2 overlap coalesced"),
        # 14.1.2: last-pos at or past the end means "to the end"
        pytest.param("bytes=0-9999", L, [(0, 9999)], id="14.1.2 last-pos = length-1"),
        pytest.param("bytes=0-10000", L, [(0, 9999)], id="14.1.2 last-pos = length clipped"),
        pytest.param("bytes=9000-20000", L, [(9000, 9999)], id="14.1.2 last-pos past end"),
        pytest.param(f"bytes=0-{NINES}", L, [(0, 9999)], id="14.1.2 huge last-pos"),
        pytest.param("bytes=0-", L, [(0, 9999)], id="14.1.2 open from 0 is a 206"),
        pytest.param("bytes=9999-", L, [(9999, 9999)], id="14.1.2 last byte open"),
        # 14.1.2: first-pos must be below the length to be satisfiable
        pytest.param("bytes=10000-", L, UNSATISFIABLE, id="14.1.2 first-pos = length"),
        pytest.param("bytes=10000-10005", L, UNSATISFIABLE, id="14.1.2 past the end"),
        pytest.param(f"bytes={NINES}-", L, UNSATISFIABLE, id="14.1.2 huge first-pos"),
        # 14.1.2: a suffix longer than the representation is all of it
        pytest.param("bytes=-10000", L, [(0, 9999)], id="14.1.2 suffix = length"),
        pytest.param("bytes=-20000", L, [(0, 9999)], id="14.1.2 suffix > length"),
        pytest.param(f"bytes=-{NINES}", L, [(0, 9999)], id="14.1.2 huge suffix"),
        pytest.param("bytes=-0", L, UNSATISFIABLE, id="14.1.2 zero suffix unsatisfiable"),
        # 14.1.1: satisfiable if at least one range-spec is
        pytest.param("bytes=10000-,0-0", L, [(0, 0)], id="14.1.1 one satisfiable suffices"),
        pytest.param("bytes=-0,-1", L, [(9999, 9999)], id="14.1.1 -0 dropped"),
        pytest.param("bytes=10000-,-0", L, UNSATISFIABLE, id="14.1.1 none satisfiable"),
        # 14.1.2: zero-length representation: only a non-zero suffix is
        # satisfiable, and it cannot be described by Content-Range: ignore
        # (14.2 MAY ignore Range when there is no content); the rest is 416
        pytest.param("bytes=0-", 0, UNSATISFIABLE, id="14.1.2 empty: 0- unsatisfiable"),
        pytest.param("bytes=0-0", 0, UNSATISFIABLE, id="14.1.2 empty: 0-0 unsatisfiable"),
        pytest.param("bytes=-0", 0, UNSATISFIABLE, id="14.1.2 empty: -0 unsatisfiable"),
        pytest.param("bytes=-1", 0, IGNORE, id="14.2 empty: suffix satisfiable, ignored"),
        pytest.param("bytes=0-,-5", 0, IGNORE, id="14.2 empty: mixed, ignored"),
        # one-byte representation
        pytest.param("bytes=0-0", 1, [(0, 0)], id="length 1: 0-0"),
        pytest.param("bytes=-1", 1, [(0, 0)], id="length 1: -1"),
        pytest.param("bytes=-2", 1, [(0, 0)], id="length 1: -2"),
        pytest.param("bytes=1-", 1, UNSATISFIABLE, id="length 1: 1-"),
        # 14.2 / 15.3.7.2 abuse policy: sort and coalesce, then count parts
        pytest.param("bytes=0-,0-,0-,0-", L, [(0, 9999)], id="14.2 overlapping: no amplification"),
        pytest.param(
            "bytes=-1,0-0,5000-5000",
            L,
            [(0, 0), (5000, 5000), (9999, 9999)],
            id="15.3.7.2 descending: sent ascending",
        ),
        pytest.param("bytes=0-99,100-199", L, [(0, 199)], id="15.3.7.2 adjacent merged"),
        pytest.param("bytes=0-99,101-199", L, [(0, 99), (101, 199)], id="one-byte gap kept"),
        pytest.param("bytes=0-999,10-20", L, [(0, 999)], id="contained merged"),
        pytest.param("bytes=10-20,0-999", L, [(0, 999)], id="container after merged"),
        pytest.param("bytes=9000-,-500", L, [(9000, 9999)], id="open and suffix merged"),
        pytest.param(
            "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_PARTS)),
            L,
            [(2 * i, 2 * i) for i in range(MAX_PARTS)],
            id="14.2 MAX_PARTS small ranges served",
        ),
        pytest.param(
            "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_PARTS + 1)),
            L,
            IGNORE,
            id="14.2 MAX_PARTS+1 small ranges ignored",
        ),
        pytest.param(
            "bytes=" + ",".join(f"{i}-{i}" for i in reversed(range(1000))),
            L,
            [(0, 999)],
            id="14.2 many reversed adjacent ranges coalesce to one",
        ),
        pytest.param(
            "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in reversed(range(1000))),
            L,
            IGNORE,
            id="14.2 many small reversed ranges ignored",
        ),
        pytest.param(
            "bytes=" + ",".join(f"{2 * i}-{2 * i},{2 * i + 10000}-" for i in range(MAX_PARTS)),
            L,
            [(2 * i, 2 * i) for i in range(MAX_PARTS)],
            id="unsatisfiable specs do not count as parts",
        ),
    ],
)
def test_resolve(value: str, length: int, expected: list[ByteRange] | NotPartial) -> None:
    parsed = parse_range(value)
    assert isinstance(parsed, RangesSpecifier)
    assert resolve(parsed, length) == expected


@pytest.mark.parametrize(
    ("max_parts", "expected"),
    [
        (1, IGNORE),
        (2, IGNORE),
        (3, [(0, 0), (5, 5), (9, 9)]),
        (4, [(0, 0), (5, 5), (9, 9)]),
    ],
)
def test_resolve_max_parts_configurable(max_parts: int, expected: object) -> None:
    s = spec(R(9, 9), R(0, 0), R(5, 5), R(0, 0))
    assert resolve(s, 10, max_parts=max_parts) == expected


def test_resolve_rejects_caller_errors() -> None:
    with pytest.raises(ValueError):
        resolve(spec(R(0)), -1)
    with pytest.raises(ValueError):
        resolve(spec(R(0)), 10, max_parts=0)


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([], []),
        ([(5, 9)], [(5, 9)]),
        ([(5, 9), (0, 4)], [(0, 9)]),
        ([(0, 3), (5, 9)], [(0, 3), (5, 9)]),
        ([(0, 9), (2, 3), (4, 12)], [(0, 12)]),
        ([(7, 7), (7, 7)], [(7, 7)]),
    ],
)
def test_coalesce(spans: list[ByteRange], expected: list[ByteRange]) -> None:
    assert coalesce(spans) == expected


# -- If-Range (13.1.5) -------------------------------------------------------

T = 1_800_000_000.0  # stored Date
LM = T - 1000.0  # stored Last-Modified


def d(ts: float) -> str:
    return format_http_date(ts)


def rfc850(ts: float) -> str:
    """The same instant in the obsolete RFC 850 form (RFC 9110 section 5.6.7)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%A, %d-%b-%y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "date", "allows"),
    [
        pytest.param(None, '"v1"', d(LM), d(T), True, id="13.1.5 absent: no condition"),
        # entity-tag: strong comparison (13.1.5, 8.8.3.2)
        pytest.param('"v1"', '"v1"', d(LM), d(T), True, id="13.1.5 etag matches"),
        pytest.param(' "v1"\t', '"v1"', None, None, True, id="13.1.5 etag with OWS"),
        pytest.param('"v2"', '"v1"', d(LM), d(T), False, id="13.1.5 etag differs"),
        pytest.param('W/"v1"', '"v1"', d(LM), d(T), False, id="13.1.5 weak request tag"),
        pytest.param('"v1"', 'W/"v1"', d(LM), d(T), False, id="13.1.5 weak stored tag"),
        pytest.param('W/"v1"', 'W/"v1"', d(LM), d(T), False, id="13.1.5 both weak"),
        pytest.param('"v1"', None, d(LM), d(T), False, id="13.1.5 no stored etag"),
        pytest.param('"v1"', "v1", d(LM), d(T), False, id="13.1.5 stored etag malformed"),
        pytest.param('"V1"', '"v1"', d(LM), d(T), False, id="8.8.3.2 case-sensitive"),
        pytest.param('"v1', '"v1"', d(LM), d(T), False, id="13.1.5 malformed etag"),
        pytest.param('"v1", "v2"', '"v1"', d(LM), d(T), False, id="13.1.5 a list is invalid"),
        pytest.param('"a,b"', '"a,b"', None, None, True, id="8.8.3 comma inside opaque-tag"),
        # HTTP-date: exact match with a strong Last-Modified (13.1.5, 8.8.2.2)
        pytest.param(d(LM), None, d(LM), d(T), True, id="13.1.5 date exact match"),
        pytest.param(d(LM), '"v1"', d(LM), d(T), True, id="13.1.5 date with etag stored"),
        pytest.param(rfc850(LM), None, d(LM), d(T), True, id="5.6.7 same instant RFC 850"),
        pytest.param(d(LM + 1), None, d(LM), d(T), False, id="13.1.5 later: exact, not <="),
        pytest.param(d(LM - 1), None, d(LM), d(T), False, id="13.1.5 earlier date"),
        pytest.param(d(LM), None, d(LM), d(LM + 1), True, id="8.8.2.2 Date 1s after: strong"),
        pytest.param(d(LM), None, d(LM), d(LM), False, id="8.8.2.2 Date = LM: weak"),
        pytest.param(d(LM), None, d(LM), d(LM - 5), False, id="8.8.2.2 Date before LM: weak"),
        pytest.param(d(LM), None, d(LM), None, False, id="8.8.2.2 no Date: not strong"),
        pytest.param(d(LM), None, d(LM), "garbage", False, id="8.8.2.2 invalid Date"),
        pytest.param(d(LM), None, None, d(T), False, id="13.1.5 no stored Last-Modified"),
        pytest.param(d(LM), None, "garbage", d(T), False, id="13.1.5 invalid Last-Modified"),
        pytest.param(d(LM), '"v1"', None, d(T), False, id="13.1.5 date vs etag-only entry"),
        pytest.param('"v1"', None, d(LM), d(T), False, id="13.1.5 etag vs date-only entry"),
        # invalid values: false (send the whole representation)
        pytest.param("", '"v1"', d(LM), d(T), False, id="13.1.5 empty"),
        pytest.param("yesterday", '"v1"', d(LM), d(T), False, id="13.1.5 garbage"),
        pytest.param(f"{d(LM)}, {d(LM)}", None, d(LM), d(T), False, id="13.1.5 list of dates"),
        pytest.param("*", '"v1"', d(LM), d(T), False, id="13.1.5 * is not an If-Range value"),
    ],
)
def test_if_range_allows(
    if_range: str | None,
    etag: str | None,
    last_modified: str | None,
    date: str | None,
    allows: bool,
) -> None:
    assert if_range_allows(if_range, etag, last_modified, date) is allows


# -- evaluate_range: Range + If-Range + method (14.2, 13.1.5) -----------------

STORED = {"ETag": '"v1"', "Last-Modified": d(LM), "Date": d(T)}


@pytest.mark.parametrize(
    ("method", "request_lines", "expected"),
    [
        pytest.param("GET", {"Range": "bytes=0-499"}, [(0, 499)], id="14.2 GET single range"),
        pytest.param(
            "GET", {"Range": "bytes=0-0,-1"}, [(0, 0), (9999, 9999)], id="14.2 GET multipart"
        ),
        pytest.param("GET", {}, IGNORE, id="14.2 no Range"),
        pytest.param("HEAD", {"Range": "bytes=0-499"}, IGNORE, id="14.2 HEAD: not defined"),
        pytest.param("POST", {"Range": "bytes=0-499"}, IGNORE, id="14.2 POST: not defined"),
        pytest.param("get", {"Range": "bytes=0-499"}, IGNORE, id="9.1 methods case-sensitive"),
        pytest.param("GET", {"Range": "bytes=5-4"}, IGNORE, id="14.2 invalid ignored"),
        pytest.param("GET", {"Range": "items=0-4"}, IGNORE, id="14.2 unknown unit ignored"),
        pytest.param("GET", {"Range": "bytes=10000-"}, UNSATISFIABLE, id="14.2 unsatisfiable"),
        pytest.param(
            "GET",
            [("Range", "bytes=0-1"), ("Range", "bytes=2-3")],
            IGNORE,
            id="5.3 two Range lines: invalid",
        ),
        pytest.param(
            "GET", {"range": "bytes=0-1"}, [(0, 1)], id="5.1 field names case-insensitive"
        ),
        # If-Range (13.1.5)
        pytest.param(
            "GET", {"Range": "bytes=0-1", "If-Range": '"v1"'}, [(0, 1)], id="13.1.5 etag true"
        ),
        pytest.param(
            "GET", {"Range": "bytes=0-1", "If-Range": '"v2"'}, IGNORE, id="13.1.5 etag false"
        ),
        pytest.param(
            "GET", {"Range": "bytes=0-1", "If-Range": d(LM)}, [(0, 1)], id="13.1.5 date true"
        ),
        pytest.param(
            "GET", {"Range": "bytes=0-1", "If-Range": d(T)}, IGNORE, id="13.1.5 date false"
        ),
        pytest.param(
            "GET",
            {"Range": "bytes=10000-", "If-Range": '"v2"'},
            IGNORE,
            id="13.1.5 false: Range ignored, so no 416",
        ),
        pytest.param(
            "GET",
            {"Range": "bytes=10000-", "If-Range": '"v1"'},
            UNSATISFIABLE,
            id="13.1.5 true then 416",
        ),
        pytest.param("GET", {"If-Range": '"v1"'}, IGNORE, id="13.1.5 If-Range without Range"),
        pytest.param(
            "GET",
            [("Range", "bytes=0-1"), ("If-Range", '"v1"'), ("If-Range", '"v1"')],
            IGNORE,
            id="5.3 two If-Range lines: a list, false",
        ),
    ],
)
def test_evaluate_range(method: str, request_lines: Lines, expected: object) -> None:
    assert evaluate_range(method, hdrs(request_lines), hdrs(STORED), L) == expected


def test_evaluate_range_max_parts() -> None:
    req = hdrs({"Range": "bytes=0-0,2-2,4-4"})
    assert evaluate_range("GET", req, hdrs(STORED), L, max_parts=2) is IGNORE
    assert evaluate_range("GET", req, hdrs(STORED), L, max_parts=3) == [(0, 0), (2, 2), (4, 4)]


# -- Content-Range (14.4) ------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "length", "expected"),
    [
        # 14.4's examples, a 1234-byte representation
        pytest.param(42, 1233, 1234, "bytes 42-1233/1234", id="14.4 known length"),
        pytest.param(0, 499, 1234, "bytes 0-499/1234", id="14.4 first 500"),
        pytest.param(500, 999, 1234, "bytes 500-999/1234", id="14.4 second 500"),
        pytest.param(500, 1233, 1234, "bytes 500-1233/1234", id="14.4 all but first 500"),
        pytest.param(734, 1233, 1234, "bytes 734-1233/1234", id="14.4 last 500"),
        # 15.3.7.1's example
        pytest.param(21010, 47021, 47022, "bytes 21010-47021/47022", id="15.3.7.1 single part"),
        pytest.param(0, 0, 1, "bytes 0-0/1", id="one byte"),
    ],
)
def test_content_range(first: int, last: int, length: int, expected: str) -> None:
    assert content_range(first, last, length) == expected


@pytest.mark.parametrize(
    ("first", "last", "length"),
    [
        pytest.param(5, 4, 10, id="14.4 invalid: last-pos < first-pos"),
        pytest.param(0, 10, 10, id="14.4 invalid: complete-length <= last-pos"),
        pytest.param(-1, 0, 10, id="negative first"),
        pytest.param(0, 0, 0, id="empty representation"),
    ],
)
def test_content_range_rejects_invalid(first: int, last: int, length: int) -> None:
    with pytest.raises(ValueError):
        content_range(first, last, length)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        pytest.param(1234, "bytes */1234", id="14.4 unsatisfied-range"),
        pytest.param(47022, "bytes */47022", id="15.5.17 example"),
        pytest.param(0, "bytes */0", id="14.1.2 empty representation"),
    ],
)
def test_unsatisfied_content_range(length: int, expected: str) -> None:
    assert unsatisfied_content_range(length) == expected


def test_unsatisfied_content_range_rejects_negative() -> None:
    with pytest.raises(ValueError):
        unsatisfied_content_range(-1)


# -- multipart/byteranges (14.6, 15.3.7.2) ------------------------------------


def body_of(data: bytes, ranges: list[ByteRange], ctype: str | None, boundary: str) -> bytes:
    """What the shell streams: each part's header, then its slice of the file."""
    out = b"".join(
        p.header + data[p.start : p.end + 1]
        for p in multipart_parts(ranges, len(data), ctype, boundary)
    )
    return out + multipart_trailer(boundary)


def test_multipart_body_exact_bytes() -> None:
    # 15.3.7.2's example: two parts of an 8000-byte application/pdf
    data = (bytes(range(256)) * 32)[:8000]
    boundary = "THIS_STRING_SEPARATES"
    ranges = [(500, 999), (7000, 7999)]
    expected = (
        b"--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 500-999/8000\r\n"
        b"\r\n" + data[500:1000] + b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 7000-7999/8000\r\n"
        b"\r\n" + data[7000:8000] + b"\r\n--THIS_STRING_SEPARATES--\r\n"
    )
    assert body_of(data, ranges, "application/pdf", boundary) == expected
    assert multipart_length(ranges, 8000, "application/pdf", boundary) == len(expected)
    assert multipart_content_type(boundary) == (
        "multipart/byteranges; boundary=THIS_STRING_SEPARATES"
    )


def test_multipart_without_content_type() -> None:
    # 15.3.7.2: Content-Type per part only if the 200 would have had one.
    parts = multipart_parts([(0, 1)], 5, None, "b")
    assert parts[0].header == b"--b\r\nContent-Range: bytes 0-1/5\r\n\r\n"


def test_multipart_content_type_cannot_inject_fields() -> None:
    # 5.5: CR, LF and NUL in a field value are replaced with SP.
    parts = multipart_parts([(0, 1)], 5, "text/plain\r\nX-Evil: 1\x00", "b")
    assert parts[0].header == (
        b"--b\r\nContent-Type: text/plain  X-Evil: 1 \r\nContent-Range: bytes 0-1/5\r\n\r\n"
    )


def test_multipart_non_ascii_content_type_round_trips_bytes() -> None:
    raw = "text/plain; name=caf\udcc3\udca9"  # b"caf\xc3\xa9" as aiohttp decodes it
    parts = multipart_parts([(0, 0)], 1, raw, "b")
    assert b"name=caf\xc3\xa9\r\n" in parts[0].header
    lone = multipart_parts([(0, 0)], 1, "text/\ud800", "b")  # not encodable: replaced
    assert b"Content-Type: text/?\r\n" in lone[0].header


@pytest.mark.parametrize(
    "boundary",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 71, id="RFC 2046 5.1.1: at most 70"),
        pytest.param("a b", id="space needs quoting"),
        pytest.param('a"b', id="DQUOTE"),
        pytest.param("a;b", id="semicolon"),
        pytest.param("a\r\nb", id="CRLF"),
        pytest.param("caf\u00e9", id="non-ASCII"),
    ],
)
def test_multipart_rejects_bad_boundary(boundary: str) -> None:
    with pytest.raises(ValueError):
        multipart_content_type(boundary)
    with pytest.raises(ValueError):
        multipart_parts([(0, 0)], 1, None, boundary)
    with pytest.raises(ValueError):
        multipart_trailer(boundary)


@pytest.mark.parametrize("boundary", ["a" * 70, "0", "A-b_c.d+e'f", "3d6b6a416f9b5c"])
def test_multipart_accepts_token_boundaries(boundary: str) -> None:
    assert multipart_content_type(boundary).endswith("boundary=" + boundary)


def test_multipart_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        multipart_parts([], 10, None, "b")
    with pytest.raises(ValueError):
        multipart_parts([(5, 10)], 10, None, "b")  # 14.4: last-pos past the end


def parse_multipart(body: bytes, boundary: str) -> list[Message]:
    """Parse with the standard library's MIME parser (RFC 2046), as a client would."""
    head = f"Content-Type: {multipart_content_type(boundary)}\r\n\r\n".encode()
    msg = BytesParser().parsebytes(head + body)
    assert msg.is_multipart()
    assert msg.get_content_type() == "multipart/byteranges"
    assert not msg.defects
    payload = msg.get_payload()
    assert isinstance(payload, list)
    parts = [p for p in payload if isinstance(p, Message)]
    assert len(parts) == len(payload)
    return parts


def test_multipart_round_trip_rfc_example() -> None:
    data = bytes(range(256)) * 40
    ranges = [(0, 0), (4500, 5499), (10239, 10239)]
    body = body_of(data, ranges, "application/octet-stream", "edgeproxy-boundary")
    parts = parse_multipart(body, "edgeproxy-boundary")
    assert [p["Content-Range"] for p in parts] == [
        "bytes 0-0/10240",
        "bytes 4500-5499/10240",
        "bytes 10239-10239/10240",
    ]
    assert [p.get_payload(decode=True) for p in parts] == [data[s : e + 1] for s, e in ranges]
    assert all(p["Content-Type"] == "application/octet-stream" for p in parts)


# -- properties ----------------------------------------------------------------

range_ish = st.text(alphabet=st.sampled_from(list("bytesBYTES= \t,-0123456789x;\"'")), max_size=40)


@given(st.one_of(any_text, grammar_text, range_ish))
def test_parse_range_total(value: str) -> None:
    result = parse_range(value)
    assert result is None or isinstance(result, Unusable | RangesSpecifier)
    if isinstance(result, RangesSpecifier):
        # what we parsed re-serialises to the same specifier
        assert result.ranges
        assert parse_range(str(result)) == result


huge = st.integers(0, 2 * CLAMP)


def specifiers(length: int = 400, max_size: int = 20) -> st.SearchStrategy[RangesSpecifier]:
    """Ranges-specifiers aimed at a `length`-byte representation.

    Mostly narrow closed ranges around and just past its end, so that
    resolve() sees several disjoint parts to keep apart, coalesce or refuse;
    now and then an open range, a suffix, or positions far past any length,
    in any order.
    """
    near = st.integers(0, length + 3)
    narrow = st.tuples(near, st.integers(0, max(1, length // 25))).map(
        lambda t: IntRange(t[0], t[0] + t[1])
    )
    wide = st.one_of(
        st.builds(IntRange, near, st.none()),
        st.builds(SuffixRange, st.integers(0, max(1, length // 4))),
        st.tuples(huge, huge).map(lambda t: IntRange(min(t), max(t))),
        st.builds(SuffixRange, huge),
    )
    return (
        st.tuples(st.lists(narrow, max_size=max_size), st.lists(wide, max_size=2))
        .map(lambda t: t[0] + t[1])
        .filter(bool)
        .flatmap(st.permutations)
        .map(lambda rs: RangesSpecifier(tuple(rs)))
    )


# A representation and a Range for it.
lengths_and_specs = st.integers(0, 600).flatmap(lambda n: st.tuples(st.just(n), specifiers(n)))
# hypothesis keeps st.binary() short; tile arbitrary bytes (CR, LF, "--"
# included) to a length drawn on its own, so bodies have room for many parts.
representations = st.tuples(st.binary(min_size=1, max_size=64), st.integers(1, 400)).map(
    lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]]
)
data_and_specs = representations.flatmap(lambda b: st.tuples(st.just(b), specifiers(len(b))))


@given(specifiers())
def test_parse_generated_specifiers(s: RangesSpecifier) -> None:
    expected = RangesSpecifier(
        tuple(
            SuffixRange(min(r.suffix_length, CLAMP))
            if isinstance(r, SuffixRange)
            else IntRange(
                min(r.first_pos, CLAMP), None if r.last_pos is None else min(r.last_pos, CLAMP)
            )
            for r in s.ranges
        )
    )
    assert parse_range(str(s)) == expected


def satisfied_bytes(s: RangesSpecifier, length: int) -> set[int]:
    """14.1.2 read literally: every byte some range-spec asks for."""
    out: set[int] = set()
    for r in s.ranges:
        if isinstance(r, SuffixRange):
            out.update(range(max(0, length - r.suffix_length), length))
        else:
            last = length - 1 if r.last_pos is None else min(r.last_pos, length - 1)
            out.update(range(r.first_pos, last + 1))
    return out


def is_satisfiable(s: RangesSpecifier, length: int) -> bool:
    """14.1.2: int-range with first-pos < length, or a non-zero suffix."""
    return any(
        r.suffix_length > 0 if isinstance(r, SuffixRange) else r.first_pos < length
        for r in s.ranges
    )


@given(lengths_and_specs, st.integers(1, MAX_PARTS * 2))
def test_resolve_properties(case: tuple[int, RangesSpecifier], max_parts: int) -> None:
    length, s = case
    result = resolve(s, length, max_parts=max_parts)
    if not is_satisfiable(s, length):
        assert result is UNSATISFIABLE
        return
    if isinstance(result, NotPartial):
        # ignored only for the documented reasons (14.2)
        assert result is IGNORE
        assert length == 0 or len(coalesce([(b, b) for b in satisfied_bytes(s, length)])) > (
            max_parts
        )
        return
    assert 1 <= len(result) <= max_parts
    # within [0, length), ascending, neither overlapping nor adjacent
    for first, last in result:
        assert 0 <= first <= last < length
    for (_, last), (first, _) in pairwise(result):
        assert last + 1 < first
    # exactly the requested bytes: coalescing adds and loses nothing
    sent = {b for first, last in result for b in range(first, last + 1)}
    assert sent == satisfied_bytes(s, length)
    # 15.3.7.2: one range requested, never several parts
    if len(s.ranges) == 1:
        assert len(result) == 1


@given(specifiers(max_size=3), huge)
def test_resolve_huge_lengths(s: RangesSpecifier, length: int) -> None:
    result = resolve(s, length)
    if isinstance(result, list):
        assert all(0 <= first <= last < length for first, last in result)
    elif not is_satisfiable(s, length):
        assert result is UNSATISFIABLE
    else:
        # five range-specs at most, fewer than MAX_PARTS: only an empty
        # representation is ignored (14.2)
        assert result is IGNORE
        assert length == 0


boundaries = st.text(
    alphabet=st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'+-._")
    ),
    min_size=1,
    max_size=70,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/pdf", "text/plain; charset=utf-8", "image/gif"]),
)


@given(data_and_specs, content_types, boundaries)
def test_multipart_length_is_exact(
    case: tuple[bytes, RangesSpecifier], ctype: str | None, boundary: str
) -> None:
    data, s = case
    ranges = resolve(s, len(data), max_parts=64)
    assume(isinstance(ranges, list))
    assert isinstance(ranges, list)
    assert multipart_length(ranges, len(data), ctype, boundary) == len(
        body_of(data, ranges, ctype, boundary)
    )


@given(data_and_specs, content_types)
def test_multipart_round_trips_through_email_parser(
    case: tuple[bytes, RangesSpecifier], ctype: str | None
) -> None:
    data, s = case
    # A boundary long and odd enough never to occur in 400 random bytes, as
    # a fresh random one would not (RFC 2046 section 5.1.1).
    boundary = "edgeproxy-3d6b6a416f9b5c0e2b7e"
    ranges = resolve(s, len(data), max_parts=64)
    assume(isinstance(ranges, list))
    assert isinstance(ranges, list)
    parts = parse_multipart(body_of(data, ranges, ctype, boundary), boundary)
    assert len(parts) == len(ranges)
    for part, (first, last) in zip(parts, ranges, strict=True):
        assert part["Content-Range"] == content_range(first, last, len(data))
        assert part["Content-Type"] == ctype
        assert part.get_payload(decode=True) == data[first : last + 1]
