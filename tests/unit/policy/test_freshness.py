"""Freshness (RFC 9111 section 4.2): lifetime, heuristics, age, staleness."""

from __future__ import annotations

import pytest

from edgeproxy.http.cache_control import parse_cache_control
from edgeproxy.policy.freshness import (
    current_age,
    freshness,
    freshness_lifetime,
    heuristic_lifetime,
    is_fresh,
    may_serve_stale,
    stale_forbidden,
    ttl,
)
from edgeproxy.policy.settings import HEURISTIC_STATUSES, CachePolicy
from tests.unit.policy.helpers import T0, http_date, make_entry

DEFAULT = CachePolicy()
LM_1000 = {"Last-Modified": http_date(T0 - 1000)}  # heuristic 10% -> 100 s

# -- freshness_lifetime: section 4.2.1, first match wins ----------------------

# (id, fields, Date (None: no Date field), expected lifetime)
# fmt: off
LIFETIME: list[tuple[str, dict[str, str], float | None, float]] = [
    ("4.2.1-s-maxage-first", {"Cache-Control": "s-maxage=10, max-age=20",
                              "Expires": http_date(T0 + 30)}, T0, 10),
    ("4.2.1-s-maxage-below-max-age-order", {"Cache-Control": "max-age=20, s-maxage=10"}, T0, 10),
    ("4.2.1-max-age-before-expires", {"Cache-Control": "max-age=20",
                                      "Expires": http_date(T0 + 30)}, T0, 20),
    ("4.2.1-max-age-zero", {"Cache-Control": "max-age=0"}, T0, 0),
    ("4.2.1-expires-minus-date", {"Expires": http_date(T0 + 30)}, T0, 30),
    # Expires minus Date, not minus the receipt time.
    ("4.2.1-expires-minus-older-date", {"Expires": http_date(T0 + 30)}, T0 - 10, 40),
    # No Date: the time the message was received (RFC 9110 section 6.6.1).
    ("4.2.1-expires-no-date-uses-response-time", {"Expires": http_date(T0 + 30)}, None, 30),
    ("4.2.1-expires-in-past", {"Expires": http_date(T0 - 30)}, T0, 0),
    # Section 5.3: invalid dates, especially "0", are already expired.
    ("5.3-expires-zero", {"Expires": "0"}, T0, 0),
    ("5.3-expires-garbage", {"Expires": "tomorrow"}, T0, 0),
    ("5.3-expires-garbage-not-heuristic", {"Expires": "-1", **LM_1000}, T0, 0),
    # Section 4.2.1: invalid freshness information makes it stale; no fallback
    # to Expires or heuristics.
    ("4.2.1-invalid-max-age", {"Cache-Control": "max-age=abc",
                               "Expires": http_date(T0 + 30)}, T0, 0),
    ("4.2.1-negative-max-age", {"Cache-Control": "max-age=-5"}, T0, 0),
    ("4.2.1-fractional-max-age", {"Cache-Control": "max-age=1.5"}, T0, 0),
    ("4.2.1-invalid-s-maxage-not-max-age", {"Cache-Control": "s-maxage=x, max-age=60"}, T0, 0),
    ("4.2.1-conflicting-duplicate-max-age", {"Cache-Control": "max-age=10, max-age=20"}, T0, 0),
    ("4.2.1-identical-duplicate-max-age", {"Cache-Control": "max-age=10, max-age=10"}, T0, 10),
    ("5.2-quoted-max-age-tolerated", {"Cache-Control": 'max-age="30"'}, T0, 30),
    ("1.3-delta-seconds-capped", {"Cache-Control": "max-age=99999999999"}, T0, 2**31),
    # Section 4.2.2: no explicit time -> heuristic, or nothing.
    ("4.2.2-heuristic", LM_1000, T0, 100),
    ("4.2.2-no-last-modified", {}, T0, 0),
    ("4.2.2-explicit-beats-heuristic", {"Cache-Control": "max-age=5", **LM_1000}, T0, 5),
    # RFC 9213 section 2.2: a targeted field replaces Cache-Control and Expires.
    ("9213-cdn-max-age-wins", {"CDN-Cache-Control": "max-age=5",
                               "Cache-Control": "max-age=60"}, T0, 5),
    ("9213-edgeproxy-field-most-specific", {"Edgeproxy-Cache-Control": "max-age=7",
                                            "CDN-Cache-Control": "max-age=5"}, T0, 7),
    ("9213-cdn-field-hides-expires", {"CDN-Cache-Control": "public",
                                      "Expires": http_date(T0 + 30), **LM_1000}, T0, 100),
    ("9213-empty-cdn-field-ignored", {"CDN-Cache-Control": "",
                                      "Expires": http_date(T0 + 30)}, T0, 30),
]
# fmt: on


@pytest.mark.parametrize(
    ("fields", "date", "expected"), [pytest.param(*r[1:], id=r[0]) for r in LIFETIME]
)
def test_freshness_lifetime(fields: dict[str, str], date: float | None, expected: float) -> None:
    entry = make_entry(fields, date=date)
    assert freshness_lifetime(entry, DEFAULT) == expected


# Route overrides: force_ttl replaces the origin's answer, default_ttl stands
# in when there's no explicit lifetime (and replaces heuristics), max_ttl caps.
# fmt: off
OVERRIDES: list[tuple[str, CachePolicy, dict[str, str], float]] = [
    ("force-beats-max-age", CachePolicy(force_ttl=100), {"Cache-Control": "max-age=5"}, 100),
    ("force-beats-invalid", CachePolicy(force_ttl=100), {"Cache-Control": "max-age=x"}, 100),
    ("force-beats-nothing", CachePolicy(force_ttl=100), {}, 100),
    ("force-not-capped-by-max", CachePolicy(force_ttl=100, max_ttl=30), {}, 100),
    ("default-when-nothing", CachePolicy(default_ttl=50), {}, 50),
    ("default-loses-to-max-age", CachePolicy(default_ttl=50), {"Cache-Control": "max-age=5"}, 5),
    ("default-loses-to-expires", CachePolicy(default_ttl=50), {"Expires": http_date(T0 + 9)}, 9),
    ("default-loses-to-invalid-max-age", CachePolicy(default_ttl=50),
     {"Cache-Control": "max-age=x"}, 0),
    ("default-replaces-heuristic", CachePolicy(default_ttl=50), LM_1000, 50),
    ("max-caps-max-age", CachePolicy(max_ttl=30), {"Cache-Control": "max-age=60"}, 30),
    ("max-above-max-age", CachePolicy(max_ttl=30), {"Cache-Control": "max-age=10"}, 10),
    ("max-caps-s-maxage", CachePolicy(max_ttl=30), {"Cache-Control": "s-maxage=60"}, 30),
    ("max-caps-heuristic", CachePolicy(max_ttl=30), LM_1000, 30),
    ("max-caps-default", CachePolicy(default_ttl=50, max_ttl=30), {}, 30),
    ("max-zero", CachePolicy(max_ttl=0), {"Cache-Control": "max-age=60"}, 0),
]
# fmt: on


@pytest.mark.parametrize(
    ("policy", "fields", "expected"), [pytest.param(*r[1:], id=r[0]) for r in OVERRIDES]
)
def test_route_overrides(policy: CachePolicy, fields: dict[str, str], expected: float) -> None:
    assert freshness_lifetime(make_entry(fields), policy) == expected


def test_lifetime_memo_follows_the_policy() -> None:
    """The lifetime is kept with the entry per policy: a reload's new policy
    (another object) is worked out anew, and so is a changed entry."""
    entry = make_entry({"Cache-Control": "max-age=10"})
    assert freshness_lifetime(entry, DEFAULT) == 10
    assert freshness_lifetime(entry, CachePolicy(max_ttl=5)) == 5
    assert freshness_lifetime(entry, CachePolicy(force_ttl=7)) == 7
    assert freshness_lifetime(entry, DEFAULT) == 10
    changed = entry.with_changes(fields=make_entry({"Cache-Control": "max-age=3"}).fields)
    assert freshness_lifetime(changed, DEFAULT) == 3


def test_age_memo_is_per_entry() -> None:
    """The corrected initial age is fixed per entry; resident time is not."""
    entry = make_entry({"Age": "5"}, request_time=T0, response_time=T0, date=T0)
    assert current_age(entry, T0) == 5
    assert current_age(entry, T0 + 10) == 15
    assert current_age(entry.with_changes(response_time=T0 + 10), T0 + 10) == 15


# -- heuristic_lifetime: section 4.2.2 ------------------------------------------

# (id, status, fields, Date, policy, expected)
# fmt: off
HEURISTIC: list[tuple[str, int, dict[str, str], float | None, CachePolicy, float | None]] = [
    ("4.2.2-ten-percent", 200, LM_1000, T0, DEFAULT, 100),
    ("4.2.2-fraction-setting", 200, LM_1000, T0, CachePolicy(heuristic_fraction=0.5), 500),
    ("4.2.2-capped-by-default-max", 200, {"Last-Modified": http_date(T0 - 10_000_000)}, T0,
     DEFAULT, 86400),
    ("4.2.2-capped-by-setting", 200, LM_1000, T0, CachePolicy(heuristic_max=60), 60),
    # Interval runs from Last-Modified to Date, not to the receipt time.
    ("4.2.2-interval-to-date", 200, LM_1000, T0 - 500, DEFAULT, 50),
    ("4.2.2-no-date-uses-response-time", 200, LM_1000, None, DEFAULT, 100),
    ("4.2.2-last-modified-after-date", 200, {"Last-Modified": http_date(T0 + 100)}, T0,
     DEFAULT, 0),
    ("4.2.2-no-last-modified", 200, {"ETag": '"a"'}, T0, DEFAULT, None),
    ("4.2.2-invalid-last-modified", 200, {"Last-Modified": "yesterday"}, T0, DEFAULT, None),
    # Only heuristically cacheable statuses (RFC 9110 section 15.1) or public.
    ("4.2.2-302-not-heuristic", 302, LM_1000, T0, DEFAULT, None),
    ("4.2.2-500-not-heuristic", 500, LM_1000, T0, DEFAULT, None),
    ("5.2.2.9-302-public", 302, {"Cache-Control": "public", **LM_1000}, T0, DEFAULT, 100),
    # The operator's default_ttl replaces heuristics entirely.
    ("default-ttl-disables", 200, LM_1000, T0, CachePolicy(default_ttl=5), None),
]
# fmt: on


@pytest.mark.parametrize(
    ("status", "fields", "date", "policy", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in HEURISTIC],
)
def test_heuristic_lifetime(
    status: int,
    fields: dict[str, str],
    date: float | None,
    policy: CachePolicy,
    expected: float | None,
) -> None:
    assert heuristic_lifetime(make_entry(fields, status=status, date=date), policy) == expected


@pytest.mark.parametrize("status", sorted(HEURISTIC_STATUSES))
def test_every_heuristic_status(status: int) -> None:
    """RFC 9110 section 15.1: 200 203 204 206 300 301 308 404 405 410 414 501."""
    assert heuristic_lifetime(make_entry(LM_1000, status=status), DEFAULT) == 100


# -- current_age: section 4.2.3, the formulas term by term ----------------------

# (id, request_time, response_time, Date (None: absent), Age field, now,
#  apparent_age, response_delay, corrected_age_value, resident_time, current_age)
# apparent_age        = max(0, response_time - date_value)
# response_delay      = response_time - request_time
# corrected_age_value = age_value + response_delay
# corrected_initial_age = max(apparent_age, corrected_age_value)
# resident_time       = now - response_time
# current_age         = corrected_initial_age + resident_time
AgeRow = tuple[
    str, float, float, float | None, str | None, float, float, float, float, float, float
]
# fmt: off
AGE: list[AgeRow] = [
    ("nothing-elapsed", T0, T0, T0, None, T0, 0, 0, 0, 0, 0),
    ("resident-only", T0, T0, T0, None, T0 + 100, 0, 0, 0, 100, 100),
    ("age-field", T0, T0, T0, "30", T0 + 5, 0, 0, 30, 5, 35),
    ("response-delay", T0 - 5, T0, T0 - 5, None, T0 + 10, 5, 5, 5, 10, 15),
    ("delay-counts-with-age", T0 - 2, T0, T0, "10", T0, 0, 2, 12, 0, 12),
    ("fractional-delay", T0 - 0.5, T0, T0, None, T0 + 1, 0, 0.5, 0.5, 1, 1.5),
    # Date in the past (slow origin clock or an old response): apparent age wins.
    ("date-in-past", T0, T0, T0 - 60, None, T0, 60, 0, 0, 0, 60),
    ("apparent-beats-corrected", T0 - 2, T0, T0 - 100, "10", T0 + 1, 100, 2, 12, 1, 101),
    # Date in the future (fast origin clock): apparent age is clamped at zero.
    ("date-in-future", T0, T0, T0 + 60, None, T0 + 5, 0, 0, 0, 5, 5),
    ("date-in-future-with-age", T0 - 1, T0, T0 + 60, "100", T0, 0, 1, 101, 0, 101),
    # No Date: it's the receipt time, so apparent age is zero.
    ("no-date", T0 - 3, T0, None, None, T0 + 7, 0, 3, 3, 7, 10),
    # Section 5.1 / 1.3: invalid Age values are ignored; huge ones capped.
    ("age-invalid-text", T0, T0, T0, "abc", T0, 0, 0, 0, 0, 0),
    ("age-negative", T0, T0, T0, "-50", T0, 0, 0, 0, 0, 0),
    ("age-fraction", T0, T0, T0, "1.5", T0, 0, 0, 0, 0, 0),
    ("age-non-ascii-digits", T0, T0, T0, "\u0663\u0660", T0, 0, 0, 0, 0, 0),
    ("age-first-of-list", T0, T0, T0, "10, 20", T0, 0, 0, 10, 0, 10),
    ("age-capped", T0, T0, T0, "99999999999", T0, 0, 0, 2**31, 0, 2**31),
    ("age-5000-digits-capped", T0, T0, T0, "9" * 5000, T0, 0, 0, 2**31, 0, 2**31),
    ("age-leading-zeros", T0, T0, T0, "0" * 20 + "7", T0, 0, 0, 7, 0, 7),
]
# fmt: on


@pytest.mark.parametrize(
    ("request_time", "response_time", "date", "age_field", "now", "apparent_age",
     "response_delay", "corrected_age_value", "resident_time", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in AGE],
)  # fmt: skip
def test_current_age(
    request_time: float,
    response_time: float,
    date: float | None,
    age_field: str | None,
    now: float,
    apparent_age: float,
    response_delay: float,
    corrected_age_value: float,
    resident_time: float,
    expected: float,
) -> None:
    # The row's terms follow the RFC's formulas ...
    date_value = response_time if date is None else date
    assert apparent_age == max(0, response_time - date_value)
    assert response_delay == response_time - request_time
    assert resident_time == now - response_time
    assert expected == max(apparent_age, corrected_age_value) + resident_time
    # ... and the implementation agrees with them.
    fields = {} if age_field is None else {"Age": age_field}
    entry = make_entry(fields, request_time=request_time, response_time=response_time, date=date)
    assert current_age(entry, now) == expected


def test_age_never_negative_when_clock_steps_back() -> None:
    """A now before response_time (clock stepped back) adds no negative resident time."""
    entry = make_entry({"Age": "5"}, response_time=T0)
    assert current_age(entry, T0 - 100) == 5


# -- is_fresh and ttl: section 4.2, response_is_fresh = lifetime > current_age -

# (id, fields, seconds after receipt, soft purged, fresh, ttl)
# fmt: off
FRESH: list[tuple[str, dict[str, str], float, bool, bool, int]] = [
    ("4.2-young", {"Cache-Control": "max-age=60"}, 10, False, True, 50),
    ("4.2-last-fresh-second", {"Cache-Control": "max-age=60"}, 59, False, True, 1),
    ("4.2-age-equals-lifetime-is-stale", {"Cache-Control": "max-age=60"}, 60, False, False, 0),
    ("4.2-stale", {"Cache-Control": "max-age=60"}, 70, False, False, -10),
    ("4.2-fractional-truncated", {"Cache-Control": "max-age=60"}, 10.5, False, True, 49),
    ("4.2-age-field-counts", {"Cache-Control": "max-age=60", "Age": "70"}, 0, False, False, -10),
    ("4.2-zero-lifetime", {"Cache-Control": "max-age=0"}, 0, False, False, 0),
    ("4.2-no-lifetime", {}, 0, False, False, 0),
    ("soft-purged-is-stale", {"Cache-Control": "max-age=60"}, 10, True, False, 0),
    ("soft-purged-stale-keeps-negative-ttl", {"Cache-Control": "max-age=60"}, 70, True, False,
     -10),
]
# fmt: on


@pytest.mark.parametrize(
    ("fields", "elapsed", "soft_purged", "fresh", "expected_ttl"),
    [pytest.param(*r[1:], id=r[0]) for r in FRESH],
)
def test_is_fresh_and_ttl(
    fields: dict[str, str], elapsed: float, soft_purged: bool, fresh: bool, expected_ttl: int
) -> None:
    entry = make_entry(fields, soft_purged=soft_purged)
    assert is_fresh(entry, DEFAULT, T0 + elapsed) is fresh
    assert ttl(entry, DEFAULT, T0 + elapsed) == expected_ttl
    # decide() takes all four at once; the same answers.
    age, lifetime = current_age(entry, T0 + elapsed), freshness_lifetime(entry, DEFAULT)
    assert freshness(entry, DEFAULT, T0 + elapsed) == (age, lifetime, fresh, expected_ttl)


# -- stale_forbidden: section 4.2.4 and the directives it names ----------------

# fmt: off
STALE_FORBIDDEN: list[tuple[str, str, bool]] = [
    ("5.2.2.2-must-revalidate", "max-age=60, must-revalidate", True),
    ("5.2.2.8-proxy-revalidate", "max-age=60, proxy-revalidate", True),
    ("5.2.2.10-s-maxage", "s-maxage=60", True),
    ("5.2.2.10-invalid-s-maxage", "s-maxage=x", True),
    ("5.2.2.4-no-cache", "no-cache", True),
    ("5.2.2.4-no-cache-qualified-allows", 'no-cache="set-cookie", max-age=60', False),
    ("max-age-only", "max-age=60", False),
    ("public", "public, max-age=60", False),
    ("empty", "", False),
    ("case-insensitive", "Must-Revalidate", True),
]
# fmt: on


@pytest.mark.parametrize(
    ("cc", "forbidden"), [pytest.param(*r[1:], id=r[0]) for r in STALE_FORBIDDEN]
)
def test_stale_forbidden(cc: str, forbidden: bool) -> None:
    assert stale_forbidden(parse_cache_control(cc)) is forbidden


# -- may_serve_stale: request max-stale (5.2.1.2) ------------------------------

# (id, response Cache-Control, request Cache-Control, seconds stale, allowed)
# The stored response has max-age=60 unless the row says otherwise.
# fmt: off
MAX_STALE: list[tuple[str, str, str, float, bool]] = [
    ("no-max-stale", "max-age=60", "", 1, False),
    ("5.2.1.2-bare-any-staleness", "max-age=60", "max-stale", 10**6, True),
    ("5.2.1.2-within", "max-age=60", "max-stale=30", 29, True),
    ("5.2.1.2-at-limit", "max-age=60", "max-stale=30", 30, True),
    ("5.2.1.2-beyond", "max-age=60", "max-stale=30", 31, False),
    ("5.2.1.2-zero-at-expiry", "max-age=60", "max-stale=0", 0, True),
    ("5.2.1.2-zero-beyond", "max-age=60", "max-stale=0", 1, False),
    ("5.2.1.2-invalid-value", "max-age=60", "max-stale=soon", 1, False),
    ("5.2.2.2-must-revalidate", "max-age=60, must-revalidate", "max-stale", 1, False),
    ("5.2.2.8-proxy-revalidate", "max-age=60, proxy-revalidate", "max-stale", 1, False),
    ("5.2.2.10-s-maxage", "s-maxage=60", "max-stale", 1, False),
    ("5.2.2.4-no-cache", "max-age=60, no-cache", "max-stale", 1, False),
    ("5.2.2.4-qualified-no-cache", 'max-age=60, no-cache="x"', "max-stale", 1, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("response_cc", "request_cc", "staleness", "allowed"),
    [pytest.param(*r[1:], id=r[0]) for r in MAX_STALE],
)
def test_may_serve_stale(
    response_cc: str, request_cc: str, staleness: float, allowed: bool
) -> None:
    entry = make_entry({"Cache-Control": response_cc})
    now = T0 + 60 + staleness
    assert not is_fresh(entry, DEFAULT, now)
    assert may_serve_stale(entry, parse_cache_control(request_cc), DEFAULT, now) is allowed
