"""Builders for the policy tables: Entries and Requests from header dicts and times."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.http.cache_control import request_cache_control
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.vary import secondary_key, vary_names
from edgeproxy.policy.decide import Request
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.settings import CachePolicy

# A whole second, so that an HTTP-date round-trips exactly.
T0 = 1_800_000_000.0
KEY = "http://example.com/page"
TARGETED = CachePolicy().targeted

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]


def http_date(ts: float) -> str:
    return format_http_date(ts)


def headers(h: HeaderInput = ()) -> CIMultiDictProxy[str]:
    """A read-only header multidict; pass pairs to repeat a field."""
    items = h.items() if isinstance(h, Mapping) else h
    return CIMultiDictProxy(CIMultiDict(items))


def make_entry(
    fields: HeaderInput = (),
    *,
    status: int = 200,
    request_time: float = T0,
    response_time: float = T0,
    date: float | None = T0,
    request: HeaderInput = (),
    **changes: Any,
) -> Entry:
    """An Entry as the shell stores it.

    `date` adds a Date field (None: none, so Date falls back to response_time);
    a Date in `fields` wins. Vary names come from `fields` and the secondary
    key from the `request` headers that produced the stored response.
    """
    h = CIMultiDict(headers(fields))
    if date is not None and "date" not in h:
        h["Date"] = http_date(date)
    names = vary_names(h)
    secondary = secondary_key(headers(request), names) or ()
    kwargs: dict[str, Any] = {
        "key": KEY,
        "status": status,
        "fields": CIMultiDictProxy(h),
        "request_time": request_time,
        "response_time": response_time,
        "vary": names,
        "secondary": secondary,
        "targeted": TARGETED,
    }
    kwargs.update(changes)
    return Entry(**kwargs)


def make_request(method: str = "GET", h: HeaderInput = ()) -> Request:
    hdrs = headers(h)
    return Request(method, hdrs, request_cache_control(hdrs))
