"""Invalidation by unsafe methods (RFC 9111 section 4.4)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit, urlunsplit

from edgeproxy.cachekey import normalise_host, primary_key
from edgeproxy.http.fields import Headers

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidation_targets(method: str, status: int, target_uri: str, response: Headers) -> list[str]:
    """URIs whose stored responses must go after this exchange.

    A non-error (2xx/3xx) response to an unsafe method invalidates the target
    URI, and Location / Content-Location when they share its origin (4.4:
    "MUST NOT ... if the origin of the URI to be invalidated differs", to
    block denial-of-service). Those are returned in the primary-key form
    (`cachekey.primary_key`: host lower-cased, default port dropped) so that
    `http://Example.com:80/x` removes what is stored under `http://example.com/x`.
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    out = [target_uri]
    try:
        base = urlsplit(target_uri)
        origin = (base.scheme, normalise_host(base.netloc, base.scheme))
    except ValueError:
        return out  # no origin to compare with: invalidate only the target
    for name in ("location", "content-location"):
        value = response.get(name)
        if not value:
            continue
        try:
            # Relative references resolve against the target URI (RFC 3986 5.2).
            parts = urlsplit(urljoin(target_uri, value.strip()))
            host = normalise_host(parts.netloc, parts.scheme)
        except ValueError:
            continue
        if (parts.scheme, host) != origin:
            continue
        path_and_query = urlunsplit(("", "", parts.path, parts.query, ""))
        out.append(primary_key(parts.scheme, host, path_and_query))
    return out
