"""Entity tags (RFC 9110 section 8.8.3) and their comparison (8.8.3.2)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ETag:
    opaque: str  # the quoted opaque-tag, quotes included
    weak: bool = False

    def __str__(self) -> str:
        return ("W/" if self.weak else "") + self.opaque


# opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text
_OPAQUE = re.compile(r'"[\x21\x23-\x7e\x80-\U0010ffff]*"')


def _valid_opaque(tag: str) -> bool:
    return _OPAQUE.fullmatch(tag) is not None


# Both parsers are pure functions of one string whose results are frozen:
# memoised, as a hit parses the same stored ETag and If-None-Match over and
# over (they were ~15% of a client 304's CPU).
@functools.lru_cache(maxsize=4096)
def parse_etag(value: str | None) -> ETag | None:
    """One entity-tag, or None when absent or malformed."""
    if value is None:
        return None
    v = value.strip()
    weak = v.startswith("W/")
    if weak:
        v = v[2:]
    return ETag(v, weak) if _valid_opaque(v) else None


@dataclass(frozen=True, slots=True)
class ETagList:
    """If-Match / If-None-Match: `*` or a list of entity-tags."""

    any: bool
    tags: tuple[ETag, ...]


@functools.lru_cache(maxsize=4096)
def parse_etag_list(value: str | None) -> ETagList | None:
    """`*` / #entity-tag. Malformed members are skipped; None when nothing valid.

    Commas may occur inside opaque-tags, so we scan tag by tag rather than
    splitting on commas.
    """
    if value is None:
        return None
    v = value.strip()
    if v == "*":
        return ETagList(True, ())
    tags: list[ETag] = []
    i, n = 0, len(v)
    while i < n:
        while i < n and v[i] in " \t,":
            i += 1
        if i >= n:
            break
        weak = v.startswith("W/", i)
        j = i + 2 if weak else i
        if j < n and v[j] == '"':
            end = v.find('"', j + 1)
            if end < 0:
                break
            tag = parse_etag(v[i : end + 1])
            if tag is not None:
                tags.append(tag)
            i = end + 1
        else:
            nxt = v.find(",", i)
            i = n if nxt < 0 else nxt + 1
    return ETagList(False, tuple(tags)) if tags else None


def strong_match(a: ETag, b: ETag) -> bool:
    """Strong comparison: both strong and the opaque-tags identical."""
    return not a.weak and not b.weak and a.opaque == b.opaque


def weak_match(a: ETag, b: ETag) -> bool:
    """Weak comparison: the opaque-tags identical, weakness ignored."""
    return a.opaque == b.opaque
