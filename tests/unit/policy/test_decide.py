"""One decision per request (RFC 9111 section 4): request + stored entry + now."""

from __future__ import annotations

from typing import Any

import pytest

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
    select,
)
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.validation import conditional_request_headers
from tests.unit.policy.helpers import T0, http_date, make_entry, make_request

DEFAULT = CachePolicy()
NOT_MODIFIED, FAILED, PASS = Precondition.NOT_MODIFIED, Precondition.FAILED, Precondition.PASS
STALE, REQUEST = Fwd.STALE, Fwd.REQUEST

LM_DATE = T0 - 1000
LM = {"Last-Modified": http_date(LM_DATE)}
MA60 = {"Cache-Control": "max-age=60"}
MA60_ETAG = {**MA60, "ETag": '"a"'}
MA60_LM = {**MA60, **LM}


def summary(d: Decision) -> tuple[Any, ...]:
    """The decision's type and what the shell reads from it."""
    match d:
        case Pass(fwd=fwd) | Fetch(fwd=fwd):
            return (type(d).__name__, fwd)
        case Revalidate(fwd=fwd):
            return ("Revalidate", fwd)
        case Serve():
            return ("Serve", d.outcome, d.stale, d.age, d.ttl)
        case OnlyIfCachedMiss():
            return ("OnlyIfCachedMiss",)
    raise AssertionError(d)


def serve(outcome: Precondition, stale: bool, age: int, ttl: int) -> tuple[Any, ...]:
    return ("Serve", outcome, stale, age, ttl)


def fresh_hit(age: int, ttl: int) -> tuple[Any, ...]:
    return serve(PASS, False, age, ttl)


REVALIDATE_STALE = ("Revalidate", STALE)
REVALIDATE_REQUEST = ("Revalidate", REQUEST)
FETCH_STALE = ("Fetch", STALE)
FETCH_REQUEST = ("Fetch", REQUEST)
ONLY_IF_CACHED_MISS = ("OnlyIfCachedMiss",)

# (id, method, request fields, stored fields (None: nothing stored), extra
#  make_entry arguments, seconds since the response arrived, expected summary)
Row = tuple[str, str, dict[str, str], dict[str, str] | None, dict[str, Any], float, tuple[Any, ...]]
# fmt: off
TABLE: list[Row] = [
    # Section 4: unsafe (and every non-GET/HEAD) method is written through.
    ("4-post", "POST", {}, MA60_ETAG, {}, 10, ("Pass", Fwd.METHOD)),
    ("4-put", "PUT", {}, MA60_ETAG, {}, 10, ("Pass", Fwd.METHOD)),
    ("4-delete", "DELETE", {}, MA60_ETAG, {}, 10, ("Pass", Fwd.METHOD)),
    ("4-options", "OPTIONS", {}, MA60_ETAG, {}, 10, ("Pass", Fwd.METHOD)),
    ("4-method-case-sensitive", "get", {}, MA60_ETAG, {}, 10, ("Pass", Fwd.METHOD)),
    ("4-post-only-if-cached", "POST", {"Cache-Control": "only-if-cached"}, None, {}, 0,
     ("Pass", Fwd.METHOD)),
    # Section 4: nothing stored for the URI.
    ("4-uri-miss", "GET", {}, None, {}, 0, ("Fetch", Fwd.URI_MISS)),
    ("4-uri-miss-head", "HEAD", {}, None, {}, 0, ("Fetch", Fwd.URI_MISS)),
    # Section 4.1: stored, but the selecting fields differ.
    ("4.1-vary-miss", "GET", {"Accept": "image/png"}, {**MA60, "Vary": "Accept"},
     {"request": {"Accept": "text/html"}}, 10, ("Fetch", Fwd.VARY_MISS)),
    ("4.1-vary-absent-matches-only-absent", "GET", {"Accept": "text/html"},
     {**MA60, "Vary": "Accept"}, {}, 10, ("Fetch", Fwd.VARY_MISS)),
    ("4.1-vary-match-whitespace-normalised", "GET", {"Accept-Encoding": "gzip,br"},
     {**MA60, "Vary": "accept-encoding"}, {"request": {"Accept-Encoding": "gzip, br"}}, 10,
     fresh_hit(10, 50)),
    # Section 4.2: fresh -> reused, with its age and remaining ttl.
    ("4.2-fresh-hit", "GET", {}, MA60_ETAG, {}, 10, fresh_hit(10, 50)),
    ("4.2-fresh-hit-head", "HEAD", {}, MA60_ETAG, {}, 10, fresh_hit(10, 50)),
    ("4.2-fresh-at-once", "GET", {}, MA60_ETAG, {}, 0, fresh_hit(0, 60)),
    ("4.2-last-fresh-second", "GET", {}, MA60_ETAG, {}, 59, fresh_hit(59, 1)),
    ("4.2.1-s-maxage", "GET", {}, {"Cache-Control": "s-maxage=30, max-age=60"}, {}, 10,
     fresh_hit(10, 20)),
    ("4.2.1-expires", "GET", {}, {"Expires": http_date(T0 + 30)}, {}, 10, fresh_hit(10, 20)),
    ("4.2.2-heuristic-fresh", "GET", {}, LM, {}, 50, fresh_hit(50, 50)),
    ("4.2.3-age-field-counts", "GET", {}, {**MA60, "Age": "20"}, {}, 10, fresh_hit(30, 30)),
    # Section 4.2 / 4.3: stale -> validate when there's a validator, else fetch.
    ("4.2-stale-at-lifetime", "GET", {}, MA60_ETAG, {}, 60, REVALIDATE_STALE),
    ("4.3.1-stale-etag", "GET", {}, MA60_ETAG, {}, 61, REVALIDATE_STALE),
    ("4.3.1-stale-last-modified", "GET", {}, MA60_LM, {}, 61, REVALIDATE_STALE),
    ("4.3-stale-no-validator", "GET", {}, MA60, {}, 61, FETCH_STALE),
    ("4.2.3-age-field-makes-stale", "GET", {}, {**MA60_ETAG, "Age": "70"}, {}, 0,
     REVALIDATE_STALE),
    ("4.2.1-invalid-max-age-stale", "GET", {}, {"Cache-Control": "max-age=x", "ETag": '"a"'},
     {}, 0, REVALIDATE_STALE),
    ("5.3-expires-zero-stale", "GET", {}, {"Expires": "0", "ETag": '"a"'}, {}, 0,
     REVALIDATE_STALE),
    ("4.2.2-heuristic-stale", "GET", {}, LM, {}, 100, REVALIDATE_STALE),
    ("4.2.2-no-heuristic-for-302", "GET", {}, {"Location": "/x", **LM}, {"status": 302}, 0,
     REVALIDATE_STALE),
    # Section 5.2.1.4: request no-cache -> validate first (fwd=request).
    ("5.2.1.4-request-no-cache", "GET", {"Cache-Control": "no-cache"}, MA60_ETAG, {}, 10,
     REVALIDATE_REQUEST),
    ("5.2.1.4-request-no-cache-no-validator", "GET", {"Cache-Control": "no-cache"}, MA60, {},
     10, FETCH_REQUEST),
    ("5.2.1.4-request-no-cache-on-stale", "GET", {"Cache-Control": "no-cache"}, MA60_ETAG, {},
     100, REVALIDATE_REQUEST),
    ("5.2.1.4-no-cache-beats-max-stale", "GET", {"Cache-Control": "no-cache, max-stale"},
     MA60_ETAG, {}, 100, REVALIDATE_REQUEST),
    # Section 5.4: Pragma: no-cache counts only without Cache-Control.
    ("5.4-pragma-no-cache", "GET", {"Pragma": "no-cache"}, MA60_ETAG, {}, 10,
     REVALIDATE_REQUEST),
    ("5.4-pragma-ignored-with-cache-control", "GET",
     {"Pragma": "no-cache", "Cache-Control": "max-age=100"}, MA60_ETAG, {}, 10,
     fresh_hit(10, 50)),
    # Section 5.2.1.1: request max-age bounds the age (fwd=request when fresh).
    ("5.2.1.1-max-age-exceeded", "GET", {"Cache-Control": "max-age=5"}, MA60_ETAG, {}, 10,
     REVALIDATE_REQUEST),
    ("5.2.1.1-max-age-exceeded-no-validator", "GET", {"Cache-Control": "max-age=5"}, MA60, {},
     10, FETCH_REQUEST),
    ("5.2.1.1-max-age-equal", "GET", {"Cache-Control": "max-age=10"}, MA60_ETAG, {}, 10,
     fresh_hit(10, 50)),
    ("5.2.1.1-max-age-zero-brand-new", "GET", {"Cache-Control": "max-age=0"}, MA60_ETAG, {}, 0,
     fresh_hit(0, 60)),
    ("5.2.1.1-max-age-zero", "GET", {"Cache-Control": "max-age=0"}, MA60_ETAG, {}, 1,
     REVALIDATE_REQUEST),
    ("5.2.1.1-max-age-invalid", "GET", {"Cache-Control": "max-age=soon"}, MA60_ETAG, {}, 0,
     REVALIDATE_REQUEST),
    # Section 5.2.1.3: min-fresh asks for that much freshness left.
    ("5.2.1.3-min-fresh-met", "GET", {"Cache-Control": "min-fresh=20"}, MA60_ETAG, {}, 30,
     fresh_hit(30, 30)),
    ("5.2.1.3-min-fresh-at-limit", "GET", {"Cache-Control": "min-fresh=30"}, MA60_ETAG, {}, 30,
     fresh_hit(30, 30)),
    ("5.2.1.3-min-fresh-not-met", "GET", {"Cache-Control": "min-fresh=31"}, MA60_ETAG, {}, 30,
     REVALIDATE_REQUEST),
    ("5.2.1.3-min-fresh-invalid", "GET", {"Cache-Control": "min-fresh=x"}, MA60_ETAG, {}, 0,
     REVALIDATE_REQUEST),
    # Section 5.2.1.2 / 4.2.4: max-stale lets a client take a stale response.
    ("5.2.1.2-max-stale-any", "GET", {"Cache-Control": "max-stale"}, MA60_ETAG, {}, 1000,
     serve(PASS, True, 1000, -940)),
    ("5.2.1.2-max-stale-within", "GET", {"Cache-Control": "max-stale=10"}, MA60_ETAG, {}, 65,
     serve(PASS, True, 65, -5)),
    ("5.2.1.2-max-stale-at-limit", "GET", {"Cache-Control": "max-stale=10"}, MA60_ETAG, {}, 70,
     serve(PASS, True, 70, -10)),
    ("5.2.1.2-max-stale-beyond", "GET", {"Cache-Control": "max-stale=10"}, MA60_ETAG, {}, 71,
     REVALIDATE_STALE),
    ("5.2.1.2-max-stale-beyond-no-validator", "GET", {"Cache-Control": "max-stale=10"}, MA60,
     {}, 71, FETCH_STALE),
    ("5.2.1.2-max-stale-invalid", "GET", {"Cache-Control": "max-stale=x"}, MA60_ETAG, {}, 61,
     REVALIDATE_STALE),
    ("5.2.1.2-max-stale-on-fresh", "GET", {"Cache-Control": "max-stale"}, MA60_ETAG, {}, 10,
     fresh_hit(10, 50)),
    # max-stale lifts only max-age's "no stale"; the age bound stays (5.2.1.1).
    ("5.2.1.1-max-age-bounds-max-stale", "GET", {"Cache-Control": "max-age=5, max-stale"},
     MA60_ETAG, {}, 100, REVALIDATE_STALE),
    ("5.2.1.1-max-age-and-max-stale-both-met", "GET",
     {"Cache-Control": "max-age=70, max-stale=20"}, MA60_ETAG, {}, 65,
     serve(PASS, True, 65, -5)),
    # Section 4.2.4: directives that forbid serving stale beat max-stale.
    ("5.2.2.2-must-revalidate", "GET", {"Cache-Control": "max-stale"},
     {"Cache-Control": "max-age=60, must-revalidate", "ETag": '"a"'}, {}, 61, REVALIDATE_STALE),
    ("5.2.2.2-must-revalidate-fresh-is-served", "GET", {"Cache-Control": "max-stale"},
     {"Cache-Control": "max-age=60, must-revalidate"}, {}, 10, fresh_hit(10, 50)),
    ("5.2.2.8-proxy-revalidate", "GET", {"Cache-Control": "max-stale"},
     {"Cache-Control": "max-age=60, proxy-revalidate", "ETag": '"a"'}, {}, 61,
     REVALIDATE_STALE),
    ("5.2.2.10-s-maxage", "GET", {"Cache-Control": "max-stale"},
     {"Cache-Control": "s-maxage=60", "ETag": '"a"'}, {}, 61, REVALIDATE_STALE),
    # Section 5.2.2.4: response no-cache -> validate every time, even if fresh.
    ("5.2.2.4-no-cache-fresh", "GET", {}, {"Cache-Control": "no-cache, max-age=60", "ETag": '"a"'},
     {}, 10, REVALIDATE_STALE),
    ("5.2.2.4-no-cache-no-validator", "GET", {}, {"Cache-Control": "no-cache, max-age=60"}, {},
     10, FETCH_STALE),
    ("5.2.2.4-no-cache-beats-max-stale", "GET", {"Cache-Control": "max-stale"},
     {"Cache-Control": "no-cache", "ETag": '"a"'}, {}, 10, REVALIDATE_STALE),
    ("5.2.2.4-qualified-no-cache-served", "GET", {},
     {"Cache-Control": 'no-cache="set-cookie", max-age=60'}, {}, 10, fresh_hit(10, 50)),
    # Section 5.2.1.7: only-if-cached -> stored response or 504.
    ("5.2.1.7-uri-miss", "GET", {"Cache-Control": "only-if-cached"}, None, {}, 0,
     ONLY_IF_CACHED_MISS),
    ("5.2.1.7-vary-miss", "GET", {"Cache-Control": "only-if-cached", "Accept": "a/b"},
     {**MA60, "Vary": "Accept"}, {}, 0, ONLY_IF_CACHED_MISS),
    ("5.2.1.7-fresh", "GET", {"Cache-Control": "only-if-cached"}, MA60_ETAG, {}, 10,
     fresh_hit(10, 50)),
    ("5.2.1.7-stale", "GET", {"Cache-Control": "only-if-cached"}, MA60_ETAG, {}, 61,
     ONLY_IF_CACHED_MISS),
    ("5.2.1.7-stale-with-max-stale", "GET", {"Cache-Control": "only-if-cached, max-stale"},
     MA60_ETAG, {}, 61, serve(PASS, True, 61, -1)),
    ("5.2.1.7-with-no-cache", "GET", {"Cache-Control": "only-if-cached, no-cache"}, MA60_ETAG,
     {}, 10, ONLY_IF_CACHED_MISS),
    ("5.2.1.7-response-no-cache", "GET", {"Cache-Control": "only-if-cached"},
     {"Cache-Control": "no-cache", "ETag": '"a"'}, {}, 0, ONLY_IF_CACHED_MISS),
    # Soft purge: the entry is stale whatever its lifetime says.
    ("soft-purged-revalidate", "GET", {}, MA60_ETAG, {"soft_purged": True}, 10,
     REVALIDATE_STALE),
    ("soft-purged-no-validator", "GET", {}, MA60, {"soft_purged": True}, 10, FETCH_STALE),
    ("soft-purged-max-stale", "GET", {"Cache-Control": "max-stale"}, MA60_ETAG,
     {"soft_purged": True}, 10, serve(PASS, True, 10, 0)),
    ("soft-purged-must-revalidate", "GET", {"Cache-Control": "max-stale"},
     {"Cache-Control": "max-age=60, must-revalidate", "ETag": '"a"'}, {"soft_purged": True},
     10, REVALIDATE_STALE),
    ("soft-purged-request-no-cache", "GET", {"Cache-Control": "no-cache"}, MA60_ETAG,
     {"soft_purged": True}, 10, REVALIDATE_REQUEST),
    ("soft-purged-only-if-cached", "GET", {"Cache-Control": "only-if-cached"}, MA60_ETAG,
     {"soft_purged": True}, 10, ONLY_IF_CACHED_MISS),
    # Section 4.3.2 / RFC 9110 section 13.2.2: the client's preconditions are
    # evaluated against the stored response being reused.
    ("4.3.2-if-none-match", "GET", {"If-None-Match": '"a"'}, MA60_ETAG, {}, 10,
     serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-if-none-match-weak-comparison", "GET", {"If-None-Match": 'W/"a"'}, MA60_ETAG, {},
     10, serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-if-none-match-list", "GET", {"If-None-Match": '"x", "a"'}, MA60_ETAG, {}, 10,
     serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-if-none-match-star", "GET", {"If-None-Match": "*"}, MA60_ETAG, {}, 10,
     serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-if-none-match-other", "GET", {"If-None-Match": '"b"'}, MA60_ETAG, {}, 10,
     fresh_hit(10, 50)),
    ("4.3.2-if-none-match-head", "HEAD", {"If-None-Match": '"a"'}, MA60_ETAG, {}, 10,
     serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-inm-takes-precedence-over-ims", "GET",
     {"If-None-Match": '"b"', "If-Modified-Since": http_date(T0 + 10)},
     {**MA60_ETAG, **LM}, {}, 10, fresh_hit(10, 50)),
    ("4.3.2-ims-at-last-modified", "GET", {"If-Modified-Since": http_date(LM_DATE)}, MA60_LM, {},
     10, serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-ims-before-last-modified", "GET", {"If-Modified-Since": http_date(LM_DATE - 1)},
     MA60_LM, {}, 10, fresh_hit(10, 50)),
    ("4.3.2-ims-uses-date-without-lm", "GET", {"If-Modified-Since": http_date(T0)}, MA60_ETAG,
     {}, 10, serve(NOT_MODIFIED, False, 10, 50)),
    ("4.3.2-ims-before-date-without-lm", "GET", {"If-Modified-Since": http_date(T0 - 1)},
     MA60_ETAG, {}, 10, fresh_hit(10, 50)),
    ("4.3.2-ims-invalid-ignored", "GET", {"If-Modified-Since": "yesterday"}, MA60_LM, {}, 10,
     fresh_hit(10, 50)),
    ("13.2.2-if-match-fails", "GET", {"If-Match": '"b"'}, MA60_ETAG, {}, 10,
     serve(FAILED, False, 10, 50)),
    ("13.2.2-if-match-holds", "GET", {"If-Match": '"a"'}, MA60_ETAG, {}, 10, fresh_hit(10, 50)),
    ("13.2.2-if-match-weak-fails", "GET", {"If-Match": 'W/"a"'}, MA60_ETAG, {}, 10,
     serve(FAILED, False, 10, 50)),
    ("13.2.2-if-unmodified-since-fails", "GET",
     {"If-Unmodified-Since": http_date(LM_DATE - 1)}, MA60_LM, {}, 10,
     serve(FAILED, False, 10, 50)),
    ("13.2.2-if-unmodified-since-holds", "GET", {"If-Unmodified-Since": http_date(LM_DATE)},
     MA60_LM, {}, 10, fresh_hit(10, 50)),
    # A stale response is validated first; preconditions come after.
    ("4.3.2-stale-with-if-none-match", "GET", {"If-None-Match": '"a"'}, MA60_ETAG, {}, 61,
     REVALIDATE_STALE),
    ("4.3.2-stale-served-with-if-none-match", "GET",
     {"If-None-Match": '"a"', "Cache-Control": "max-stale"}, MA60_ETAG, {}, 61,
     serve(NOT_MODIFIED, True, 61, -1)),
    # RFC 9110 section 13.2.1: preconditions don't apply to a non-2xx response.
    ("13.2.1-404-if-none-match-star", "GET", {"If-None-Match": "*"}, MA60_ETAG, {"status": 404},
     10, fresh_hit(10, 50)),
    ("13.2.1-404-if-match", "GET", {"If-Match": '"b"'}, MA60_ETAG, {"status": 404}, 10,
     fresh_hit(10, 50)),
    ("13.2.1-301-if-none-match", "GET", {"If-None-Match": '"a"'}, MA60_ETAG, {"status": 301},
     10, fresh_hit(10, 50)),
    ("13.2.1-204-is-2xx", "GET", {"If-None-Match": '"a"'}, MA60_ETAG, {"status": 204}, 10,
     serve(NOT_MODIFIED, False, 10, 50)),
    # Route overrides reach the decision.
    ("route-force-ttl", "GET", {}, {"Cache-Control": "max-age=5"}, {}, 10, fresh_hit(10, 90)),
]
# fmt: on
ROUTE_POLICY = {"route-force-ttl": CachePolicy(force_ttl=100)}


@pytest.mark.parametrize(
    ("row_id", "method", "req", "stored", "entry_args", "elapsed", "expected"),
    [pytest.param(*r, id=r[0]) for r in TABLE],
)
def test_decide(
    row_id: str,
    method: str,
    req: dict[str, str],
    stored: dict[str, str] | None,
    entry_args: dict[str, Any],
    elapsed: float,
    expected: tuple[Any, ...],
) -> None:
    candidates = [] if stored is None else [make_entry(stored, **entry_args)]
    policy = ROUTE_POLICY.get(row_id, DEFAULT)
    d = decide(make_request(method, req), candidates, policy, T0 + elapsed)
    assert summary(d) == expected
    # What the shell takes from a decision about a stored response.
    if isinstance(d, Serve | Revalidate):
        assert d.entry is candidates[0]
    if isinstance(d, Revalidate):
        assert d.conditional_headers == conditional_request_headers(d.entry)
        assert d.conditional_headers  # only responses with a validator are revalidated


# -- select: section 4.1 / 4, the most recent matching response ---------------


def _variant(date: float, lang: str | None, response_time: float | None = None) -> Entry:
    request = {} if lang is None else {"Accept-Language": lang}
    return make_entry(
        {**MA60, "Vary": "Accept-Language"},
        date=date,
        response_time=T0 if response_time is None else response_time,
        request=request,
        variant=f"{lang}@{date}",
    )


OLD_EN = _variant(T0 - 20, "en")
NEW_EN = _variant(T0 - 10, "en")
NEWEST_FR = _variant(T0, "fr")
NO_LANG = _variant(T0, None)
SAME_DATE_LATER = _variant(T0 - 10, "en", response_time=T0 + 1)
NO_VARY = make_entry(MA60, date=T0 - 5, variant="plain")

# (id, request Accept-Language (None: absent), candidates, expected variant)
# fmt: off
SELECT: list[tuple[str, str | None, list[Entry], Entry | None]] = [
    ("4-newest-by-date", "en", [OLD_EN, NEW_EN, NEWEST_FR], NEW_EN),
    ("4-order-does-not-matter", "en", [NEWEST_FR, NEW_EN, OLD_EN], NEW_EN),
    ("4.1-newer-nonmatching-ignored", "fr", [OLD_EN, NEW_EN, NEWEST_FR], NEWEST_FR),
    ("4.1-absent-matches-absent", None, [OLD_EN, NO_LANG], NO_LANG),
    ("4.1-nothing-matches", "de", [OLD_EN, NEWEST_FR], None),
    ("4.1-no-candidates", "en", [], None),
    ("4-date-tie-latest-received", "en", [SAME_DATE_LATER, NEW_EN], SAME_DATE_LATER),
    ("4.1-no-vary-matches-any", "de", [NO_VARY, OLD_EN], NO_VARY),
    ("4.1-newer-plain-beats-older-variant", "en", [NEW_EN, NO_VARY], NO_VARY),
    ("4.1-newer-variant-beats-older-plain", "fr", [NO_VARY, NEWEST_FR], NEWEST_FR),
]
# fmt: on


@pytest.mark.parametrize(
    ("lang", "candidates", "expected"), [pytest.param(*r[1:], id=r[0]) for r in SELECT]
)
def test_select(lang: str | None, candidates: list[Entry], expected: Entry | None) -> None:
    request = make_request("GET", {} if lang is None else {"Accept-Language": lang})
    assert select(request, candidates) is expected


def test_decide_serves_the_selected_variant() -> None:
    """decide() reuses what select() picked: the newest matching variant (4.1)."""
    d = decide(make_request("GET", {"Accept-Language": "en"}), [OLD_EN, NEW_EN], DEFAULT, T0)
    assert isinstance(d, Serve) and d.entry is NEW_EN and d.age == 10
