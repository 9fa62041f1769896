"""Surrogate keys (cache tags) an origin attaches to a response.

Two de-facto field names, no RFC: Fastly's `Surrogate-Key` (keys separated by
spaces) and Cloudflare's `Cache-Tag` (separated by commas). Both are read the
same way: split on SP, HTAB and comma across every field line, empty members
dropped, duplicates dropped (first one kept), order kept. Keys are
case-sensitive, as both vendors treat them.

Bounded against abuse (the origin is trusted, but a runaway one must not grow
the tag index without limit): a key longer than MAX_KEY_LENGTH, or one holding
anything but visible ASCII, is dropped whole (truncating could make it another
key); past MAX_KEYS the rest are ignored. `is_surrogate_key` states what a key
is, so the purge API can reject a tag no response can carry.
"""

from __future__ import annotations

from edgeproxy.http.fields import Headers

NAMES = ("surrogate-key", "cache-tag")
MAX_KEYS = 256
MAX_KEY_LENGTH = 1024

_SEPARATORS = " \t,"


def is_surrogate_key(value: str) -> bool:
    """1 to MAX_KEY_LENGTH visible ASCII characters (VCHAR), no comma."""
    return (
        0 < len(value) <= MAX_KEY_LENGTH
        and value.isascii()
        and all("!" <= c <= "~" and c != "," for c in value)
    )


def _members(line: str) -> list[str]:
    for sep in _SEPARATORS[1:]:
        line = line.replace(sep, " ")
    return line.split(" ")


def surrogate_keys(headers: Headers, names: tuple[str, ...] = NAMES) -> tuple[str, ...]:
    """The response's surrogate keys, in order of appearance (fields in `names` order)."""
    seen: dict[str, None] = {}
    for name in names:
        for line in headers.getall(name, ()):
            for member in _members(line):
                if member in seen or not is_surrogate_key(member):
                    continue
                seen[member] = None
                if len(seen) == MAX_KEYS:
                    return tuple(seen)
    return tuple(seen)
