"""Serving stale responses (RFC 9111 section 4.2.4, RFC 5861) and how long to keep them.

RFC 9111 section 4.2.4 allows a stale response only when the client or the
origin permits it, and never against an explicit directive. This module holds
the two origin/route permissions of RFC 5861 (`freshness.may_serve_stale`
holds the client's max-stale); every function takes `now` and none raises.

Rules, in the order they are checked:

1. Forbidden stays forbidden (4.2.4): must-revalidate (5.2.2.2),
   proxy-revalidate (5.2.2.8), s-maxage (5.2.2.10, a shared cache's
   proxy-revalidate) and unqualified no-cache (5.2.2.4) rule out both
   extensions (`freshness.stale_forbidden`). For stale-if-error too: 5.2.2.2
   says a disconnected cache MUST answer an error rather than reuse it.
2. stale-while-revalidate=N (RFC 5861 section 3): within N seconds past
   expiry, serve the stale response and revalidate in the background. N comes
   from the response, else the route default `policy.stale_while_revalidate`.
   The request can still refuse stale: no-cache (5.2.1.4), min-fresh
   (5.2.1.3: a stale response is never fresh enough) or max-age (5.2.1.1:
   "does not wish to receive a stale response" unless max-stale is present,
   and then the age must still be within it). A request max-stale is a
   permission, so it never narrows the origin's window. An entry without a
   validator qualifies too: the background request is a plain refetch.
3. stale-if-error=N (RFC 5861 section 4): when the origin is unreachable,
   times out or answers 500, 502, 503 or 504 (`is_error_status`), serve the
   stored response if it is at most N seconds stale. In a request the
   directive scopes to that request, so a valid request value wins over the
   response's in both directions (4.2.4: the client may permit stale, and may
   limit its own request); else the response's, else the route default
   `policy.stale_if_error`. The request's no-cache, max-age and min-fresh do
   not block it: section 4 applies "regardless of other freshness
   information", and the alternative is an error no client prefers.
4. A delta of 0 grants nothing. An invalid value in the response grants
   nothing and does not fall back to the route default (the conservative
   reading, as an invalid max-age makes a response stale, 4.2.1); an invalid
   value in a request is ignored, so a malformed client field cannot take
   away the origin's permission.
5. Soft purge: a soft-purged entry is stale (freshness.is_fresh) and counts
   as having just expired, i.e. staleness max(0, age - lifetime): it is
   served stale-while-revalidate or stale-if-error like one, as CDNs such as
   Fastly do, and the background revalidation clears the mark (merge_304).

Keeping entries (Varnish's ttl + grace + keep). An entry is worth keeping past
its expiry while it can still be served stale or revalidated:

    keep_until = expires_at + max(swr window, sie window, grace if validator)

The windows are the response's (or route's) ones, 0 where stale is forbidden;
the request's stale-if-error is unknown when storing, so it is not counted.
`policy.grace` (Varnish's `keep`) bounds how long an entry that carries a
validator is kept for a conditional request (4.3.1) whose 304 saves the body;
one without a validator is useless past the windows. `math.inf` for grace
keeps such entries until the store's size limit evicts them. The result is a
float, never None: a sweeper compares it with the clock, a lookup asks
`discardable(entry, policy, now)` and treats a discardable entry as a miss.

Wiring: decide() is unchanged. The shell passes its result through
`with_stale_while_revalidate` (which may turn it into ServeWhileRevalidating),
and when an upstream request fails, asks `stale_on_error` for a Serve.

Cache-Status (RFC 9211). stale-while-revalidate: the client's request was
not forwarded (the background one is the cache's own), so `hit` (2.1) with
the negative ttl of a stale response (2.4) and `detail=stale-while-revalidate`
(2.7). stale-if-error: the request did go forward, so no `hit`; `fwd` keeps
the reason it went, `fwd-status` the origin's error status when there was one,
with the ttl and `detail=stale-if-error`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeproxy.http.cache_control import EMPTY, INVALID, CacheControl
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.http.conditionals import Precondition, evaluate
from edgeproxy.policy.decide import (
    Decision,
    Fetch,
    OnlyIfCachedMiss,
    Request,
    Revalidate,
    Serve,
    select,
)
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import (
    current_age,
    freshness_lifetime,
    is_fresh,
    stale_forbidden,
    ttl,
)
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.validation import conditional_request_headers, has_validator

# "an error is any situation that would result in a 500, 502, 503, or 504"
# (RFC 5861 section 4).
ERROR_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})

SWR_DETAIL = "stale-while-revalidate"
SIE_DETAIL = "stale-if-error"


def is_error_status(status: int) -> bool:
    return status in ERROR_STATUSES


def expires_at(entry: Entry, policy: CachePolicy) -> float:
    """The absolute time the entry's current_age reaches its freshness lifetime.

    current_age(t) = corrected_initial_age + (t - response_time) for t after
    receipt (4.2.3), so this may lie before response_time for a response that
    arrived already stale. Soft purge does not move it (see `staleness`).
    """
    corrected_initial_age = current_age(entry, entry.response_time)
    return entry.response_time + freshness_lifetime(entry, policy) - corrected_initial_age


def staleness(entry: Entry, policy: CachePolicy, now: float) -> float:
    """Seconds past expiry (negative while fresh); a soft-purged entry is at least 0."""
    s = current_age(entry, now) - freshness_lifetime(entry, policy)
    return max(0.0, s) if entry.soft_purged else s


def _response_window(cc: CacheControl, name: str, default: float | None) -> float:
    v = cc.seconds(name)
    if v is None:
        w = default if default is not None else 0.0
    else:
        w = 0.0 if v == INVALID else float(v)  # invalid grants nothing (rule 4)
    return max(0.0, w)


def stale_while_revalidate_window(entry: Entry, policy: CachePolicy) -> float:
    """N of the response's stale-while-revalidate=N, else the route default, else 0."""
    return _response_window(
        entry.cache_control, "stale-while-revalidate", policy.stale_while_revalidate
    )


def stale_if_error_window(entry: Entry, request_cc: CacheControl, policy: CachePolicy) -> float:
    """N of the request's stale-if-error=N, else the response's, else the route default."""
    v = request_cc.seconds("stale-if-error")
    if v is not None and v != INVALID:
        return float(v)
    return _response_window(entry.cache_control, "stale-if-error", policy.stale_if_error)


def _request_accepts_stale(request_cc: CacheControl, age: float) -> bool:
    """May a stale response answer this request at all? (5.2.1.1, 5.2.1.3, 5.2.1.4)."""
    if request_cc.has("no-cache") or request_cc.has("min-fresh"):
        return False
    max_age = request_cc.seconds("max-age")
    if max_age is None:
        return True
    # max-age alone refuses stale; with max-stale it still bounds the age.
    return request_cc.has("max-stale") and max_age != INVALID and age <= max_age


def may_serve_while_revalidating(
    entry: Entry, request_cc: CacheControl, policy: CachePolicy, now: float
) -> bool:
    """RFC 5861 section 3: serve now, revalidate in the background (module rules 1, 2, 5)."""
    if stale_forbidden(entry.cache_control):
        return False
    if not _request_accepts_stale(request_cc, current_age(entry, now)):
        return False
    window = stale_while_revalidate_window(entry, policy)
    return window > 0 and staleness(entry, policy, now) <= window


def may_serve_stale_if_error(
    entry: Entry, request_cc: CacheControl, policy: CachePolicy, now: float
) -> bool:
    """RFC 5861 section 4: answer an origin error with this entry (module rules 1, 3, 5).

    `now` is when the error was seen. A fresh entry (one a client's no-cache
    sent upstream) qualifies within the same window.
    """
    if stale_forbidden(entry.cache_control):
        return False
    window = stale_if_error_window(entry, request_cc, policy)
    return window > 0 and staleness(entry, policy, now) <= window


def retention(entry: Entry, policy: CachePolicy) -> float:
    """Seconds past expiry the entry stays useful (module docstring)."""
    if stale_forbidden(entry.cache_control):
        serve_window = 0.0
    else:
        serve_window = max(
            stale_while_revalidate_window(entry, policy),
            stale_if_error_window(entry, EMPTY, policy),
        )
    keep = max(0.0, policy.grace) if has_validator(entry) else 0.0
    return max(serve_window, keep)


def keep_until(entry: Entry, policy: CachePolicy) -> float:
    """The absolute time after which the entry is worth nothing: expiry + retention."""
    return expires_at(entry, policy) + retention(entry, policy)


def discardable(entry: Entry, policy: CachePolicy, now: float) -> bool:
    """Past keep_until: the shell may delete it and treat it as a miss.

    Computed from staleness, with the same arithmetic as the may_serve_*
    predicates, so an entry one of them would serve (for a request without
    its own stale-if-error) is never discardable at the same `now`.
    """
    return staleness(entry, policy, now) > retention(entry, policy)


# -- Decisions: what the shell does with them --------------------------------


@dataclass(frozen=True, slots=True)
class ServeWhileRevalidating:
    """Answer with `serve` now; send `background` upstream without waiting (5861 s.3).

    `background` is what decide() would have sent: a conditional Revalidate
    when the entry has a validator, else a Fetch. Its answer is stored as
    usual; nobody waits for it, so its failure only gets logged.
    """

    serve: Serve
    background: Revalidate | Fetch


def with_stale_while_revalidate(
    request: Request,
    candidates: Sequence[Entry],
    decision: Decision,
    policy: CachePolicy,
    now: float,
) -> Decision | ServeWhileRevalidating:
    """Turn decide()'s result into ServeWhileRevalidating where RFC 5861 s.3 allows.

    Applies where decide() would go upstream for a stale entry (Revalidate,
    Fetch with fwd=stale), where only-if-cached found nothing fresh (a stale
    response within the window is "consistent with the other constraints",
    5.2.1.7), and to a stale Serve the client's max-stale allowed, so that it
    gets refreshed too. Anything else is returned unchanged.
    """
    entry: Entry | None = None
    match decision:
        case Revalidate() | Serve(stale=True):
            entry = decision.entry
        case Fetch(fwd=Fwd.STALE) | OnlyIfCachedMiss():
            entry = select(request, candidates)
    if entry is None or not may_serve_while_revalidating(entry, request.cc, policy, now):
        return decision
    serve = decision if isinstance(decision, Serve) else _serve(request, entry, policy, now)
    if isinstance(decision, Revalidate | Fetch):
        return ServeWhileRevalidating(serve, decision)
    background: Revalidate | Fetch = (
        Revalidate(entry, Fwd.STALE, conditional_request_headers(entry))
        if has_validator(entry)
        else Fetch(Fwd.STALE)
    )
    return ServeWhileRevalidating(serve, background)


def stale_on_error(
    request: Request,
    candidates: Sequence[Entry],
    decision: Decision,
    policy: CachePolicy,
    now: float,
) -> Serve | None:
    """The stored response to send instead of an origin error, or None (5861 s.4).

    Call it when the request that `decision` sent upstream failed to connect,
    timed out, or got a status for which `is_error_status` holds; `now` is
    when that happened. Pass (an uncacheable method or a bypassed route) and
    misses have nothing to offer.
    """
    entry: Entry | None = None
    match decision:
        case Revalidate():
            entry = decision.entry
        case Fetch(fwd=Fwd.STALE | Fwd.REQUEST):
            entry = select(request, candidates)
    if entry is None or not may_serve_stale_if_error(entry, request.cc, policy, now):
        return None
    return _serve(request, entry, policy, now)


def _serve(request: Request, entry: Entry, policy: CachePolicy, now: float) -> Serve:
    # As decide_stored builds a Serve: preconditions only for a stored 2xx
    # (RFC 9110 section 13.2.1), ttl() at or below 0 once stale.
    outcome = (
        evaluate(request.method, request.headers, entry.fields, entry.date)
        if 200 <= entry.status < 300
        else Precondition.PASS
    )
    stale = not is_fresh(entry, policy, now)
    return Serve(entry, int(current_age(entry, now)), ttl(entry, policy, now), outcome, stale)


# -- Cache-Status (RFC 9211) ---------------------------------------------------


def stale_while_revalidate_status(serve: Serve) -> CacheStatus:
    """A hit (2.1: not forwarded) with its negative ttl (2.4)."""
    return CacheStatus(hit=True, ttl=serve.ttl, detail=SWR_DETAIL)


def stale_if_error_status(serve: Serve, fwd: Fwd, fwd_status: int | None) -> CacheStatus:
    """Forwarded (2.2) for `fwd`; fwd-status (2.3) is None when no answer came."""
    return CacheStatus(fwd=fwd, fwd_status=fwd_status, ttl=serve.ttl, detail=SIE_DETAIL)
