"""Cache-Control (RFC 9111 section 5.2) and CDN-Cache-Control (RFC 9213).

Both parse into one frozen `CacheControl`. A directive that is present with an
invalid argument is kept apart from an absent one: RFC 9111 section 4.2.1 asks
that an invalid max-age make the response stale, not fall back to Expires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeproxy.http.fields import Headers, is_token, split_list, unquote

# Value of a delta-seconds directive that was present but not a valid number.
INVALID = -1
# RFC 9111 section 1.3: values past 2**31 are taken as 2**31.
DELTA_MAX = 2**31


def parse_delta_seconds(value: str | None) -> int:
    """delta-seconds = 1*DIGIT (RFC 9111 section 1.3); INVALID when malformed."""
    if value is None:
        return INVALID
    v = unquote(value.strip())  # quoted form is tolerated (section 5.2)
    if not v or not v.isascii() or not v.isdigit():
        return INVALID
    return min(int(v), DELTA_MAX)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Directives by lower-cased name; argument None for bare directives."""

    directives: dict[str, str | None] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        """None when absent, INVALID when malformed, else the number."""
        if name not in self.directives:
            return None
        return parse_delta_seconds(self.directives[name])

    def field_names(self, name: str) -> frozenset[str] | None:
        """The qualified form's field names (no-cache="a, b"); None when bare/absent."""
        arg = self.directives.get(name)
        if arg is None:
            return None
        return frozenset(n.lower() for n in split_list(unquote(arg)))

    def __bool__(self) -> bool:
        return bool(self.directives)


EMPTY = CacheControl()


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a combined field value. Never raises.

    Unknown directives are kept (section 5.2.3 extensions); a repeated directive
    keeps its first occurrence, the conservative reading of section 4.2.1's
    "invalid if it has duplicates" once both are the same name.
    """
    if not value:
        return EMPTY
    out: dict[str, str | None] = {}
    for item in split_list(value):
        name, eq, arg = item.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            continue
        if name in out:
            # Duplicate freshness directives make the value invalid (4.2.1).
            if name in ("max-age", "s-maxage") and out[name] != (arg.strip() if eq else None):
                out[name] = "invalid"
            continue
        out[name] = arg.strip() if eq else None
    return CacheControl(out) if out else EMPTY


def request_cache_control(headers: Headers) -> CacheControl:
    """Request directives; `Pragma: no-cache` counts only without Cache-Control (5.4)."""
    lines = headers.getall("cache-control", ())
    if lines:
        return parse_cache_control(", ".join(lines))
    pragma = headers.getall("pragma", ())
    if any(p.strip().lower() == "no-cache" for line in pragma for p in split_list(line)):
        return CacheControl({"no-cache": None})
    return EMPTY


def response_cache_control(headers: Headers, targeted: tuple[str, ...] = ()) -> CacheControl:
    """The directives this cache obeys for a response.

    RFC 9213 section 2.1: the first targeted field in `targeted` (most specific
    first, e.g. ("edgeproxy-cache-control", "cdn-cache-control")) that is
    present and valid wins and Cache-Control is then ignored for freshness
    and storage; a field that fails to parse is ignored.
    """
    for name in targeted:
        lines = headers.getall(name, ())
        if lines:
            cc = parse_cache_control(", ".join(lines))
            if cc:
                return cc
    lines = headers.getall("cache-control", ())
    return parse_cache_control(", ".join(lines)) if lines else EMPTY
