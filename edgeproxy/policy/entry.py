"""What we keep per stored response (design.md "Data we keep").

Validators (ETag, Last-Modified) are read from the stored fields, never
duplicated. The store only serialises these; it never interprets them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.frozen import set_fields
from edgeproxy.http.cache_control import CacheControl, response_cache_control
from edgeproxy.http.dates import parse_http_date

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # primary cache key (cachekey.py)
    status: int
    fields: CIMultiDictProxy[str]  # stored header fields, hop-by-hop removed
    request_time: float  # RFC 9111 section 4.2.3
    response_time: float
    vary: tuple[str, ...] = ()  # the stored response's Vary names
    secondary: tuple[str | None, ...] = ()  # the request's values for them
    body_size: int = 0
    tags: tuple[str, ...] = ()
    route: str = ""
    soft_purged: bool = False
    variant: str = ""  # store-assigned id of this variant
    # Targeted Cache-Control names in force when stored (RFC 9213).
    targeted: tuple[str, ...] = field(default=(), compare=False)
    # What this edge did to the origin's content (policy/transform.py): the
    # coding it applied ("gzip", "br"), "identity" when it only added
    # Vary: Accept-Encoding, "" when nothing. A 304 merge re-applies it.
    coding: str = ""
    # Parsed once per Entry, on first use: a hit's decision reads them several
    # times (freshness, age, ttl, conditionals), and a hot-tier entry serves
    # many hits. Safe to keep: the entry is frozen, and `with_changes`
    # (dataclasses.replace) starts a new entry with these unset.
    _cc: CacheControl | None = field(default=None, init=False, repr=False, compare=False)
    _date: float | None = field(default=None, init=False, repr=False, compare=False)
    # policy/freshness.py's, for the same reason: the corrected initial age
    # (fixed per entry) and the lifetime under the policy it was worked out for.
    _initial_age: float | None = field(default=None, init=False, repr=False, compare=False)
    _lifetime: tuple[object, float] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # store/memory.py's charge for the field lines: (count, their bytes).
    _lines: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self,
        key: str,
        status: int,
        fields: CIMultiDictProxy[str],
        request_time: float,
        response_time: float,
        vary: tuple[str, ...] = (),
        secondary: tuple[str | None, ...] = (),
        body_size: int = 0,
        tags: tuple[str, ...] = (),
        route: str = "",
        soft_purged: bool = False,
        variant: str = "",
        targeted: tuple[str, ...] = (),
        coding: str = "",
    ) -> None:
        # Written out (edgeproxy/frozen.py): compiled, native stores, ~0.1 us
        # against the generated __init__'s 3.5 (a miss and a revalidation
        # make one or two Entries); plain, set_fields in field order.
        if not _NATIVE:
            values: tuple[object, ...] = (key, status, fields, request_time, response_time)
            values += (vary, secondary, body_size, tags, route, soft_purged, variant, targeted)
            set_fields(self, _INIT + _MEMO, (*values, coding) + (None,) * len(_MEMO))
            return
        self.key = key  # type: ignore[misc]
        self.status = status  # type: ignore[misc]
        self.fields = fields  # type: ignore[misc]
        self.request_time = request_time  # type: ignore[misc]
        self.response_time = response_time  # type: ignore[misc]
        self.vary = vary  # type: ignore[misc]
        self.secondary = secondary  # type: ignore[misc]
        self.body_size = body_size  # type: ignore[misc]
        self.tags = tags  # type: ignore[misc]
        self.route = route  # type: ignore[misc]
        self.soft_purged = soft_purged  # type: ignore[misc]
        self.variant = variant  # type: ignore[misc]
        self.targeted = targeted  # type: ignore[misc]
        self.coding = coding  # type: ignore[misc]
        self._cc = None  # type: ignore[misc]
        self._date = None  # type: ignore[misc]
        self._initial_age = None  # type: ignore[misc]
        self._lifetime = None  # type: ignore[misc]
        self._lines = None  # type: ignore[misc]

    @property
    def cache_control(self) -> CacheControl:
        cc = self._cc
        if cc is None:
            cc = response_cache_control(self.fields, self.targeted)
            object.__setattr__(self, "_cc", cc)
        return cc

    @property
    def date(self) -> float:
        """The Date value, or when we received it (RFC 9110 section 6.6.1)."""
        d = self._date
        if d is None:
            parsed = parse_http_date(self.fields.get("date"))
            d = self.response_time if parsed is None else parsed
            object.__setattr__(self, "_date", d)
        return d

    @property
    def field_lines(self) -> tuple[int, int]:
        """How many field lines, and the characters of their names and values:
        what the hot tier charges for them (store/memory.py), memoised as a
        hit's parses are."""
        lines = self._lines
        if lines is None:
            fields = self.fields
            lines = (len(fields), sum(len(k) + len(v) for k, v in fields.items()))
            object.__setattr__(self, "_lines", lines)
        return lines

    def with_changes(self, **changes: Any) -> Entry:
        """dataclasses.replace, in less time (plain 2.8 vs 5-7 us, compiled
        ~0.3; a 304's merge and every commit make one or two): the memoised
        fields start unset. Compiled (edgeproxy/compiled.py), the class is
        native and its own constructor is the fast way (object.__new__
        refuses it)."""
        if not changes.keys() <= _INIT_SET:
            raise TypeError(f"Entry has no fields {sorted(changes.keys() - _INIT_SET)}")
        if _NATIVE:  # each field by name: no getattr by string, no ** call
            c = changes.get
            return Entry(
                c("key", self.key),
                c("status", self.status),
                c("fields", self.fields),
                c("request_time", self.request_time),
                c("response_time", self.response_time),
                c("vary", self.vary),
                c("secondary", self.secondary),
                c("body_size", self.body_size),
                c("tags", self.tags),
                c("route", self.route),
                c("soft_purged", self.soft_purged),
                c("variant", self.variant),
                c("targeted", self.targeted),
                c("coding", self.coding),
            )
        new = _new(Entry)
        for name in _INIT:
            _set(new, name, changes[name] if name in changes else getattr(self, name))
        for name in _MEMO:
            _set(new, name, None)
        return new

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "key": self.key,
            "status": self.status,
            "fields": list(self.fields.items()),
            "request_time": self.request_time,
            "response_time": self.response_time,
            "vary": list(self.vary),
            "secondary": list(self.secondary),
            "body_size": self.body_size,
            "tags": list(self.tags),
            "route": self.route,
            "soft_purged": self.soft_purged,
            "variant": self.variant,
            "targeted": list(self.targeted),
            "coding": self.coding,
        }


_INIT = tuple(f.name for f in fields(Entry) if f.init)
_INIT_SET = frozenset(_INIT)
_MEMO = tuple(f.name for f in fields(Entry) if not f.init)
_new = object.__new__
_set = object.__setattr__
_NATIVE = __file__.endswith(".so")  # compiled by mypyc (edgeproxy/compiled.py)


class CorruptEntry(ValueError):
    """Stored metadata that can't be read back: treated as a miss."""


def entry_from_json(data: bytes) -> Entry:
    try:
        d = json.loads(data)
    except (ValueError, RecursionError) as e:
        # ValueError covers bad UTF-8 and the 4300-digit int limit;
        # RecursionError deeply nested arrays.
        raise CorruptEntry(str(e) or type(e).__name__) from e
    return entry_from_dict(d)


def entry_from_dict(d: Any) -> Entry:
    """Rebuild an Entry from `to_dict` output; anything else is CorruptEntry.

    Types are checked, not coerced: a coerced value (an infinite time, a
    status of 0, a string where a list belongs) would fail later, far from
    the store, where it can't be treated as a miss.
    """
    if not isinstance(d, dict):
        raise CorruptEntry(f"entry is {type(d).__name__}, not an object")
    version = d.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CorruptEntry(f"unknown entry format {version!r}")
    try:
        return Entry(
            key=_str(d["key"]),
            status=_status(d["status"]),
            fields=CIMultiDictProxy(CIMultiDict(_field(f) for f in _list(d["fields"]))),
            request_time=_time(d["request_time"]),
            response_time=_time(d["response_time"]),
            vary=tuple(_str(n) for n in _list(d["vary"])),
            secondary=tuple(None if s is None else _str(s) for s in _list(d["secondary"])),
            body_size=_size(d["body_size"]),
            tags=tuple(_str(t) for t in _list(d["tags"])),
            route=_str(d["route"]),
            soft_purged=_bool(d["soft_purged"]),
            variant=_str(d["variant"]),
            targeted=tuple(_str(t) for t in _list(d.get("targeted", []))),
            coding=_str(d.get("coding", "")),  # absent in entries stored before it
        )
    except KeyError as e:
        raise CorruptEntry(f"missing {e}") from e


def _wrong(what: str, value: Any) -> CorruptEntry:
    return CorruptEntry(f"expected {what}, got {type(value).__name__}")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise _wrong("a string", v)
    return v


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _wrong("a list", v)
    return v


def _field(v: Any) -> tuple[str, str]:
    if not isinstance(v, list) or len(v) != 2:
        raise _wrong("a [name, value] pair", v)
    return _str(v[0]), _str(v[1])


def _status(v: Any) -> int:
    # A three-digit status (RFC 9110 section 15); bool is an int subclass.
    if type(v) is not int or not 100 <= v <= 599:
        raise CorruptEntry(f"bad status {v!r}")
    return v


def _size(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise CorruptEntry(f"bad body size {v!r}")
    return v


def _time(v: Any) -> float:
    if type(v) not in (int, float):
        raise _wrong("a number", v)
    try:
        t = float(v)
    except OverflowError as e:  # an int past float range
        raise CorruptEntry("time out of range") from e
    if not math.isfinite(t):  # json accepts NaN and Infinity
        raise CorruptEntry(f"bad time {t!r}")
    return t


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _wrong("a boolean", v)
    return v
