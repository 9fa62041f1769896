"""Vary and the secondary cache key (RFC 9111 section 4.1, RFC 9110 section 12.5.5)."""

from __future__ import annotations

from edgeproxy.http.fields import Headers, list_values

# `Vary: *` is kept as this marker: such a response never matches (4.1).
STAR: tuple[str, ...] = ("*",)


def vary_names(headers: Headers) -> tuple[str, ...]:
    """Lower-cased, de-duplicated, sorted field names a response varies on."""
    names = {v.strip().lower() for v in list_values(headers, "vary")}
    if "*" in names:
        return STAR
    return tuple(sorted(n for n in names if n))


def normalise(headers: Headers, name: str) -> str | None:
    """One field's value for key purposes: lines combined, list whitespace folded.

    Absent stays None, so "absent" and "present but empty" are different
    variants, as 4.1 requires for a field missing from one request.
    """
    lines = headers.getall(name, ())
    if not lines:
        return None
    members: list[str] = []
    for line in lines:
        members.extend(m.strip() for m in line.split(","))
    return ",".join(m for m in members if m)


def secondary_key(request: Headers, names: tuple[str, ...]) -> tuple[str | None, ...] | None:
    """The request's values for the stored Vary names; None for `Vary: *`."""
    if names == STAR:
        return None
    return tuple(normalise(request, n) for n in names)


def matches(request: Headers, names: tuple[str, ...], stored_key: tuple[str | None, ...]) -> bool:
    """Does the presented request select a response stored under `stored_key`?"""
    key = secondary_key(request, names)
    return key is not None and key == stored_key
