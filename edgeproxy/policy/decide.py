"""One decision per request: request + stored candidates + now -> what to do.

The caller looks up the candidates and hands them in; this module never looks
anything up. `proxy.py` matches on the result and ends in `assert_never`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edgeproxy.frozen import set_fields
from edgeproxy.http.cache_control import INVALID, CacheControl
from edgeproxy.http.cache_status import Fwd
from edgeproxy.http.conditionals import Precondition, evaluate
from edgeproxy.http.fields import Headers
from edgeproxy.http.vary import matches
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import freshness, may_serve_stale
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.validation import conditional_request_headers, has_validator

_NATIVE = __file__.endswith(".so")  # compiled (edgeproxy/frozen.py)

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})


# Request and Serve are made once per hit: NamedTuples, immutable like the
# frozen dataclasses around them at a third of their construction cost (a
# frozen dataclass sets each field through object.__setattr__).
class Request(NamedTuple):
    method: str
    headers: Headers
    cc: CacheControl


@dataclass(frozen=True, slots=True)
class Pass:
    """Forward without storing (uncacheable method or a bypassed route)."""

    fwd: Fwd

    def __init__(self, fwd: Fwd) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("fwd",), (fwd,))
            return
        self.fwd = fwd  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Nothing usable is stored: forward, and store the answer if storable."""

    fwd: Fwd

    def __init__(self, fwd: Fwd) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("fwd",), (fwd,))
            return
        self.fwd = fwd  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Revalidate:
    """A stored response must be validated upstream before use (4.3.1)."""

    entry: Entry
    fwd: Fwd
    conditional_headers: list[tuple[str, str]]

    def __init__(self, entry: Entry, fwd: Fwd, conditional_headers: list[tuple[str, str]]) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(
                self, ("entry", "fwd", "conditional_headers"), (entry, fwd, conditional_headers)
            )
            return
        self.entry = entry  # type: ignore[misc]
        self.fwd = fwd  # type: ignore[misc]
        self.conditional_headers = conditional_headers  # type: ignore[misc]


class Serve(NamedTuple):
    """Answer from the stored response: 200 (or its status), 304 or 412."""

    entry: Entry
    age: int
    ttl: int
    outcome: Precondition
    stale: bool = False


@dataclass(frozen=True, slots=True)
class OnlyIfCachedMiss:
    """only-if-cached with nothing usable stored: 504 (5.2.1.7)."""


Decision = Pass | Fetch | Revalidate | Serve | OnlyIfCachedMiss


def select(request: Request, candidates: Sequence[Entry]) -> Entry | None:
    """Section 4.1: the most recent candidate whose Vary values match."""
    best: Entry | None = None
    for entry in candidates:
        if not matches(request.headers, entry.vary, entry.secondary):
            continue
        if best is None or (entry.date, entry.response_time) > (best.date, best.response_time):
            best = entry
    return best


def decide(
    request: Request, candidates: Sequence[Entry], policy: CachePolicy, now: float
) -> Decision:
    if request.method not in CACHEABLE_METHODS:
        return Pass(Fwd.METHOD)
    entry = select(request, candidates)
    if entry is None:
        if request.cc.has("only-if-cached"):
            return OnlyIfCachedMiss()
        return Fetch(Fwd.VARY_MISS if candidates else Fwd.URI_MISS)
    return decide_stored(request, entry, policy, now)


def decide_stored(request: Request, entry: Entry, policy: CachePolicy, now: float) -> Decision:
    """Section 4: may the selected response be reused for this request?"""
    cc = entry.cache_control
    age, lifetime, fresh, remaining = freshness(entry, policy, now)
    must_validate = (cc.has("no-cache") and cc.field_names("no-cache") is None) or request.cc.has(
        "no-cache"
    )
    usable = (
        fresh
        and not must_validate
        and _max_age_ok(request.cc, age)
        and _min_fresh_ok(request.cc, age, lifetime)
    )
    stale = False
    if not usable and not fresh and not must_validate:
        # A client that accepts staleness (max-stale) may get it (4.2.4); its
        # max-age still bounds the age: max-stale lifts only max-age's implied
        # "no stale response" (5.2.1.1).
        stale = may_serve_stale(entry, request.cc, policy, now) and _max_age_ok(request.cc, age)
        usable = stale
    if usable:
        # Preconditions apply to a stored 2xx only: for any other status the
        # origin would have ignored them (RFC 9110 section 13.2.1; RFC 9111
        # section 4.3.2 names 200 and 206).
        outcome = (
            evaluate(request.method, request.headers, entry.fields, entry.date)
            if 200 <= entry.status < 300
            else Precondition.PASS
        )
        # ttl() keeps a soft-purged entry's ttl at or below zero.
        return Serve(entry, int(age), remaining, outcome, stale)
    if request.cc.has("only-if-cached"):
        return OnlyIfCachedMiss()
    # fwd=request when the client forced it (no-cache, or max-age/min-fresh on
    # a fresh response); fwd=stale when the stored response itself needs it.
    client_forced = request.cc.has("no-cache") or (fresh and not must_validate)
    fwd = Fwd.REQUEST if client_forced else Fwd.STALE
    if has_validator(entry):
        return Revalidate(entry, fwd, conditional_request_headers(entry))
    return Fetch(fwd)


def _max_age_ok(cc: CacheControl, age: float) -> bool:
    """Request max-age (5.2.1.1); an invalid value fails it, forcing validation."""
    max_age = cc.seconds("max-age")
    return max_age is None or (max_age != INVALID and age <= max_age)


def _min_fresh_ok(cc: CacheControl, age: float, lifetime: float) -> bool:
    """Request min-fresh (5.2.1.3); an invalid value fails it."""
    min_fresh = cc.seconds("min-fresh")
    return min_fresh is None or (min_fresh != INVALID and lifetime - age >= min_fresh)
