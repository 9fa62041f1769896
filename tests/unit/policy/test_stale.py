"""Serving stale (RFC 9111 section 4.2.4, RFC 5861) and keeping entries past expiry."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.http.cache_control import EMPTY, parse_cache_control, request_cache_control
from edgeproxy.http.cache_status import Fwd
from edgeproxy.http.conditionals import Precondition
from edgeproxy.policy.decide import (
    Decision,
    Fetch,
    OnlyIfCachedMiss,
    Pass,
    Revalidate,
    Serve,
    decide,
)
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import current_age, freshness_lifetime, is_fresh
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.stale import (
    ServeWhileRevalidating,
    discardable,
    expires_at,
    is_error_status,
    keep_until,
    may_serve_stale_if_error,
    may_serve_while_revalidating,
    retention,
    stale_if_error_status,
    stale_if_error_window,
    stale_on_error,
    stale_while_revalidate_status,
    stale_while_revalidate_window,
    staleness,
    with_stale_while_revalidate,
)
from tests.unit.policy.helpers import T0, http_date, make_entry, make_request

DEFAULT = CachePolicy()
ETAG = {"ETag": '"a"'}
LM = {"Last-Modified": http_date(T0 - 1000)}  # heuristic lifetime 100 s


def req_cc(h: dict[str, str]) -> Any:
    return make_request("GET", h).cc


# -- stale-while-revalidate: RFC 5861 section 3 ------------------------------

# (id, response fields, request fields, seconds since receipt, policy,
#  soft purged, allowed). max-age=60 responses expire at 60 s.
SwrRow = tuple[str, dict[str, str], dict[str, str], float, CachePolicy, bool, bool]
SWR30 = {"Cache-Control": "max-age=60, stale-while-revalidate=30"}
# fmt: off
SWR: list[SwrRow] = [
    ("5861-3-at-expiry", SWR30, {}, 60, DEFAULT, False, True),
    ("5861-3-within", SWR30, {}, 75, DEFAULT, False, True),
    ("5861-3-window-end", SWR30, {}, 90, DEFAULT, False, True),
    ("5861-3-beyond", SWR30, {}, 90.5, DEFAULT, False, False),
    ("5861-3-with-validator", {**SWR30, **ETAG}, {}, 75, DEFAULT, False, True),
    # A fresh entry is within any window; decide() serves it without us.
    ("5861-3-fresh", SWR30, {}, 10, DEFAULT, False, True),
    ("5861-3-zero-grants-nothing", {"Cache-Control": "max-age=60, stale-while-revalidate=0"},
     {}, 60, DEFAULT, False, False),
    ("5861-3-absent", {"Cache-Control": "max-age=60"}, {}, 61, DEFAULT, False, False),
    ("5861-3-quoted-tolerated", {"Cache-Control": 'max-age=60, stale-while-revalidate="30"'},
     {}, 75, DEFAULT, False, True),
    # An invalid value grants nothing and does not fall back to the route.
    ("5861-3-invalid", {"Cache-Control": "max-age=60, stale-while-revalidate=soon"}, {}, 61,
     CachePolicy(stale_while_revalidate=100), False, False),
    ("5861-3-negative", {"Cache-Control": "max-age=60, stale-while-revalidate=-5"}, {}, 61,
     DEFAULT, False, False),
    ("5861-3-huge-capped", {"Cache-Control": "max-age=60, stale-while-revalidate=" + "9" * 50},
     {}, 1e9, DEFAULT, False, True),
    # Route default when the response is silent; the response wins either way.
    ("route-default", {"Cache-Control": "max-age=60"}, {}, 80,
     CachePolicy(stale_while_revalidate=30), False, True),
    ("route-default-beyond", {"Cache-Control": "max-age=60"}, {}, 91,
     CachePolicy(stale_while_revalidate=30), False, False),
    ("route-default-zero", {"Cache-Control": "max-age=60"}, {}, 60,
     CachePolicy(stale_while_revalidate=0), False, False),
    ("response-narrower-than-route", {"Cache-Control": "max-age=60, stale-while-revalidate=10"},
     {}, 75, CachePolicy(stale_while_revalidate=100), False, False),
    ("response-wider-than-route", {"Cache-Control": "max-age=60, stale-while-revalidate=100"},
     {}, 150, CachePolicy(stale_while_revalidate=10), False, True),
    # 4.2.3: the Age field counts toward staleness.
    ("4.2.3-age-counts", {**SWR30, "Age": "20"}, {}, 65, DEFAULT, False, True),
    ("4.2.3-age-counts-beyond", {**SWR30, "Age": "20"}, {}, 71, DEFAULT, False, False),
    ("4.2.2-heuristic-lifetime", {**LM, "Cache-Control": "stale-while-revalidate=30"}, {},
     120, DEFAULT, False, True),
    # 4.2.4: directives that forbid stale forbid this too.
    ("5.2.2.2-must-revalidate", {"Cache-Control": "max-age=60, must-revalidate, "
                                 "stale-while-revalidate=30"}, {}, 61, DEFAULT, False, False),
    ("5.2.2.8-proxy-revalidate", {"Cache-Control": "max-age=60, proxy-revalidate, "
                                  "stale-while-revalidate=30"}, {}, 61, DEFAULT, False, False),
    ("5.2.2.10-s-maxage", {"Cache-Control": "s-maxage=60, stale-while-revalidate=30"}, {}, 61,
     DEFAULT, False, False),
    ("5.2.2.4-no-cache", {"Cache-Control": "max-age=60, no-cache, stale-while-revalidate=30"},
     {}, 61, DEFAULT, False, False),
    ("5.2.2.4-qualified-no-cache", {"Cache-Control": 'max-age=60, no-cache="x-a", '
                                    "stale-while-revalidate=30"}, {}, 61, DEFAULT, False, True),
    ("5.2.2.2-must-revalidate-route-default", {"Cache-Control": "max-age=60, must-revalidate"},
     {}, 61, CachePolicy(stale_while_revalidate=30), False, False),
    # The request may refuse stale (5.2.1).
    ("5.2.1.4-request-no-cache", SWR30, {"Cache-Control": "no-cache"}, 61, DEFAULT, False,
     False),
    ("5.4-pragma-no-cache", SWR30, {"Pragma": "no-cache"}, 61, DEFAULT, False, False),
    ("5.2.1.3-min-fresh", SWR30, {"Cache-Control": "min-fresh=0"}, 61, DEFAULT, False, False),
    ("5.2.1.1-max-age-refuses-stale", SWR30, {"Cache-Control": "max-age=1000"}, 61, DEFAULT,
     False, False),
    ("5.2.1.1-max-age-with-max-stale", SWR30, {"Cache-Control": "max-age=1000, max-stale"}, 61,
     DEFAULT, False, True),
    ("5.2.1.1-max-age-bounds-with-max-stale", SWR30,
     {"Cache-Control": "max-age=65, max-stale"}, 70, DEFAULT, False, False),
    ("5.2.1.1-invalid-max-age", SWR30, {"Cache-Control": "max-age=x, max-stale"}, 61, DEFAULT,
     False, False),
    # max-stale is a permission: it never narrows the origin's window.
    ("5.2.1.2-max-stale-does-not-narrow", SWR30, {"Cache-Control": "max-stale=1"}, 80, DEFAULT,
     False, True),
    # RFC 9213: a targeted field replaces Cache-Control, stale directives too.
    ("9213-cdn-field", {"CDN-Cache-Control": "max-age=60, stale-while-revalidate=30"}, {}, 75,
     DEFAULT, False, True),
    ("9213-cdn-field-hides-cc", {"CDN-Cache-Control": "max-age=60", **SWR30}, {}, 75, DEFAULT,
     False, False),
    # Soft purge: as if it had just expired.
    ("soft-purged-fresh", SWR30, {}, 10, DEFAULT, True, True),
    ("soft-purged-no-window", {"Cache-Control": "max-age=60"}, {}, 10, DEFAULT, True, False),
    ("soft-purged-past-window", SWR30, {}, 91, DEFAULT, True, False),
    ("soft-purged-route-default", {"Cache-Control": "max-age=600"}, {}, 10,
     CachePolicy(stale_while_revalidate=5), True, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("fields", "request_fields", "elapsed", "policy", "soft_purged", "allowed"),
    [pytest.param(*r[1:], id=r[0]) for r in SWR],
)
def test_may_serve_while_revalidating(
    fields: dict[str, str],
    request_fields: dict[str, str],
    elapsed: float,
    policy: CachePolicy,
    soft_purged: bool,
    allowed: bool,
) -> None:
    entry = make_entry(fields, soft_purged=soft_purged)
    got = may_serve_while_revalidating(entry, req_cc(request_fields), policy, T0 + elapsed)
    assert got is allowed


# (id, response Cache-Control, policy, window)
# fmt: off
SWR_WINDOW: list[tuple[str, str, CachePolicy, float]] = [
    ("5861-3-response", "max-age=1, stale-while-revalidate=30", DEFAULT, 30),
    ("route-default", "max-age=1", CachePolicy(stale_while_revalidate=7), 7),
    ("response-beats-route", "stale-while-revalidate=3", CachePolicy(stale_while_revalidate=7),
     3),
    ("none", "max-age=1", DEFAULT, 0),
    ("invalid-is-zero", "stale-while-revalidate=x", CachePolicy(stale_while_revalidate=7), 0),
    ("1.3-capped", "stale-while-revalidate=99999999999", DEFAULT, 2**31),
    ("negative-route-default-clamped", "", CachePolicy(stale_while_revalidate=-1), 0),
]
# fmt: on


@pytest.mark.parametrize(
    ("cc", "policy", "window"), [pytest.param(*r[1:], id=r[0]) for r in SWR_WINDOW]
)
def test_stale_while_revalidate_window(cc: str, policy: CachePolicy, window: float) -> None:
    entry = make_entry({"Cache-Control": cc})
    assert stale_while_revalidate_window(entry, policy) == window


# -- stale-if-error: RFC 5861 section 4 --------------------------------------

SIE30 = {"Cache-Control": "max-age=60, stale-if-error=30"}
# (id, response fields, request fields, seconds since receipt, policy,
#  soft purged, allowed)
# fmt: off
SIE: list[SwrRow] = [
    ("5861-4-at-expiry", SIE30, {}, 60, DEFAULT, False, True),
    ("5861-4-within", SIE30, {}, 75, DEFAULT, False, True),
    ("5861-4-window-end", SIE30, {}, 90, DEFAULT, False, True),
    ("5861-4-beyond", SIE30, {}, 91, DEFAULT, False, False),
    ("5861-4-absent", {"Cache-Control": "max-age=60"}, {}, 61, DEFAULT, False, False),
    ("5861-4-zero", {"Cache-Control": "max-age=60, stale-if-error=0"}, {}, 60, DEFAULT, False,
     False),
    ("5861-4-invalid-response", {"Cache-Control": "max-age=60, stale-if-error=x"}, {}, 61,
     CachePolicy(stale_if_error=100), False, False),
    # A fresh entry that a client's no-cache sent upstream: within the window.
    ("5861-4-fresh", SIE30, {"Cache-Control": "no-cache"}, 10, DEFAULT, False, True),
    ("5861-4-fresh-needs-a-window", {"Cache-Control": "max-age=60"},
     {"Cache-Control": "no-cache"}, 10, DEFAULT, False, False),
    # In a request it scopes to that request: it wins both ways.
    ("5861-4-request-permits", {"Cache-Control": "max-age=60"},
     {"Cache-Control": "stale-if-error=100"}, 150, DEFAULT, False, True),
    ("5861-4-request-limits", {"Cache-Control": "max-age=60, stale-if-error=100"},
     {"Cache-Control": "stale-if-error=10"}, 75, DEFAULT, False, False),
    ("5861-4-request-zero", SIE30, {"Cache-Control": "stale-if-error=0"}, 60, DEFAULT, False,
     False),
    ("5861-4-request-invalid-ignored", SIE30, {"Cache-Control": "stale-if-error=soon"}, 75,
     DEFAULT, False, True),
    ("5861-4-request-over-route", {"Cache-Control": "max-age=60"},
     {"Cache-Control": "stale-if-error=5"}, 70, CachePolicy(stale_if_error=100), False, False),
    # Route default.
    ("route-default", {"Cache-Control": "max-age=60"}, {}, 80, CachePolicy(stale_if_error=30),
     False, True),
    ("route-default-beyond", {"Cache-Control": "max-age=60"}, {}, 91,
     CachePolicy(stale_if_error=30), False, False),
    ("response-beats-route", {"Cache-Control": "max-age=60, stale-if-error=10"}, {}, 75,
     CachePolicy(stale_if_error=100), False, False),
    # 4.2.4: never where stale is forbidden, even with the client's permission.
    ("5.2.2.2-must-revalidate", {"Cache-Control": "max-age=60, must-revalidate, "
                                 "stale-if-error=30"}, {}, 61, DEFAULT, False, False),
    ("5.2.2.2-must-revalidate-request-sie", {"Cache-Control": "max-age=60, must-revalidate"},
     {"Cache-Control": "stale-if-error=100"}, 61, DEFAULT, False, False),
    ("5.2.2.8-proxy-revalidate", {"Cache-Control": "max-age=60, proxy-revalidate, "
                                  "stale-if-error=30"}, {}, 61, DEFAULT, False, False),
    ("5.2.2.10-s-maxage", {"Cache-Control": "s-maxage=60, stale-if-error=30"}, {}, 61,
     DEFAULT, False, False),
    ("5.2.2.4-no-cache", {"Cache-Control": "max-age=60, no-cache, stale-if-error=30"}, {}, 61,
     DEFAULT, False, False),
    ("5.2.2.4-no-cache-route-default", {"Cache-Control": "no-cache"}, {}, 1,
     CachePolicy(stale_if_error=30), False, False),
    # "regardless of other freshness information": the request's directives
    # do not block it.
    ("5861-4-request-no-cache", SIE30, {"Cache-Control": "no-cache"}, 75, DEFAULT, False, True),
    ("5861-4-request-max-age", SIE30, {"Cache-Control": "max-age=0"}, 75, DEFAULT, False, True),
    ("5861-4-request-min-fresh", SIE30, {"Cache-Control": "min-fresh=100"}, 75, DEFAULT, False,
     True),
    ("9213-cdn-field", {"CDN-Cache-Control": "max-age=60, stale-if-error=30"}, {}, 75,
     DEFAULT, False, True),
    ("soft-purged-fresh", SIE30, {}, 10, DEFAULT, True, True),
    ("soft-purged-no-window", {"Cache-Control": "max-age=60"}, {}, 10, DEFAULT, True, False),
    ("soft-purged-past-window", SIE30, {}, 91, DEFAULT, True, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("fields", "request_fields", "elapsed", "policy", "soft_purged", "allowed"),
    [pytest.param(*r[1:], id=r[0]) for r in SIE],
)
def test_may_serve_stale_if_error(
    fields: dict[str, str],
    request_fields: dict[str, str],
    elapsed: float,
    policy: CachePolicy,
    soft_purged: bool,
    allowed: bool,
) -> None:
    entry = make_entry(fields, soft_purged=soft_purged)
    got = may_serve_stale_if_error(entry, req_cc(request_fields), policy, T0 + elapsed)
    assert got is allowed


# (id, response Cache-Control, request Cache-Control, policy, window)
# fmt: off
SIE_WINDOW: list[tuple[str, str, str, CachePolicy, float]] = [
    ("5861-4-response", "stale-if-error=30", "", DEFAULT, 30),
    ("5861-4-request-wins", "stale-if-error=30", "stale-if-error=5", DEFAULT, 5),
    ("5861-4-request-wins-larger", "stale-if-error=30", "stale-if-error=50", DEFAULT, 50),
    ("5861-4-request-invalid", "stale-if-error=30", "stale-if-error=", DEFAULT, 30),
    ("5861-4-request-bare", "stale-if-error=30", "stale-if-error", DEFAULT, 30),
    ("route-default", "", "", CachePolicy(stale_if_error=9), 9),
    ("response-invalid", "stale-if-error=-1", "", CachePolicy(stale_if_error=9), 0),
    ("none", "max-age=5", "", DEFAULT, 0),
]
# fmt: on


@pytest.mark.parametrize(
    ("cc", "request_cc", "policy", "window"),
    [pytest.param(*r[1:], id=r[0]) for r in SIE_WINDOW],
)
def test_stale_if_error_window(
    cc: str, request_cc: str, policy: CachePolicy, window: float
) -> None:
    entry = make_entry({"Cache-Control": cc})
    assert stale_if_error_window(entry, parse_cache_control(request_cc), policy) == window


# RFC 5861 section 4: "any situation that would result in a 500, 502, 503,
# or 504 HTTP response status code".
@pytest.mark.parametrize(
    ("status", "error"),
    [(500, True), (502, True), (503, True), (504, True), (501, False), (505, False),
     (599, False), (429, False), (404, False), (304, False), (200, False)],
)  # fmt: skip
def test_is_error_status(status: int, error: bool) -> None:
    assert is_error_status(status) is error


# -- keeping entries: expiry + max(swr, sie, grace if validator) -------------

# (id, response fields, policy, make_entry extras, keep_until - T0)
KeepRow = tuple[str, dict[str, str], CachePolicy, dict[str, Any], float]
MA60 = {"Cache-Control": "max-age=60"}
# fmt: off
KEEP: list[KeepRow] = [
    ("no-validator-no-window", MA60, DEFAULT, {}, 60),
    ("etag-kept-for-grace", {**MA60, **ETAG}, DEFAULT, {}, 60 + DEFAULT.grace),
    ("last-modified-kept-for-grace", {**MA60, **LM}, CachePolicy(grace=100), {}, 160),
    ("grace-zero", {**MA60, **ETAG}, CachePolicy(grace=0), {}, 60),
    ("grace-negative-clamped", {**MA60, **ETAG}, CachePolicy(grace=-5), {}, 60),
    ("grace-needs-validator", MA60, CachePolicy(grace=1000), {}, 60),
    ("5861-3-swr", {"Cache-Control": "max-age=60, stale-while-revalidate=30"}, DEFAULT, {}, 90),
    ("5861-4-sie", {"Cache-Control": "max-age=60, stale-if-error=300"}, DEFAULT, {}, 360),
    ("largest-wins-sie", {"Cache-Control": "max-age=60, stale-while-revalidate=30, "
                          "stale-if-error=300", **ETAG}, CachePolicy(grace=100), {}, 360),
    ("largest-wins-grace", {"Cache-Control": "max-age=60, stale-while-revalidate=30", **ETAG},
     CachePolicy(grace=1000), {}, 1060),
    ("route-defaults", MA60, CachePolicy(stale_while_revalidate=10, stale_if_error=20), {}, 80),
    ("grace-forever", {**MA60, **ETAG}, CachePolicy(grace=math.inf), {}, math.inf),
    # 4.2.4: stale is forbidden, so only revalidation keeps it.
    ("5.2.2.2-no-stale-window", {"Cache-Control": "max-age=60, must-revalidate, "
                                 "stale-if-error=300"}, DEFAULT, {}, 60),
    ("5.2.2.2-kept-for-revalidation", {"Cache-Control": "max-age=60, must-revalidate, "
                                       "stale-if-error=300", **ETAG},
     CachePolicy(grace=100), {}, 160),
    # 4.2.3: expiry is when current_age reaches the lifetime.
    ("4.2.3-age-field", {**MA60, "Age": "20"}, DEFAULT, {}, 40),
    ("4.2.3-arrived-stale", {**MA60, "Age": "100"}, DEFAULT, {}, -40),
    ("4.2.3-response-delay", MA60, DEFAULT, {"request_time": T0 - 5}, 55),
    ("4.2.1-no-lifetime", {}, DEFAULT, {}, 0),
    ("force-ttl", MA60, CachePolicy(force_ttl=10), {}, 10),
    # Soft purge does not move it: a purged entry still serves stale as before.
    ("soft-purged", {"Cache-Control": "max-age=60, stale-if-error=30"}, DEFAULT,
     {"soft_purged": True}, 90),
]
# fmt: on


@pytest.mark.parametrize(
    ("fields", "policy", "extra", "expected"), [pytest.param(*r[1:], id=r[0]) for r in KEEP]
)
def test_keep_until(
    fields: dict[str, str], policy: CachePolicy, extra: dict[str, Any], expected: float
) -> None:
    entry = make_entry(fields, **extra)
    assert keep_until(entry, policy) == T0 + expected
    if expected < 0:  # useless on arrival (before it, resident time is 0)
        assert discardable(entry, policy, T0)
    elif math.isfinite(expected):
        assert not discardable(entry, policy, T0 + expected)
        assert discardable(entry, policy, T0 + expected + 0.5)
    else:
        assert not discardable(entry, policy, T0 + 1e12)


def test_default_grace_keeps_revalidatable_entries() -> None:
    """The default must not drop what decide() would revalidate (4.3.1)."""
    assert DEFAULT.grace > 0
    entry = make_entry({**MA60, **ETAG})
    assert not discardable(entry, DEFAULT, T0 + 3600)


# -- Decisions: decide() and then the stale extensions -----------------------

SWR_STALE = {"Cache-Control": "max-age=60, stale-while-revalidate=30"}


def swr_summary(d: Decision | ServeWhileRevalidating) -> tuple[Any, ...]:
    match d:
        case ServeWhileRevalidating(serve=s, background=Revalidate(fwd=fwd) as b):
            return ("SWR", s.stale, s.age, s.ttl, s.outcome, "Revalidate", fwd, b.entry is s.entry)
        case ServeWhileRevalidating(serve=s, background=Fetch(fwd=fwd)):
            return ("SWR", s.stale, s.age, s.ttl, s.outcome, "Fetch", fwd, True)
        case Serve():
            return ("Serve", d.stale)
        case Revalidate(fwd=fwd) | Fetch(fwd=fwd) | Pass(fwd=fwd):
            return (type(d).__name__, fwd)
        case OnlyIfCachedMiss():
            return ("OnlyIfCachedMiss",)
    raise AssertionError(d)


PASS, NOT_MODIFIED = Precondition.PASS, Precondition.NOT_MODIFIED
# (id, method, request fields, stored fields (None: nothing), extras, elapsed,
#  policy, expected summary)
SwrDecisionRow = tuple[
    str,
    str,
    dict[str, str],
    dict[str, str] | None,
    dict[str, Any],
    float,
    CachePolicy,
    tuple[Any, ...],
]
# fmt: off
SWR_DECISIONS: list[SwrDecisionRow] = [
    ("5861-3-revalidate-in-background", "GET", {}, {**SWR_STALE, **ETAG}, {}, 70, DEFAULT,
     ("SWR", True, 70, -10, PASS, "Revalidate", Fwd.STALE, True)),
    ("5861-3-refetch-without-validator", "GET", {}, SWR_STALE, {}, 70, DEFAULT,
     ("SWR", True, 70, -10, PASS, "Fetch", Fwd.STALE, True)),
    ("5861-3-head", "HEAD", {}, SWR_STALE, {}, 70, DEFAULT,
     ("SWR", True, 70, -10, PASS, "Fetch", Fwd.STALE, True)),
    ("5861-3-route-default", "GET", {}, {**MA60, **ETAG}, {}, 70,
     CachePolicy(stale_while_revalidate=30),
     ("SWR", True, 70, -10, PASS, "Revalidate", Fwd.STALE, True)),
    ("5861-3-beyond-window", "GET", {}, {**SWR_STALE, **ETAG}, {}, 91, DEFAULT,
     ("Revalidate", Fwd.STALE)),
    ("4.2-fresh-untouched", "GET", {}, SWR_STALE, {}, 10, DEFAULT, ("Serve", False)),
    ("4-miss-untouched", "GET", {}, None, {}, 0, DEFAULT, ("Fetch", Fwd.URI_MISS)),
    ("4-post-untouched", "POST", {}, SWR_STALE, {}, 70, DEFAULT, ("Pass", Fwd.METHOD)),
    ("5.2.1.4-no-cache-untouched", "GET", {"Cache-Control": "no-cache"},
     {**SWR_STALE, **ETAG}, {}, 70, DEFAULT, ("Revalidate", Fwd.REQUEST)),
    ("5.2.1.1-max-age-on-fresh-untouched", "GET", {"Cache-Control": "max-age=5"},
     SWR_STALE, {}, 10, DEFAULT, ("Fetch", Fwd.REQUEST)),
    ("5.2.2.2-must-revalidate-untouched", "GET", {},
     {"Cache-Control": "max-age=60, must-revalidate, stale-while-revalidate=30", **ETAG}, {},
     70, DEFAULT, ("Revalidate", Fwd.STALE)),
    # 5.2.1.7: within the window a stale response is consistent with the request.
    ("5.2.1.7-only-if-cached-within", "GET", {"Cache-Control": "only-if-cached"}, SWR_STALE, {},
     70, DEFAULT, ("SWR", True, 70, -10, PASS, "Fetch", Fwd.STALE, True)),
    ("5.2.1.7-only-if-cached-beyond", "GET", {"Cache-Control": "only-if-cached"}, SWR_STALE,
     {}, 91, DEFAULT, ("OnlyIfCachedMiss",)),
    # A max-stale Serve within the window also refreshes the entry.
    ("5.2.1.2-max-stale-serve-refreshed", "GET", {"Cache-Control": "max-stale"},
     {**SWR_STALE, **ETAG}, {}, 70, DEFAULT,
     ("SWR", True, 70, -10, PASS, "Revalidate", Fwd.STALE, True)),
    ("5.2.1.2-max-stale-beyond-window", "GET", {"Cache-Control": "max-stale"}, SWR_STALE, {},
     500, DEFAULT, ("Serve", True)),
    # RFC 9110 13.2.2: preconditions are answered from the stale response.
    ("13.2.2-if-none-match", "GET", {"If-None-Match": '"a"'}, {**SWR_STALE, **ETAG}, {}, 70,
     DEFAULT, ("SWR", True, 70, -10, NOT_MODIFIED, "Revalidate", Fwd.STALE, True)),
    # Soft purge: served as just expired (ttl 0), refreshed in the background.
    ("soft-purged", "GET", {}, {**SWR_STALE, **ETAG}, {"soft_purged": True}, 10, DEFAULT,
     ("SWR", True, 10, 0, PASS, "Revalidate", Fwd.STALE, True)),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "request_fields", "stored", "extra", "elapsed", "policy", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in SWR_DECISIONS],
)
def test_with_stale_while_revalidate(
    method: str,
    request_fields: dict[str, str],
    stored: dict[str, str] | None,
    extra: dict[str, Any],
    elapsed: float,
    policy: CachePolicy,
    expected: tuple[Any, ...],
) -> None:
    request = make_request(method, request_fields)
    candidates = [] if stored is None else [make_entry(stored, **extra)]
    now = T0 + elapsed
    d = decide(request, candidates, policy, now)
    assert swr_summary(with_stale_while_revalidate(request, candidates, d, policy, now)) == (
        expected
    )


SIE_STALE = {"Cache-Control": "max-age=60, stale-if-error=30"}
# (id, method, request fields, stored fields (None: nothing), make_entry
#  extras, elapsed when the origin failed, policy, (stale, age, ttl, outcome)
#  of the stored response to send instead, or None)
SieDecisionRow = tuple[
    str,
    str,
    dict[str, str],
    dict[str, str] | None,
    dict[str, Any],
    float,
    CachePolicy,
    tuple[Any, ...] | None,
]
# fmt: off
SIE_DECISIONS: list[SieDecisionRow] = [
    ("5861-4-revalidate-failed", "GET", {}, {**SIE_STALE, **ETAG}, {}, 70, DEFAULT,
     (True, 70, -10, PASS)),
    ("5861-4-fetch-failed", "GET", {}, SIE_STALE, {}, 70, DEFAULT, (True, 70, -10, PASS)),
    ("5861-4-beyond", "GET", {}, {**SIE_STALE, **ETAG}, {}, 91, DEFAULT, None),
    ("5861-4-route-default", "GET", {}, MA60, {}, 70, CachePolicy(stale_if_error=30),
     (True, 70, -10, PASS)),
    ("5861-4-request-permits", "GET", {"Cache-Control": "stale-if-error=60"}, MA60, {}, 100,
     DEFAULT, (True, 100, -40, PASS)),
    # A fresh response a client's no-cache sent upstream is not stale.
    ("5861-4-fresh-after-no-cache", "GET", {"Cache-Control": "no-cache"}, SIE_STALE, {}, 10,
     DEFAULT, (False, 10, 50, PASS)),
    ("5.2.2.2-must-revalidate", "GET", {},
     {"Cache-Control": "max-age=60, must-revalidate, stale-if-error=30", **ETAG}, {}, 70,
     DEFAULT, None),
    ("4-miss", "GET", {}, None, {}, 0, CachePolicy(stale_if_error=30), None),
    ("4-post", "POST", {}, SIE_STALE, {}, 70, DEFAULT, None),
    ("13.2.2-if-none-match", "GET", {"If-None-Match": '"a"'}, {**SIE_STALE, **ETAG}, {}, 70,
     DEFAULT, (True, 70, -10, NOT_MODIFIED)),
    # Preconditions apply to a stored 2xx only (RFC 9110 section 13.2.1).
    ("13.2.1-not-for-404", "GET", {"If-None-Match": '"a"'}, {**SIE_STALE, **ETAG},
     {"status": 404}, 70, DEFAULT, (True, 70, -10, PASS)),
    ("soft-purged", "GET", {}, {**SIE_STALE, **ETAG}, {"soft_purged": True}, 10, DEFAULT,
     (True, 10, 0, PASS)),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "request_fields", "stored", "extra", "elapsed", "policy", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in SIE_DECISIONS],
)
def test_stale_on_error(
    method: str,
    request_fields: dict[str, str],
    stored: dict[str, str] | None,
    extra: dict[str, Any],
    elapsed: float,
    policy: CachePolicy,
    expected: tuple[Any, ...] | None,
) -> None:
    request = make_request(method, request_fields)
    candidates = [] if stored is None else [make_entry(stored, **extra)]
    now = T0 + elapsed
    d = decide(request, candidates, policy, now)
    assert not isinstance(d, Serve)  # it went upstream, and that failed
    s = stale_on_error(request, candidates, d, policy, now)
    if expected is None:
        assert s is None
    else:
        assert s is not None
        assert s.entry is candidates[0]
        assert (s.stale, s.age, s.ttl, s.outcome) == expected


# -- Cache-Status (RFC 9211) --------------------------------------------------


def _stale_serve(elapsed: float) -> Serve:
    entry = make_entry({**SWR_STALE, **ETAG})
    request = make_request()
    now = T0 + elapsed
    d = with_stale_while_revalidate(
        request, [entry], decide(request, [entry], DEFAULT, now), DEFAULT, now
    )
    assert isinstance(d, ServeWhileRevalidating)
    return d.serve


def test_stale_while_revalidate_status() -> None:
    """2.1: not forwarded, so a hit; 2.4: ttl negative once stale; 2.7: detail."""
    status = stale_while_revalidate_status(_stale_serve(70))
    assert status.render("edge") == "edge; hit; ttl=-10; detail=stale-while-revalidate"


@pytest.mark.parametrize(
    ("fwd", "fwd_status", "rendered"),
    [
        # 2.2 / 2.3: it went forward and the origin answered 503.
        (Fwd.STALE, 503, "edge; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error"),
        # No answer at all (connect failure, timeout): no fwd-status.
        (Fwd.STALE, None, "edge; fwd=stale; ttl=-10; detail=stale-if-error"),
        (Fwd.REQUEST, 500, "edge; fwd=request; fwd-status=500; ttl=-10; detail=stale-if-error"),
    ],
)
def test_stale_if_error_status(fwd: Fwd, fwd_status: int | None, rendered: str) -> None:
    status = stale_if_error_status(_stale_serve(70), fwd, fwd_status)
    assert not status.hit  # 2.1: a forwarded request is not a hit
    assert status.render("edge") == rendered


# -- Properties ----------------------------------------------------------------

SECONDS = st.integers(0, 400)


@st.composite
def response_cc(draw: st.DrawFn) -> str:
    n = draw(SECONDS)
    directives = st.sampled_from(
        [f"max-age={n}", f"s-maxage={n}", "max-age=x", "no-cache", 'no-cache="x-a"',
         "must-revalidate", "proxy-revalidate", "public", f"stale-while-revalidate={n}",
         f"stale-if-error={n}", "stale-while-revalidate=x", "stale-if-error=-1"]
    )  # fmt: skip
    return ", ".join(draw(st.lists(directives, max_size=5)))


@st.composite
def request_cc(draw: st.DrawFn) -> str:
    n = draw(SECONDS)
    directives = st.sampled_from(
        [f"max-age={n}", f"max-stale={n}", "max-stale", f"min-fresh={n}", "no-cache",
         "only-if-cached", "max-age=x", f"stale-if-error={n}", "stale-if-error=x"]
    )  # fmt: skip
    return ", ".join(draw(st.lists(directives, max_size=4)))


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    fields: dict[str, str] = {"Cache-Control": draw(response_cc())}
    if draw(st.booleans()):
        fields["ETag"] = '"a"'
    if draw(st.booleans()):
        fields["Last-Modified"] = http_date(T0 - draw(SECONDS) * 10)
    if draw(st.booleans()):
        fields["Age"] = str(draw(SECONDS))
    # Whole seconds keep the expiry arithmetic exact.
    response_time = T0 + draw(st.integers(-5, 5))
    return make_entry(
        fields,
        status=draw(st.sampled_from([200, 203, 301, 404, 500])),
        request_time=response_time - draw(st.integers(0, 5)),
        response_time=response_time,
        date=T0 + draw(st.integers(-30, 30)),
        soft_purged=draw(st.booleans()),
    )


POLICIES = st.builds(
    CachePolicy,
    stale_while_revalidate=st.one_of(st.none(), st.integers(0, 300).map(float)),
    stale_if_error=st.one_of(st.none(), st.integers(0, 300).map(float)),
    grace=st.sampled_from([0.0, 60.0, 86400.0]),
    default_ttl=st.sampled_from([None, 30.0]),
)
NOW = st.integers(-10, 2000).map(lambda s: T0 + s)


@given(entry=entries(), req=request_cc(), policy=POLICIES, now=NOW)
def test_stale_never_beyond_its_window(
    entry: Entry, req: str, policy: CachePolicy, now: float
) -> None:
    """RFC 5861 sections 3 and 4: "up to the indicated number of seconds"."""
    cc = parse_cache_control(req)
    s = current_age(entry, now) - freshness_lifetime(entry, policy)
    if may_serve_while_revalidating(entry, cc, policy, now):
        assert s <= stale_while_revalidate_window(entry, policy)
        assert not cc.has("no-cache")  # 5.2.1.4
    if may_serve_stale_if_error(entry, cc, policy, now):
        assert s <= stale_if_error_window(entry, cc, policy)


@given(entry=entries(), req=request_cc(), policy=POLICIES, now=NOW)
def test_must_revalidate_is_never_served_stale(
    entry: Entry, req: str, policy: CachePolicy, now: float
) -> None:
    """RFC 9111 section 5.2.2.2: "In all circumstances a cache MUST NOT ignore" it."""
    fields = make_entry(
        {**entry.fields, "Cache-Control": f"{entry.fields['Cache-Control']}, must-revalidate"}
    ).fields
    entry = entry.with_changes(fields=fields)
    cc = parse_cache_control(f"{req}, stale-if-error=1000")
    assert not may_serve_while_revalidating(entry, cc, policy, now)
    assert not may_serve_stale_if_error(entry, cc, policy, now)
    request = make_request("GET", {"Cache-Control": req})
    d = decide(request, [entry], policy, now)
    swr = with_stale_while_revalidate(request, [entry], d, policy, now)
    assert swr is d
    if not isinstance(d, Serve):
        assert stale_on_error(request, [entry], d, policy, now) is None


@given(entry=entries(), req=request_cc(), policy=POLICIES, now=NOW)
def test_serve_while_revalidating_shape(
    entry: Entry, req: str, policy: CachePolicy, now: float
) -> None:
    """What the shell gets: a stale Serve within the window and a background request."""
    request = make_request("GET", {"Cache-Control": req})
    d = decide(request, [entry], policy, now)
    r = with_stale_while_revalidate(request, [entry], d, policy, now)
    if not isinstance(r, ServeWhileRevalidating):
        assert r is d
        return
    assert r.serve.stale and r.serve.entry is entry
    assert not is_fresh(entry, policy, now)
    assert staleness(entry, policy, now) <= stale_while_revalidate_window(entry, policy)
    assert r.serve.ttl <= 0 and r.serve.age == int(current_age(entry, now))
    match r.background:
        case Revalidate(entry=e, conditional_headers=h):
            assert e is entry and h
        case Fetch(fwd=fwd):
            assert fwd is Fwd.STALE
    # The entry a stale answer came from is still kept (unless only the
    # request's own stale-if-error allowed it).
    assert not discardable(entry, policy, now)


@given(entry=entries(), policy=POLICIES, now=NOW)
def test_servable_entries_are_kept(entry: Entry, policy: CachePolicy, now: float) -> None:
    """keep_until covers both windows; discarding is monotone in time."""
    swr = may_serve_while_revalidating(entry, EMPTY, policy, now)
    if swr or may_serve_stale_if_error(entry, EMPTY, policy, now):
        assert not discardable(entry, policy, now)
    if discardable(entry, policy, now):
        assert discardable(entry, policy, now + 1)
    assert keep_until(entry, policy) >= expires_at(entry, policy)
    assert retention(entry, policy) >= 0
    # After receipt, staleness is now - expires_at (4.2.3), soft purge aside
    # (heuristic lifetimes are fractional: equal up to rounding).
    if now >= entry.response_time and not entry.soft_purged:
        expiry = expires_at(entry, policy)
        assert math.isclose(staleness(entry, policy, now), now - expiry, abs_tol=1e-6)
        if abs(now - keep_until(entry, policy)) > 1e-6:
            assert discardable(entry, policy, now) is (now > keep_until(entry, policy))


FIELD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(['"a"', "0", "-1", "stale-while-revalidate=5", "stale-if-error",
                     "stale-if-error=" + "9" * 5000, "must-revalidate, stale-if-error=5",
                     http_date(T0), ",,,", '"', "\u0663"]),
)  # fmt: skip
NAMES = ["Cache-Control", "CDN-Cache-Control", "Expires", "Date", "Age", "Last-Modified",
         "ETag", "Pragma", "If-None-Match"]  # fmt: skip


@settings(max_examples=300)
@given(
    resp=st.lists(st.tuples(st.sampled_from(NAMES), FIELD_TEXT), max_size=6),
    req=st.lists(st.tuples(st.sampled_from(NAMES), FIELD_TEXT), max_size=4),
    status=st.integers(100, 599),
    soft_purged=st.booleans(),
    policy=POLICIES,
    now=st.floats(T0 - 1e6, T0 + 1e6, allow_nan=False),
)
def test_never_raises_on_arbitrary_fields(
    resp: list[tuple[str, str]],
    req: list[tuple[str, str]],
    status: int,
    soft_purged: bool,
    policy: CachePolicy,
    now: float,
) -> None:
    entry = make_entry(resp, status=status, date=None, soft_purged=soft_purged)
    request = make_request("GET", req)
    cc = request_cache_control(request.headers)
    assert isinstance(may_serve_while_revalidating(entry, cc, policy, now), bool)
    assert isinstance(may_serve_stale_if_error(entry, cc, policy, now), bool)
    assert not math.isnan(keep_until(entry, policy))
    assert isinstance(discardable(entry, policy, now), bool)
    d = decide(request, [entry], policy, now)
    with_stale_while_revalidate(request, [entry], d, policy, now)
    if not isinstance(d, Serve):
        stale_on_error(request, [entry], d, policy, now)
