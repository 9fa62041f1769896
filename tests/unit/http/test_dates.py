"""HTTP-date (RFC 9110 section 5.6.7, RFC 9111 section 4.2)."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http.dates import format_http_date, parse_http_date
from tests.unit.http.helpers import any_text, grammar_text

# Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example instant.
EXAMPLE = float(calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0)))


@pytest.mark.parametrize(
    "value",
    [
        # 5.6.7: a recipient MUST accept all three forms (the RFC's examples)
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", id="IMF-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", id="asctime"),
        # asctime with a two-digit day
        pytest.param("Sun Nov 06 08:49:37 1994", id="asctime-2digit-day"),
        # RFC 9111 4.2: a cache SHOULD match case-insensitively
        pytest.param("sun, 06 nov 1994 08:49:37 gmt", id="IMF-lower"),
        pytest.param("SUNDAY, 06-NOV-94 08:49:37 GMT", id="rfc850-upper"),
        # surrounding OWS is not part of the field value (RFC 9110 5.5)
        pytest.param("  Sun, 06 Nov 1994 08:49:37 GMT\t", id="ows"),
        # robustness (5.6.7): extra whitespace between parts
        pytest.param("Sun,  06 Nov 1994  08:49:37   GMT", id="extra-sp"),
        # the day-name is not cross-checked against the date
        pytest.param("Mon, 06 Nov 1994 08:49:37 GMT", id="wrong-day-name"),
    ],
)
def test_three_forms_parse_to_the_same_instant(value: str) -> None:
    assert parse_http_date(value) == EXAMPLE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Wed, 31 Dec 1969 23:59:59 GMT", -1.0),
        ("Tue, 29 Feb 2000 12:00:00 GMT", 951825600.0),  # leap day
        ("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800.0),  # leap second (RFC 5322 3.3)
        # rfc850 two-digit years (5.6.7): the POSIX pivot, 69-99 -> 19xx, 00-68 -> 20xx
        ("Thursday, 01-Jan-70 00:00:00 GMT", 0.0),
        ("Saturday, 01-Jan-00 00:00:00 GMT", 946684800.0),
        ("Sunday, 01-Jan-68 00:00:00 GMT", 3092601600.0),
        ("Wednesday, 01-Jan-69 00:00:00 GMT", -31536000.0),
    ],
)
def test_values(value: str, expected: float) -> None:
    assert parse_http_date(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,  # absent
        "",
        "0",  # RFC 9111 5.3: Expires "0" is invalid (hence already expired)
        "-1",
        "now",
        "1994-11-06T08:49:37Z",  # ISO 8601 is not an HTTP-date
        "Sun, 06 Nov 1994",  # no time of day
        "Sun, 06 Nov 1994 08:49 GMT",  # no seconds
        "Sun, 06 Nov 1994 08:49:37",  # IMF-fixdate needs GMT
        "06 Nov 1994 08:49:37 GMT",  # IMF-fixdate needs the day-name
        "Sun 06 Nov 1994 08:49:37 GMT",  # and its comma
        "Sun, 6 Nov 1994 08:49:37 GMT",  # day = 2DIGIT
        "Sun, 06 Nov 94 08:49:37 GMT",  # IMF year = 4DIGIT
        "Sunday, 06-Nov-1994 08:49:37 GMT",  # rfc850 year = 2DIGIT
        "Sun, 06 Nov 1994 8:49:37 GMT",  # hour = 2DIGIT
        "Sun, 06 Foo 1994 08:49:37 GMT",  # no such month
        "Xyz, 06 Nov 1994 08:49:37 GMT",  # no such day-name
        # RFC 9111 4.2: a zone other than GMT is invalid for a cache
        "Sun, 06 Nov 1994 08:49:37 EST",
        "Sun, 06 Nov 1994 08:49:37 +0100",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun Nov  6 08:49:37 1994 GMT",  # asctime carries no zone
        # out-of-range fields are not dates
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 32 Oct 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 29 Feb 1900 08:49:37 GMT",  # 1900 is not a leap year
        "Sun, 06 Nov 0000 08:49:37 GMT",
        # RFC 9110 13.1.3/13.1.4: a list of dates is not a valid HTTP-date
        "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT junk",
        # non-ASCII digits are not DIGIT
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT\x00",
    ],
)
def test_invalid_is_none(value: str | None) -> None:
    assert parse_http_date(value) is None


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (EXAMPLE, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (0.0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (1_800_000_000.0, "Fri, 15 Jan 2027 08:00:00 GMT"),
    ],
)
def test_format_is_imf_fixdate(ts: float, text: str) -> None:
    # 5.6.7: a sender MUST generate IMF-fixdate
    assert format_http_date(ts) == text
    assert parse_http_date(text) == ts


@given(st.integers(min_value=0, max_value=253_402_300_799))  # up to 9999-12-31
def test_format_round_trip(ts: int) -> None:
    assert parse_http_date(format_http_date(float(ts))) == float(ts)


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_fractional_seconds_round_down(ts: float) -> None:
    # RFC 9111 4.2: with less resolution, use the nearest time equal or earlier
    parsed = parse_http_date(format_http_date(ts))
    assert parsed is not None and ts - 1 < parsed <= ts


@given(st.one_of(any_text, grammar_text))
def test_parse_http_date_total(value: str) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)


@given(
    st.builds(
        "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} GMT".format,
        st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
        st.integers(0, 99),
        st.sampled_from(["Jan", "Feb", "Nov", "Dec"]),
        st.integers(0, 9999),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
    )
)
def test_well_shaped_dates_with_any_numbers_never_raise(value: str) -> None:
    # Shape right, numbers anywhere in range: a date or None, never an exception.
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)
