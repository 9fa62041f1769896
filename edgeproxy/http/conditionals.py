"""Preconditions a cache evaluates against a stored response (RFC 9110 section 13).

The cache answers If-None-Match and If-Modified-Since for a usable stored
response (RFC 9111 section 4.3.2). If-Match and If-Unmodified-Since are
evaluated the same way against the selected stored response, so a failing one
gets 412 without troubling the origin; the precedence is section 13.2.2.
"""

from __future__ import annotations

import enum

from edgeproxy.http.dates import parse_http_date
from edgeproxy.http.etags import parse_etag, parse_etag_list, strong_match, weak_match
from edgeproxy.http.fields import Headers, combined


class Precondition(enum.Enum):
    PASS = "pass"  # serve the selected response as is
    NOT_MODIFIED = "304"
    FAILED = "412"


def has_preconditions(headers: Headers) -> bool:
    return (
        "if-none-match" in headers
        or "if-modified-since" in headers
        or "if-match" in headers
        or "if-unmodified-since" in headers
    )


def evaluate(
    method: str,
    request: Headers,
    stored: Headers,
    stored_time: float,
) -> Precondition:
    """Section 13.2.2 steps 1-4 against a stored response's validators.

    `stored_time` stands in for Last-Modified when the stored response has
    none: its Date, or when it was received (RFC 9111 section 4.3.2); it is
    used for If-Modified-Since only.

    Repeated field lines are combined (RFC 9110 section 5.3) before parsing:
    two If-None-Match lines are one list, and two If-Modified-Since lines are
    "more than one member", which the date parser rejects, so the field is
    ignored (13.1.3, 13.1.4).
    """
    if not has_preconditions(request):
        return Precondition.PASS  # every step below starts from one of them
    # The stored validators are read only by the steps that use them.
    etag = parse_etag(combined(stored, "etag"))

    # Step 1: If-Match, strong comparison (13.1.1).
    if_match = combined(request, "if-match") if "if-match" in request else None
    if if_match is not None:
        tags = parse_etag_list(if_match)
        # "*": true when a current representation exists; the selected stored
        # response is one, with or without an ETag. Otherwise false (13.1.1).
        ok = tags is not None and (
            tags.any or (etag is not None and any(strong_match(t, etag) for t in tags.tags))
        )
        if not ok:
            return Precondition.FAILED
    else:
        # Step 2: If-Unmodified-Since, only without If-Match; ignored when
        # invalid or when there is no modification date (13.1.4).
        if "if-unmodified-since" in request:
            ius = parse_http_date(combined(request, "if-unmodified-since"))
            last_modified = parse_http_date(combined(stored, "last-modified"))
            if ius is not None and last_modified is not None and last_modified > ius:
                return Precondition.FAILED

    # Step 3: If-None-Match, weak comparison (13.1.2).
    if_none_match = combined(request, "if-none-match")
    if if_none_match is not None:
        tags = parse_etag_list(if_none_match)
        if tags is not None and (
            tags.any or (etag is not None and any(weak_match(t, etag) for t in tags.tags))
        ):
            return Precondition.NOT_MODIFIED if method in ("GET", "HEAD") else Precondition.FAILED
        # True: If-Modified-Since is ignored when If-None-Match is present (13.1.3).
        return Precondition.PASS

    # Step 4: If-Modified-Since, GET/HEAD only and only without If-None-Match (13.1.3).
    if method in ("GET", "HEAD"):
        ims = parse_http_date(combined(request, "if-modified-since"))
        if ims is not None:
            last_modified = parse_http_date(combined(stored, "last-modified"))
            validator = last_modified if last_modified is not None else stored_time
            if validator <= ims:
                return Precondition.NOT_MODIFIED
    return Precondition.PASS
