"""Freshness (RFC 9111 section 4.2) for a shared cache. Every function takes `now`.

Clock skew: apparent_age is clamped at zero and corrected_age_value adds the
response delay (4.2.3), so a fast origin clock can only make an entry look
younger by the skew, never negatively aged; entries are never served with a
negative Age.
"""

from __future__ import annotations

from edgeproxy.http.cache_control import INVALID, CacheControl, targeted_field
from edgeproxy.http.dates import parse_http_date
from edgeproxy.http.fields import Headers
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.settings import HEURISTIC_STATUSES, CachePolicy


def has_explicit_expiration(cc: CacheControl, fields_expires: str | None) -> bool:
    return cc.has("s-maxage") or cc.has("max-age") or fields_expires is not None


def expires_value(fields: Headers, targeted: tuple[str, ...]) -> str | None:
    """The Expires value this cache obeys, or None.

    RFC 9213 section 2.2: once a targeted field (CDN-Cache-Control, ...) with a
    valid, non-empty value governs the response, Expires is ignored along with
    Cache-Control, by the same selection as `response_cache_control`.
    """
    if targeted_field(fields, targeted) is not None:
        return None
    return fields.get("expires")


def freshness_lifetime(entry: Entry, policy: CachePolicy) -> float:
    """Section 4.2.1, first match wins: s-maxage, max-age, Expires - Date, heuristic.

    Route overrides: force_ttl replaces the origin's answer, default_ttl
    stands in when the origin gives no explicit lifetime, max_ttl caps.
    """
    if policy.force_ttl is not None:
        return policy.force_ttl
    memo = entry._lifetime  # a hot entry's hits ask several times each
    if memo is not None and memo[0] is policy:
        return memo[1]
    lifetime = _origin_lifetime(entry, policy)
    if lifetime is None:
        lifetime = policy.default_ttl if policy.default_ttl is not None else 0.0
    if policy.max_ttl is not None:
        lifetime = min(lifetime, policy.max_ttl)
    object.__setattr__(entry, "_lifetime", (policy, lifetime))
    return lifetime


def _origin_lifetime(entry: Entry, policy: CachePolicy) -> float | None:
    cc = entry.cache_control
    for name in ("s-maxage", "max-age"):
        v = cc.seconds(name)
        if v is not None:
            # An invalid value makes the response stale (4.2.1), not absent.
            return 0.0 if v == INVALID else float(v)
    expires_field = expires_value(entry.fields, entry.targeted)
    if expires_field is not None:
        expires = parse_http_date(expires_field)
        # Invalid Expires, e.g. "0", means already expired (5.3).
        return 0.0 if expires is None else max(0.0, expires - entry.date)
    return heuristic_lifetime(entry, policy)


def lifetime_shrinks_with_date(entry: Entry) -> bool:
    """Would a later Date shorten this entry's own freshness lifetime? Only
    when Expires decides it (Expires - Date, 4.2.1); max-age and s-maxage
    don't read Date, and the heuristic lifetime grows with it (4.2.2)."""
    cc = entry.cache_control
    if cc.seconds("s-maxage") is not None or cc.seconds("max-age") is not None:
        return False
    return expires_value(entry.fields, entry.targeted) is not None


def heuristic_lifetime(entry: Entry, policy: CachePolicy) -> float | None:
    """Section 4.2.2: a fraction of the time since Last-Modified, capped.

    Only for heuristically cacheable statuses or responses marked public;
    None when no heuristic applies.
    """
    if policy.default_ttl is not None:
        return None  # the operator's default replaces heuristics
    if entry.status not in HEURISTIC_STATUSES and not entry.cache_control.has("public"):
        return None
    last_modified = parse_http_date(entry.fields.get("last-modified"))
    if last_modified is None:
        return None
    interval = max(0.0, entry.date - last_modified)
    return min(interval * policy.heuristic_fraction, policy.heuristic_max)


def current_age(entry: Entry, now: float) -> float:
    """Section 4.2.3, all of it: Age received, response delay and resident time."""
    corrected_initial_age = entry._initial_age  # fixed per entry: worked out once
    if corrected_initial_age is None:
        age_value = _age_value(entry.fields.get("age"))
        apparent_age = max(0.0, entry.response_time - entry.date)
        response_delay = max(0.0, entry.response_time - entry.request_time)
        corrected_age_value = age_value + response_delay
        corrected_initial_age = max(apparent_age, corrected_age_value)
        object.__setattr__(entry, "_initial_age", corrected_initial_age)
    resident_time = max(0.0, now - entry.response_time)
    return corrected_initial_age + resident_time


def _age_value(value: str | None) -> float:
    # Age = delta-seconds (5.1); an invalid Age is ignored.
    if value is None:
        return 0.0
    v = value.split(",")[0].strip()
    if not (v.isascii() and v.isdigit()):
        return 0.0
    # Past 2**31 the value is 2**31 (1.3). Checking the length first also keeps
    # int() clear of Python's 4300-digit conversion limit (a ValueError).
    v = v.lstrip("0") or "0"
    return float(2**31) if len(v) > 10 else float(min(int(v), 2**31))


def is_fresh(entry: Entry, policy: CachePolicy, now: float) -> bool:
    return freshness(entry, policy, now)[2]


def ttl(entry: Entry, policy: CachePolicy, now: float) -> int:
    """Remaining freshness in whole seconds; negative once stale (RFC 9211 ttl)."""
    return freshness(entry, policy, now)[3]


def freshness(entry: Entry, policy: CachePolicy, now: float) -> tuple[float, float, bool, int]:
    """(current age, freshness lifetime, fresh, ttl) at `now`, worked out once:
    a soft-purged entry is never fresh and its ttl is at most 0."""
    age = current_age(entry, now)
    lifetime = freshness_lifetime(entry, policy)
    remaining = int(lifetime - age)
    if entry.soft_purged:
        return age, lifetime, False, min(0, remaining)
    return age, lifetime, lifetime > age, remaining


def stale_forbidden(cc: CacheControl) -> bool:
    """Directives that forbid serving this response stale (4.2.4, 5.2.2)."""
    return (
        cc.has("must-revalidate")
        or cc.has("proxy-revalidate")
        or cc.has("s-maxage")  # implies proxy-revalidate for shared caches (5.2.2.10)
        or (cc.has("no-cache") and cc.field_names("no-cache") is None)
    )


def may_serve_stale(
    entry: Entry, request_cc: CacheControl, policy: CachePolicy, now: float
) -> bool:
    """A client's max-stale allowance (5.2.1.2) when the response permits stale."""
    if stale_forbidden(entry.cache_control):
        return False
    if not request_cc.has("max-stale"):
        return False
    allowance = request_cc.seconds("max-stale")
    staleness = current_age(entry, now) - freshness_lifetime(entry, policy)
    if allowance == INVALID:
        # max-stale without a value: any staleness is acceptable (5.2.1.2).
        return request_cc.directives["max-stale"] is None
    assert allowance is not None
    return staleness <= allowance
