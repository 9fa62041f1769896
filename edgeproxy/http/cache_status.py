"""The one builder of Cache-Status (RFC 9211) and Proxy-Status (RFC 9209) values."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgeproxy.frozen import set_fields

_NATIVE = __file__.endswith(".so")  # compiled (edgeproxy/frozen.py)


class Fwd(enum.Enum):
    """Why the request went forward (RFC 9211 section 2.2)."""

    BYPASS = "bypass"
    METHOD = "method"
    URI_MISS = "uri-miss"
    VARY_MISS = "vary-miss"
    MISS = "miss"
    REQUEST = "request"
    STALE = "stale"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class CacheStatus:
    hit: bool = False
    fwd: Fwd | None = None
    fwd_status: int | None = None
    stored: bool = False
    collapsed: bool = False
    ttl: int | None = None
    detail: str | None = None

    def __init__(
        self,
        hit: bool = False,
        fwd: Fwd | None = None,
        fwd_status: int | None = None,
        stored: bool = False,
        collapsed: bool = False,
        ttl: int | None = None,
        detail: str | None = None,
    ) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(
                self,
                ("hit", "fwd", "fwd_status", "stored", "collapsed", "ttl", "detail"),
                (hit, fwd, fwd_status, stored, collapsed, ttl, detail),
            )
            return
        self.hit = hit  # type: ignore[misc]
        self.fwd = fwd  # type: ignore[misc]
        self.fwd_status = fwd_status  # type: ignore[misc]
        self.stored = stored  # type: ignore[misc]
        self.collapsed = collapsed  # type: ignore[misc]
        self.ttl = ttl  # type: ignore[misc]
        self.detail = detail  # type: ignore[misc]

    def render(self, cache_name: str) -> str:
        """One Cache-Status list member (RFC 9211 section 2).

        The cache is named by an sf-token or sf-string, so a configured name
        that is not a token is sent quoted.
        """
        parts = [_sf_token_or_string(cache_name)]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append(f"fwd={self.fwd._value_}")  # not .value: enum's property, interpreted
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.detail is not None:
            parts.append(f"detail={_sf_token_or_string(self.detail)}")
        return "; ".join(parts)


class ProxyError(enum.Enum):
    """Proxy error types used here (RFC 9209 section 2.3)."""

    DNS_ERROR = "dns_error"
    DESTINATION_NOT_FOUND = "destination_not_found"
    DESTINATION_UNAVAILABLE = "destination_unavailable"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_TIMEOUT = "connection_timeout"
    CONNECTION_TERMINATED = "connection_terminated"
    HTTP_RESPONSE_TIMEOUT = "http_response_timeout"
    HTTP_PROTOCOL_ERROR = "http_protocol_error"
    HTTP_RESPONSE_INCOMPLETE = "http_response_incomplete"
    PROXY_INTERNAL_ERROR = "proxy_internal_error"


def proxy_status(cache_name: str, error: ProxyError, details: str | None = None) -> str:
    """One Proxy-Status list member (RFC 9209 section 2): name; error; details."""
    value = f"{_sf_token_or_string(cache_name)}; error={error.value}"
    if details:
        value += f"; details={_sf_string(details)}"
    return value


def _sf_string(s: str) -> str:
    # sf-string allows only printable ASCII (RFC 8941 section 3.3.3): drop the
    # rest rather than emit a field that would fail to parse.
    cleaned = "".join(c for c in s if " " <= c <= "~")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN_REST = _ALPHA | frozenset("0123456789!#$%&'*+-.^_`|~:/")


def _sf_token_or_string(s: str) -> str:
    # sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" ), ASCII only (8941 3.3.4);
    # str.isalpha() would let non-ASCII letters through.
    ok = bool(s) and (s[0] in _ALPHA or s[0] == "*") and all(c in _TOKEN_REST for c in s)
    return s if ok else _sf_string(s)
