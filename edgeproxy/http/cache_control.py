"""Cache-Control (RFC 9111 section 5.2) and CDN-Cache-Control (RFC 9213).

Both parse into one frozen `CacheControl`. A directive that is present with an
invalid argument is kept apart from an absent one: RFC 9111 section 4.2.1 asks
that an invalid max-age make the response stale, not fall back to Expires.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from edgeproxy.http.fields import Headers, is_token, split_list, unquote
from edgeproxy.http.structured import parse_dictionary

# Value of a delta-seconds directive that was present but not a valid number.
INVALID = -1
# RFC 9111 section 1.3: values past 2**31 are taken as 2**31.
DELTA_MAX = 2**31
# Stored argument of a delta-seconds directive repeated with differing values.
_CONFLICT = "conflicting duplicates"


def parse_delta_seconds(value: str | None) -> int:
    """delta-seconds = 1*DIGIT (RFC 9111 section 1.3); INVALID when malformed."""
    if value is None:
        return INVALID
    v = unquote(value.strip(" \t"))  # quoted form is tolerated (section 5.2)
    if not v or not v.isascii() or not v.isdigit():
        return INVALID
    # Past 10 digits it is over 2**31 anyway; int() of a huge digit string
    # would raise (Python's int max_str_digits) and cost quadratic time.
    v = v.lstrip("0") or "0"
    return DELTA_MAX if len(v) > 10 else min(int(v), DELTA_MAX)


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
        """The qualified form's field names (no-cache="a, b"); None when bare/absent.

        The qualified form "lists one or more field names" (RFC 9111 sections
        5.2.2.4, 5.2.2.7). An argument that lists none, or any member that is
        not a field-name (a token), is read as the unqualified directive: the
        most restrictive reading of a malformed directive (section 4.2.1).
        """
        arg = self.directives.get(name)
        if arg is None:
            return None
        names = list(split_list(unquote(arg.strip(" \t"))))
        if not names or not all(is_token(n) for n in names):
            return None
        return frozenset(n.lower() for n in names)

    def __bool__(self) -> bool:
        return bool(self.directives)


EMPTY = CacheControl()


@functools.lru_cache(maxsize=1024)
def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a combined field value. Never raises.

    Memoised (hits re-read the same few values): the CacheControl returned is
    shared, so callers must treat it, and its `directives`, as read-only.

    Unknown directives are kept (section 5.2.3 extensions); a repeated directive
    keeps its first occurrence, the conservative reading of section 4.2.1's
    "invalid if it has duplicates" once both are the same name.
    """
    if not value:
        return EMPTY
    out: dict[str, str | None] = {}
    for item in split_list(value):
        raw_name, eq, raw_arg = item.partition("=")
        # Token check before lower(): non-ASCII letters can lower to ASCII.
        name = raw_name.strip(" \t")
        if not is_token(name):
            continue
        name = name.lower()
        arg = raw_arg.strip(" \t") if eq else None
        if name in out:
            # Duplicate freshness directives that disagree make the response
            # stale (4.2.1); the same value twice (5 and "5") is harmless.
            if name in ("max-age", "s-maxage") and parse_delta_seconds(
                out[name]
            ) != parse_delta_seconds(arg):
                out[name] = _CONFLICT
            continue
        out[name] = arg
    return CacheControl(out) if out else EMPTY


def request_cache_control(headers: Headers) -> CacheControl:
    """Request directives; `Pragma: no-cache` counts only without Cache-Control (5.4)."""
    lines = headers.getall("cache-control", ())
    if lines:
        return parse_cache_control(", ".join(lines))
    pragma = headers.getall("pragma", ())
    if any(p.lower() == "no-cache" for line in pragma for p in split_list(line)):
        return CacheControl({"no-cache": None})
    return EMPTY


def parse_targeted(value: str) -> CacheControl | None:
    """A targeted field's value (RFC 9213 section 2.2): an sf-dictionary.

    None when it is empty or fails to parse: such a field is ignored whole.
    Members map to directives: `?0` (false) is left out, a bare key or `?1`
    is a bare directive, a String keeps its quotes (so `no-cache="a, b"` reads
    as in Cache-Control) and anything else keeps its source text, so a
    non-Integer max-age is INVALID. Parameters are dropped.
    """
    members = parse_dictionary(value)
    if not members:
        return None
    out: dict[str, str | None] = {}
    for key, m in members.items():
        if m.kind == "boolean":
            if m.text == "?1":
                out[key] = None
        elif m.kind == "string":
            out[key] = '"' + m.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            out[key] = m.text
    # A valid field of only `?0` members still wins: it is present and valid.
    return CacheControl(out)


def _targeted(headers: Headers, targeted: tuple[str, ...]) -> tuple[str, CacheControl] | None:
    for name in targeted:
        lines = headers.getall(name, ())
        if lines:
            cc = parse_targeted(", ".join(lines))
            if cc is not None:
                return name.lower(), cc
    return None


def targeted_field(headers: Headers, targeted: tuple[str, ...]) -> str | None:
    """The name of the targeted field in force, or None when Cache-Control is.

    RFC 9213 section 2.1: when one is in force, the cache "MUST ignore the
    Cache-Control and Expires header fields"; freshness needs to know the
    Expires half of that.
    """
    found = _targeted(headers, targeted)
    return None if found is None else found[0]


def response_cache_control(headers: Headers, targeted: tuple[str, ...] = ()) -> CacheControl:
    """The directives this cache obeys for a response.

    RFC 9213 section 2.1: the first targeted field in `targeted` (most specific
    first, e.g. ("edgeproxy-cache-control", "cdn-cache-control")) with a valid,
    non-empty value wins and Cache-Control is then ignored; a field that is
    empty or fails to parse as an sf-dictionary is ignored (section 2.2).
    """
    found = _targeted(headers, targeted)
    if found is not None:
        return found[1]
    lines = headers.getall("cache-control", ())
    return parse_cache_control(", ".join(lines)) if lines else EMPTY
