"""Vary and the secondary cache key (RFC 9111 section 4.1, RFC 9110 section 12.5.5)."""

from __future__ import annotations

from edgeproxy.http.accept_encoding import request_coding
from edgeproxy.http.fields import Headers, list_values, split_list

# `Vary: *` is kept as this marker: such a response never matches (4.1).
STAR: tuple[str, ...] = ("*",)


def vary_names(headers: Headers) -> tuple[str, ...]:
    """Lower-cased, de-duplicated, sorted field names a response varies on.

    Field names are case-insensitive (RFC 9110 section 5.1), and a list's
    order and repeats carry no meaning (section 12.5.5), so this form makes
    equal Vary values compare equal.
    """
    names = {v.lower() for v in list_values(headers, "vary")}
    if "*" in names:
        return STAR
    return tuple(sorted(n for n in names if n))


def normalise(headers: Headers, name: str) -> str | None:
    """One field's value for key purposes: lines combined, list whitespace folded.

    Absent stays None, so "absent" and "present but empty" are different
    variants, as 4.1 requires for a field missing from one request.
    Splitting honours quoted strings (RFC 9110 section 5.6.1), so a comma or
    spaces inside quotes are content, not list syntax; only OWS (SP / HTAB)
    around commas is folded.
    """
    lines = headers.getall(name, ())
    if not lines:
        return None
    return ",".join(m for line in lines for m in split_list(line))


def secondary_key(request: Headers, names: tuple[str, ...]) -> tuple[str | None, ...] | None:
    """The request's values for the stored Vary names; None for `Vary: *`.

    Accept-Encoding is keyed by the coding this edge would pick for it
    ("br", "gzip" or "identity", http/accept_encoding.py), never by its
    spelling, so `gzip, deflate, br` and `br;q=1, gzip` share a variant. 4.1
    allows normalising a field by its semantics; this one is coarser, and
    sound because the edge sends only that token upstream (proxy.py): two
    requests with one token are the same request to the origin. An absent
    field is "identity" too.
    """
    if names == STAR:
        return None
    return tuple(
        request_coding(request) if n == "accept-encoding" else normalise(request, n) for n in names
    )


def matches(request: Headers, names: tuple[str, ...], stored_key: tuple[str | None, ...]) -> bool:
    """Does the presented request select a response stored under `stored_key`?"""
    key = secondary_key(request, names)
    return key is not None and key == stored_key
