"""Invalidation by unsafe methods (RFC 9111 section 4.4)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from edgeproxy.http.fields import Headers

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidation_targets(method: str, status: int, target_uri: str, response: Headers) -> list[str]:
    """URIs whose stored responses must go after this exchange.

    A non-error (2xx/3xx) response to an unsafe method invalidates the target
    URI, and Location / Content-Location when they share its origin (4.4:
    "only if the host part is the same", to block denial-of-service).
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    out = [target_uri]
    base = urlsplit(target_uri)
    for name in ("location", "content-location"):
        value = response.get(name)
        if not value:
            continue
        try:
            absolute = urljoin(target_uri, value.strip())
            parts = urlsplit(absolute)
        except ValueError:
            continue
        if (parts.scheme, parts.netloc.lower()) == (base.scheme, base.netloc.lower()):
            out.append(absolute.split("#", 1)[0])
    return out
