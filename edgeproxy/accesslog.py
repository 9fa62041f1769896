"""Access log: one line per client request, and the request id that ties it
to the origin's logs.

Pure apart from `emit` (logging, or the batched `LineWriter` that `serve`
installs) and `request_id` (a per-process random prefix): the handler
records what it learned on the way (proxy.py) and, only when the
`edgeproxy.access` logger is enabled for INFO, builds an `AccessRecord` and
formats it here. Nothing here reads request headers beyond the id, so no
credential (Authorization, the admin token) can reach a line.

The cache outcome is derived from the Cache-Status value actually sent
(RFC 9211), so the log can never disagree with what the client saw.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Callable
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


# A new id is 32 hex digits: 16 random to this process (so workers and
# restarts don't collide) and a 16-digit counter. Ids must be unique, not
# unguessable, and a uuid4 per request cost ~4 us of a ~50 us hit.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def request_id(sent: str | None) -> str:
    """The client's X-Request-Id when well-formed, else a new process-unique id."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _reseed_ids() -> None:
    """A forked child must not reuse its parent's prefix."""
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(8).hex()
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_ids)


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


@dataclass(slots=True)  # not frozen: a frozen init was 4.7 us of a ~60 us hit, this 1.2
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


_second: tuple[int, str] = (-1, "")


def rfc3339(t: float) -> str:
    """UTC, milliseconds, `Z` (RFC 3339 section 5.6).

    The part up to the second is formatted once per second: one line per
    request made datetime the second-largest cost of a logged hit.
    """
    global _second
    # Rounded to the microsecond first, as datetime.fromtimestamp does.
    frac, integral = math.modf(t)
    whole, micros = int(integral), round(frac * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{micros // 1000:03d}Z"


# json's own C string encoder: escapes `"`, `\`, every control character and
# all non-ASCII, exactly as json.dumps does, so a hostile URL cannot forge a
# second line; the object around it is built here, ~4x faster than dumps.
_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _opt_str(v: str | None) -> str:
    return "null" if v is None else _str(v)


def _opt_num(v: float | None) -> str:
    return "null" if v is None else repr(v)  # int or finite float: as json.dumps


def format_json(r: AccessRecord) -> str:
    """One JSON object on one line, the same text json.dumps with compact
    separators gives (tests/e2e/test_access_log.py compares them)."""
    asked, answered = json_parts(
        r.method, r.url, r.status, r.bytes, r.cache, r.route, r.origin_status, r.origin_ms
    )
    return json_line(r.time, _opt_str(r.client), asked, r.duration_ms, answered, r.request_id)


def json_parts(
    method: str,
    url: str,
    status: int,
    nbytes: int,
    cache: str,
    route: str | None,
    origin_status: int | None,
    origin_ms: float | None,
) -> tuple[str, str]:
    """The two runs of a JSON line's members around duration_ms: the same
    for every hit of one URL and kind, so the wire fast path keeps them."""
    asked = (
        f'"method":{_str(method)},"url":{_str(url)},"status":{int(status)},"bytes":{int(nbytes)}'
    )
    answered = (
        f'"cache":{_str(cache)},"route":{_opt_str(route)},'
        f'"origin_status":{_opt_num(origin_status)},"origin_ms":{_opt_num(origin_ms)}'
    )
    return asked, answered


def json_line(
    t: float, client: str, asked: str, duration_ms: float, answered: str, request_id: str
) -> str:
    """A JSON access line from `json_parts` and the per-request members
    (`client` already JSON: a string or null)."""
    return (
        f'{{"time":"{rfc3339(t)}","client":{client},{asked},'
        f'"duration_ms":{float(duration_ms)!r},{answered},"request_id":{_str(request_id)}}}'
    )


def json_client(client: str | None) -> str:
    return _opt_str(client)


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


class LineWriter:
    """Access lines to a file descriptor, batched per event-loop turn.

    `logging` costs ~20 us a line (a record, locks, a formatter, a flush and
    a write per line); this appends to a list and writes what one loop turn
    produced with one os.write when the turn ends, so lines still appear at
    once when the proxy is idle. Outside a running loop it writes at once.
    """

    MAX_PENDING = 512  # lines: bounds memory if a turn logs very many

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: list[str] = []
        self._scheduled = False

    def write(self, line: str) -> None:
        self._pending.append(line)
        if len(self._pending) >= self.MAX_PENDING:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode("utf-8", "surrogateescape")
        self._pending.clear()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                continue  # a non-blocking stdout: retry (bounded by the reader)
            except OSError:
                return  # stdout gone (closed pipe): lines are lost, serving is not


_writer: LineWriter | None = None


def write_to(fd: int | None) -> LineWriter | None:
    """Send access lines to `fd` (batched) instead of the `edgeproxy.access`
    logger's handlers; None goes back to the logger. The logger must still be
    enabled for INFO: that is what turns the line on (`enabled`)."""
    global _writer
    if _writer is not None:
        _writer.flush()
    _writer = None if fd is None else LineWriter(fd)
    if _writer is not None:
        atexit.register(_writer.flush)  # the last turn's lines, at exit
    return _writer


def flush() -> None:
    if _writer is not None:
        _writer.flush()


def emit(record: AccessRecord, fmt: Format) -> None:
    emit_line(format_combined(record) if fmt == "combined" else format_json(record))


def emit_line(line: str) -> None:
    if _writer is not None:
        _writer.write(line)
    else:
        access_log.info("%s", line)
