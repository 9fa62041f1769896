"""Typed purge commands (issue 4). Never an implicit regex: URL, prefix, tag and
all are distinct kinds. Pure: no I/O.

What each target covers is stated once, by `matches`; a store answers the
same question with its indexes, and the contract suite checks it agrees.
Keys are primary cache keys (`scheme://host/path?query`, cachekey.py) and
are compared literally: normalising a URL into a key is the caller's job
(`cachekey.primary_key`).

Ban semantics: a purge issued at time T kills every matching entry whose
`request_time` is before T, including fills that raced the purge (an origin
fetch that began before T and finished after it must not be stored as valid).
`issued_at` must come from the clock that stamps `request_time` (the shell's
injected clock); the default 0.0 bans nothing. A soft purge's ban stores a
racing fill already marked `soft_purged` instead of refusing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import assert_never

from edgeproxy.cachekey import normalise_host


@dataclass(frozen=True, slots=True)
class PurgeURL:
    """Every stored variant of one URL (a primary cache key).

    Also every `url#...` key: route key extras (cachekey.key_extras) hang
    off the URL they refine. Only GET is stored, so HEAD goes with it.
    """

    url: str


@dataclass(frozen=True, slots=True)
class PurgePrefix:
    """Every URL (primary key) that starts with `prefix` (literally; "" is all)."""

    prefix: str


@dataclass(frozen=True, slots=True)
class PurgeTags:
    """Every entry whose response carried any of these surrogate keys."""

    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PurgeAll:
    """Everything, or everything of one host (keys `scheme://host/...`)."""

    host: str | None = None


Target = PurgeURL | PurgePrefix | PurgeTags | PurgeAll


@dataclass(frozen=True, slots=True)
class Purge:
    target: Target
    soft: bool = False  # mark stale instead of deleting
    dry_run: bool = False  # count only
    issued_at: float = 0.0  # the ban time, from the shell's clock


SCHEMES = ("http", "https")


def host_prefixes(host: str) -> tuple[str, ...]:
    """The key prefixes of one host, for both schemes (host normalised as keys are)."""
    return tuple(f"{scheme}://{normalise_host(host, scheme)}/" for scheme in SCHEMES)


def url_covers(url: str, key: str) -> bool:
    """A URL purge takes the URL's key and its `url#extras` keys."""
    return key == url or key.startswith(url + "#")


def matches(target: Target, key: str, tags: Iterable[str]) -> bool:
    """Whether `target` covers the entry stored under `key` with `tags`."""
    match target:
        case PurgeURL(url=url):
            return url_covers(url, key)
        case PurgePrefix(prefix=prefix):
            return key.startswith(prefix)
        case PurgeTags(tags=wanted):
            return not set(wanted).isdisjoint(tags)
        case PurgeAll(host=host):
            return host is None or key.startswith(host_prefixes(host))
        case _:
            assert_never(target)
