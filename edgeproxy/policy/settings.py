"""The policy knobs the decisions read: frozen, built from config by the shell."""

from __future__ import annotations

from dataclasses import dataclass

# Statuses heuristically cacheable by default (RFC 9110 section 15.1).
HEURISTIC_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)
# Final statuses this cache understands well enough to store (RFC 9111 section 3).
UNDERSTOOD_STATUSES: frozenset[int] = HEURISTIC_STATUSES | frozenset(
    {302, 303, 307, 400, 403, 500, 502, 503, 504}
)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    heuristic_fraction: float = 0.1  # RFC 9111 section 4.2.2 "such as 10%"
    heuristic_max: float = 86400.0  # cap on heuristic lifetimes
    allow_set_cookie: bool = False  # store responses carrying Set-Cookie?
    default_ttl: float | None = None  # lifetime when the origin gives none
    force_ttl: float | None = None  # overrides the origin's lifetime
    max_ttl: float | None = None  # caps any lifetime
    # Targeted fields this cache obeys, most specific first (RFC 9213).
    targeted: tuple[str, ...] = ("edgeproxy-cache-control", "cdn-cache-control")
    max_object_size: int = 64 * 1024 * 1024
    # Route defaults for RFC 5861 when the response carries no such directive
    # (policy/stale.py); None: no stale serving unless the origin allows it.
    stale_while_revalidate: float | None = None
    stale_if_error: float | None = None
    # Seconds past expiry an entry with a validator is kept so it can still be
    # revalidated with a 304 instead of refetched (Varnish's `keep`; the swr
    # default above plays Varnish's `grace`). Not 0: decide() revalidates stale
    # entries (RFC 9111 section 4.3.1), and a 304 is the cheapest origin hit.
    # One day, like heuristic_max; the store's size limit evicts sooner under
    # pressure. See policy/stale.py keep_until.
    grace: float = 86400.0
