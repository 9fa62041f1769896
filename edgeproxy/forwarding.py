"""Header fields of forwarded messages (RFC 9110 sections 7.6): pure functions.

Requests: hop-by-hop fields go (7.6.1), Via is appended (7.6.3), and the
de-facto X-Forwarded-* fields are set. X-Forwarded-For is appended to, since
an edge is often behind a load balancer; X-Forwarded-Host and -Proto are what
*this* hop saw, replacing any client-sent values (never trusted).
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

from edgeproxy.http.fields import Headers, split_list, strip_hop_by_hop

# Fields a client may send that would mislead the origin about the original
# request; this hop sets its own values instead.
_UNTRUSTED_REQUEST = ("x-forwarded-host", "x-forwarded-proto", "forwarded-host")
# URL-override fields some origin frameworks obey (a request keyed as /a but
# served as /admin poisons the cache): never forwarded, since the key lacks them.
_URL_OVERRIDES = ("x-original-url", "x-rewrite-url", "x-forwarded-scheme", "x-http-method-override")


def via_value(version: tuple[int, int], pseudonym: str) -> str:
    major, minor = version
    proto = f"{major}.{minor}" if major < 2 else str(major)
    return f"{proto} {pseudonym}"


def request_headers(
    incoming: Headers,
    *,
    version: tuple[int, int],
    client_ip: str | None,
    host: str,
    scheme: str,
    pseudonym: str,
    upstream_host: str | None,
    drop: Iterable[str] = (),
    add: Iterable[tuple[str, str]] = (),
) -> CIMultiDict[str]:
    """The fields sent upstream for a client request.

    `upstream_host` is the Host sent to the origin (None: the HTTP client
    sets the origin's own). `drop` removes more fields (e.g. the client's
    conditionals when the cache revalidates its own entry); `add` appends.
    """
    out = strip_hop_by_hop(incoming, ("host", *_UNTRUSTED_REQUEST, *_URL_OVERRIDES, *drop))
    if upstream_host is not None:
        out["Host"] = upstream_host
    out.add("Via", via_value(version, pseudonym))
    if client_ip:
        # Re-split the prior lines so an empty line or member adds no ", ,".
        prior = ", ".join(m for line in out.popall("x-forwarded-for", []) for m in split_list(line))
        out["X-Forwarded-For"] = f"{prior}, {client_ip}" if prior else client_ip
    out["X-Forwarded-Host"] = host
    out["X-Forwarded-Proto"] = scheme
    for name, value in add:
        out.add(name, value)
    return out


def response_headers(
    upstream: Headers, *, version: tuple[int, int], pseudonym: str, drop: Iterable[str] = ()
) -> CIMultiDict[str]:
    """Origin response fields as relayed: hop-by-hop removed, Via appended.

    Content-Length is dropped here; the shell sets framing for this hop.
    """
    out = strip_hop_by_hop(upstream, ("content-length", *drop))
    out.add("Via", via_value(version, pseudonym))
    return out


def storable_fields(upstream: Headers, drop: Iterable[str] = ()) -> CIMultiDict[str]:
    """Fields kept with a stored response (RFC 9111 section 3.1)."""
    return strip_hop_by_hop(upstream, ("content-length", *drop))
