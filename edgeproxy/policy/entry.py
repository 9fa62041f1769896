"""What we keep per stored response (design.md "Data we keep").

Validators (ETag, Last-Modified) are read from the stored fields, never
duplicated. The store only serialises these; it never interprets them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

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

    @property
    def cache_control(self) -> CacheControl:
        return response_cache_control(self.fields, self.targeted)

    @property
    def date(self) -> float:
        """The Date value, or when we received it (RFC 9110 section 6.6.1)."""
        d = parse_http_date(self.fields.get("date"))
        return self.response_time if d is None else d

    def with_changes(self, **changes: Any) -> Entry:
        return replace(self, **changes)

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
        }


class CorruptEntry(ValueError):
    """Stored metadata that can't be read back: treated as a miss."""


def entry_from_json(data: bytes) -> Entry:
    try:
        d = json.loads(data)
    except ValueError as e:
        raise CorruptEntry(str(e)) from e
    return entry_from_dict(d)


def entry_from_dict(d: Any) -> Entry:
    try:
        if d.get("v") != FORMAT_VERSION:
            raise CorruptEntry(f"unknown entry format {d.get('v')!r}")
        return Entry(
            key=str(d["key"]),
            status=int(d["status"]),
            fields=CIMultiDictProxy(CIMultiDict((str(k), str(v)) for k, v in d["fields"])),
            request_time=float(d["request_time"]),
            response_time=float(d["response_time"]),
            vary=tuple(str(n) for n in d["vary"]),
            secondary=tuple(None if s is None else str(s) for s in d["secondary"]),
            body_size=int(d["body_size"]),
            tags=tuple(str(t) for t in d["tags"]),
            route=str(d["route"]),
            soft_purged=bool(d["soft_purged"]),
            variant=str(d["variant"]),
            targeted=tuple(str(t) for t in d.get("targeted", ())),
        )
    except CorruptEntry:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptEntry(str(e)) from e
