"""May a response be stored? RFC 9111 section 3 for a shared cache.

Each refusal carries a short reason, rendered as the Cache-Status detail.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeproxy.http.cache_control import CacheControl
from edgeproxy.http.fields import Headers
from edgeproxy.http.vary import STAR, vary_names
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import expires_value
from edgeproxy.policy.settings import HEURISTIC_STATUSES, UNDERSTOOD_STATUSES, CachePolicy


@dataclass(frozen=True, slots=True)
class Storability:
    ok: bool
    reason: str = ""


STORABLE = Storability(True)


def storable(
    method: str,
    request: Headers,
    request_cc: CacheControl,
    status: int,
    response: Headers,
    response_cc: CacheControl,
    policy: CachePolicy,
) -> Storability:
    if method != "GET":
        # HEAD is answered from stored GET responses; others aren't cacheable here.
        return Storability(False, "method")
    if status == 206 or "content-range" in response:
        return Storability(False, "partial")  # 3.3/3.4: never as a complete response
    if status < 200 or status == 304:
        return Storability(False, "status")
    understood = status in UNDERSTOOD_STATUSES
    # must-understand (5.2.2.3): store only if the status is understood; it
    # overrides no-store when we do understand it.
    if response_cc.has("must-understand"):
        if not understood:
            return Storability(False, "must-understand")
    elif response_cc.has("no-store"):
        return Storability(False, "no-store")
    elif not understood:
        return Storability(False, "status")
    if request_cc.has("no-store"):
        return Storability(False, "request-no-store")  # 5.2.1.5
    if _has_content(request):
        # A GET with content ("fat GET"): the content "cannot alter the
        # meaning" of a GET (RFC 9110 section 9.3.1), yet an origin may read
        # it, and the key lacks it. Passed through, never stored.
        return Storability(False, "request-content")
    if response_cc.has("private"):
        # 5.2.2.7: a shared cache must not store it. The qualified form would
        # allow storing without the named fields; a CDN treats any private
        # response as private, which is the conservative reading.
        return Storability(False, "private")
    if "authorization" in request and not (
        response_cc.has("public")
        or response_cc.has("s-maxage")
        or response_cc.has("must-revalidate")
    ):
        return Storability(False, "authorization")  # 3.5
    if "set-cookie" in response and not policy.allow_set_cookie:
        return Storability(False, "set-cookie")
    if vary_names(response) == STAR:
        return Storability(False, "vary-star")  # 4.1: would never match
    # Expires counts only when no targeted field governs (RFC 9213 section 2.2).
    has_expires = expires_value(response, policy.targeted) is not None
    has_lifetime = (
        response_cc.has("public")
        or response_cc.has("max-age")
        or response_cc.has("s-maxage")
        or has_expires
        or status in HEURISTIC_STATUSES
        or policy.force_ttl is not None
    )
    if not has_lifetime:
        return Storability(False, "no-freshness")
    # Worth keeping: a lifetime to serve from, or a validator to revalidate with.
    explicit = (
        response_cc.has("max-age")
        or response_cc.has("s-maxage")
        or has_expires
        or policy.force_ttl is not None
        or policy.default_ttl is not None
    )
    if not explicit and "etag" not in response and "last-modified" not in response:
        return Storability(False, "no-freshness")
    return STORABLE


def _has_content(request: Headers) -> bool:
    """Does the request carry content (RFC 9112 section 6.3)?"""
    if "transfer-encoding" in request:
        return True
    length = request.get("content-length")
    return length is not None and length.strip() not in ("", "0")


def stays_storable(
    request: Headers, request_cc: CacheControl, merged: Entry, policy: CachePolicy
) -> bool:
    """May a response freshened by a 304 (`merged`, validation.merge_304)
    stay stored? The 304's fields may have made it unstorable (no-store,
    private: RFC 9111 section 4.3.4, then section 3)."""
    return storable(
        "GET", request, request_cc, merged.status, merged.fields, merged.cache_control, policy
    ).ok
