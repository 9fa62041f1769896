"""Access log: one line per client request, and the request id that ties it
to the origin's logs.

Pure apart from `emit` (logging) and `request_id` (a random id): the handler
records what it learned on the way (proxy.py) and, only when the
`edgeproxy.access` logger is enabled for INFO, builds an `AccessRecord` and
formats it here. Nothing here reads request headers beyond the id, so no
credential (Authorization, the admin token) can reach a line.

The cache outcome is derived from the Cache-Status value actually sent
(RFC 9211), so the log can never disagree with what the client saw.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from edgeproxy.http.cache_status import CacheStatus, Fwd, ProxyError

access_log = logging.getLogger("edgeproxy.access")

REQUEST_ID = "X-Request-Id"
Format = Literal["json", "combined"]

# A client-sent id is kept only if it is short and harmless in a header, a
# log line and a shell: anything else is replaced, never escaped.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PROXY_ERRORS = frozenset(e.value for e in ProxyError)
_STALE_DETAILS = frozenset({"stale-while-revalidate", "stale-if-error"})


def request_id(sent: str | None) -> str:
    """The client's X-Request-Id when well-formed, else a new uuid4 (hex)."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def cache_outcome(cs: CacheStatus | None, status: int, from_store: bool) -> str:
    """One word for the log, from the Cache-Status sent, the status code and
    whether the response was made from a stored one (`from_store`).

    none: no Cache-Status (refused, no route, PURGE); error: the edge's own
    error response (a Proxy-Status error type in detail, RFC 9209 section
    2.3); client-304: the cache answered a client's conditional itself;
    stale: a stale response served (RFC 5861 details, or a hit with a
    negative ttl, RFC 9211 section 2.4); hit; collapsed (answered from another
    request's fill); revalidated (the origin's 304 freshened a stored one);
    bypass (route with cache off); pass (method not cacheable); miss
    (anything else that went forward, including only-if-cached's 504).
    """
    if cs is None:
        return "none"
    if cs.detail in _PROXY_ERRORS:
        return "error"
    if status == 304 and from_store:
        return "client-304"
    if cs.detail in _STALE_DETAILS:
        return "stale"
    if cs.collapsed:
        return "collapsed"
    if cs.hit:
        return "stale" if cs.ttl is not None and cs.ttl < 0 else "hit"
    if cs.fwd is Fwd.BYPASS:
        return "bypass"
    if cs.fwd is Fwd.METHOD:
        return "pass"
    if from_store and cs.fwd_status == 304:
        return "revalidated"
    return "miss"


@dataclass(frozen=True, slots=True)
class AccessRecord:
    time: float  # request start, seconds since the epoch (the edge's HTTP clock)
    client: str | None
    method: str
    url: str  # the request target as received
    status: int
    bytes: int  # body bytes sent
    duration_ms: float
    cache: str
    route: str | None
    origin_status: int | None
    origin_ms: float | None  # until the origin's response head (or its failure)
    request_id: str
    # Combined format only.
    version: str = "HTTP/1.1"
    referer: str | None = None
    user_agent: str | None = None


def rfc3339(t: float) -> str:
    """UTC, milliseconds, `Z` (RFC 3339 section 5.6)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_json(r: AccessRecord) -> str:
    """One JSON object; json.dumps escapes every control character, so a
    hostile URL cannot forge a second line."""
    return json.dumps(
        {
            "time": rfc3339(r.time),
            "client": r.client,
            "method": r.method,
            "url": r.url,
            "status": r.status,
            "bytes": r.bytes,
            "duration_ms": r.duration_ms,
            "cache": r.cache,
            "route": r.route,
            "origin_status": r.origin_status,
            "origin_ms": r.origin_ms,
            "request_id": r.request_id,
        },
        separators=(",", ":"),
    )


def format_combined(r: AccessRecord) -> str:
    """Apache/nginx "combined", then our fields as key=value (`-` when none):

    client - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 5 "ref" "ua"
    duration_ms=1.2 cache=hit route=default origin_status=- origin_ms=- request_id=...
    """
    when = datetime.fromtimestamp(r.time, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    request = _quote(f"{r.method} {r.url} {r.version}")
    extras = (
        f"duration_ms={r.duration_ms} cache={r.cache} route={_dash(r.route)} "
        f"origin_status={_dash(r.origin_status)} origin_ms={_dash(r.origin_ms)} "
        f"request_id={r.request_id}"
    )
    return (
        f"{r.client or '-'} - - [{when}] {request} {r.status} {r.bytes} "
        f"{_quote(r.referer or '-')} {_quote(r.user_agent or '-')} {extras}"
    )


def _dash(v: object) -> str:
    return "-" if v is None else str(v).replace(" ", "_")


def _quote(s: str) -> str:
    # As nginx escapes: `"`, `\`, controls and non-ASCII as \xHH, one line always.
    out = [c if " " <= c <= "~" and c not in '"\\' else _hex(c) for c in s]
    return '"' + "".join(out) + '"'


def _hex(c: str) -> str:
    return "".join(f"\\x{b:02X}" for b in c.encode("utf-8", "surrogateescape"))


def enabled() -> bool:
    return access_log.isEnabledFor(logging.INFO)


def emit(record: AccessRecord, fmt: Format) -> None:
    line = format_combined(record) if fmt == "combined" else format_json(record)
    access_log.info("%s", line)
