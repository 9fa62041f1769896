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

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, assert_never
from urllib.parse import urlsplit

from edgeproxy.cachekey import normalise_host, primary_key
from edgeproxy.http.surrogate import MAX_KEY_LENGTH, is_surrogate_key


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


# -- the admin API's purge request --------------------------------------------

MAX_TAGS = 1000  # per request; the store purges each tag through its index
MAX_URL_LENGTH = 8192
KINDS = ("url", "prefix", "tag", "tags", "all")
FLAGS = ("soft", "dry_run", "host")
FIELDS = KINDS + FLAGS


class PurgeRequestError(ValueError):
    """A purge request that can't be carried out; the message says why."""


def parse_purge_json(body: bytes, *, issued_at: float = 0.0) -> Purge:
    """`POST /purge` body (UTF-8 JSON) -> Purge; PurgeRequestError says what is wrong.

    A name repeated in the object is refused rather than silently resolved
    (JSON leaves duplicates undefined, RFC 8259 section 4).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PurgeRequestError(f"body is not UTF-8: {e.reason}") from e
    try:
        obj = json.loads(text, object_pairs_hook=_unique_names)
    except _DuplicateName as e:
        raise PurgeRequestError(f"field {e.name!r} given twice") from e
    except RecursionError as e:
        raise PurgeRequestError("malformed JSON: nested too deeply") from e
    except ValueError as e:
        raise PurgeRequestError(f"malformed JSON: {e}") from e
    return parse_purge_request(obj, issued_at=issued_at)


class _DuplicateName(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _DuplicateName(name)
        out[name] = value
    return out


def parse_purge_request(obj: object, *, issued_at: float = 0.0) -> Purge:
    """A decoded JSON purge request -> Purge, or PurgeRequestError.

    Exactly one of `{"url": ...}`, `{"prefix": ...}`, `{"tag": ...}`,
    `{"tags": [...]}`, `{"all": true}` (this one optionally with `"host"`),
    plus optional booleans `soft` and `dry_run`. Types are checked, never
    coerced. URLs and prefixes become primary keys (`cachekey.primary_key`:
    scheme and host lower-cased, default port dropped), the form the store
    compares literally.
    """
    if not isinstance(obj, dict):
        raise PurgeRequestError(f"expected a JSON object, got {_json_type(obj)}")
    unknown = [name for name in obj if name not in FIELDS]
    if unknown:
        raise PurgeRequestError(
            f"unknown field {', '.join(map(repr, unknown))} (allowed: {', '.join(FIELDS)})"
        )
    kinds = [name for name in KINDS if name in obj]
    if len(kinds) != 1:
        given = f"got {' and '.join(kinds)}" if kinds else "got none"
        raise PurgeRequestError(f"expected exactly one of {', '.join(KINDS)}; {given}")
    kind = kinds[0]
    soft = _flag(obj, "soft")
    dry_run = _flag(obj, "dry_run")
    if "host" in obj and kind != "all":
        raise PurgeRequestError('"host" only goes with "all"')
    value = obj[kind]
    target: Target
    if kind == "url":
        target = PurgeURL(_url(value, "url"))
    elif kind == "prefix":
        target = PurgePrefix(_url(value, "prefix"))
    elif kind == "tag":
        target = PurgeTags((_tag(value, '"tag"'),))
    elif kind == "tags":
        target = PurgeTags(_tags(value))
    else:
        if value is not True:
            raise PurgeRequestError(f'"all" must be true, got {_json_repr(value)}')
        target = PurgeAll(_host(obj["host"]) if "host" in obj else None)
    return Purge(target, soft=soft, dry_run=dry_run, issued_at=issued_at)


def _flag(obj: dict[str, Any], name: str) -> bool:
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise PurgeRequestError(f'"{name}" must be true or false, got {_json_repr(value)}')
    return value


def _tag(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise PurgeRequestError(f"{where} must be a string, got {_json_repr(value)}")
    if not value:
        raise PurgeRequestError(f"{where} is empty")
    if not is_surrogate_key(value):
        # Such a tag is never stored (http/surrogate.py): it could match nothing.
        raise PurgeRequestError(
            f"{where} {value[:64]!r}: a tag is 1-{MAX_KEY_LENGTH} visible ASCII characters, "
            "no spaces or commas"
        )
    return value


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PurgeRequestError(f'"tags" must be a list of strings, got {_json_repr(value)}')
    if not value:
        raise PurgeRequestError('"tags" is empty')
    if len(value) > MAX_TAGS:
        raise PurgeRequestError(f'"tags" has {len(value)} tags; at most {MAX_TAGS}')
    return tuple(dict.fromkeys(_tag(t, f'"tags"[{i}]') for i, t in enumerate(value)))


def _host(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise PurgeRequestError(f'"host" must be a non-empty string, got {_json_repr(value)}')
    if any(c in value for c in "/?#@\\") or not _visible_ascii(value):
        raise PurgeRequestError(f'"host" {value[:64]!r}: expected host[:port], no scheme or path')
    return value


def _url(value: object, field: str) -> str:
    """An absolute http(s) URL, or a URL prefix with its path begun -> key form.

    The path and query are kept exactly as given, never re-encoded: the
    proxy keys a request on its target as received.
    """
    where = f'"{field}"'
    if not isinstance(value, str):
        raise PurgeRequestError(f"{where} must be a string, got {_json_repr(value)}")
    example = "http://host/path?query" if field == "url" else "http://host/path/"
    if len(value) > MAX_URL_LENGTH:
        raise PurgeRequestError(f"{where} is longer than {MAX_URL_LENGTH} characters")
    shown = f"{where} {value[:64]!r}"
    if not _visible_ascii(value):
        raise PurgeRequestError(f"{shown}: only visible ASCII, percent-encode the rest")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise PurgeRequestError(f"{shown}: expected an absolute http(s) URL like {example}")
    ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    if not ends and field == "prefix":
        # "http://a" would also take "http://a.evil/": a prefix starts a path.
        raise PurgeRequestError(
            f"{shown}: no path, expected {example}; "
            'to purge a whole host send {"all": true, "host": ...}'
        )
    # A URL's empty path is "/" (RFC 9112 section 3.2.1); primary_key adds it.
    cut = min(ends, default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if "#" in value:
        raise PurgeRequestError(f"{shown}: a request target has no #fragment")
    if "@" in authority:
        raise PurgeRequestError(f"{shown}: user info is never part of a cache key")
    if not authority or authority.startswith(":"):
        raise PurgeRequestError(f"{shown}: no host")
    try:
        urlsplit(f"{scheme}://{authority}/").port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        raise PurgeRequestError(f"{shown}: {e}") from e
    return primary_key(scheme, authority, target)


def _visible_ascii(value: str) -> bool:
    return value.isascii() and all("!" <= c <= "~" for c in value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _json_repr(value: object) -> str:
    """A value as the client wrote it (short), or its type for containers."""
    if isinstance(value, dict | list):
        return _json_type(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return _json_type(value)
    return text if len(text) <= 64 else text[:61] + "..."


def listing_prefix(value: str) -> str:
    """A listing's prefix in key form when it reads as a URL prefix, else as given.

    Listing is read-only, so a partial prefix ("http://ex") is fine there and
    taken literally; a full one is normalised as the purge API normalises it.
    """
    try:
        return _url(value, "prefix")
    except PurgeRequestError:
        return value
