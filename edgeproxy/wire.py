"""The wire fast path: fresh hot-tier hits answered in the protocol, before aiohttp.

A hit that the hot tier (store/tiered.py) can answer whole from memory
costs aiohttp's request and response objects, its router and its writer
several times what the cache's own rules cost. So the public listener's
protocol (server._AnyMethodProtocol) first offers each complete request
head to `answer` here, and writes the bytes it returns; anything it returns
None for goes, unread, to aiohttp and the full path (proxy.handle), which
then reads the very same head.

It answers only when the full path would answer exactly the same way from
the same hot entry, by calling the same functions in the same order:
`proxy.locate`/`select` (Host, route) and `route_key` (once per URL and
snapshot: `_RouteMemo`), `decide` (RFC 9111 section 4: Vary, freshness,
request Cache-Control; RFC 9110 section 13: the client's conditionals),
`evaluate_range` (a Range is left to the full path), the per-entry head
template (`serving.stored_template`), and the accounting of `proxy.account`
(outcome counts, metrics, the access line: its fixed runs kept per head,
accesslog.json_parts). What it takes:

- a plain HTTP/1.1 GET or HEAD head (http/request_head.py), on an idle
  keep-alive connection that isn't paused for writing;
- a routed, caching route, and a key whose variants are in the hot tier
  with, for a GET, the body too, or a 200 whose body is a file (above the
  hot tier's max object): then a `FileHit`, which the protocol sends in a
  task (head, then sendfile) while it holds what the client sent after it;
- a fresh `Serve` decision whose outcome is the stored response or a 304
  (a 412, anything stale, a miss or a Range: the full path).

The head it writes is the template aiohttp would be given, serialised as
aiohttp serialises it (tests/e2e/test_fast_path.py compares the two paths
field by field, and the hit tests run on both paths: tests/e2e/conftest.py).
`cache.fast_path: false` turns it off.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from http import HTTPStatus

from multidict import CIMultiDict

from edgeproxy.accesslog import (
    REQUEST_ID,
    emit,
    emit_line,
    json_client,
    json_line,
    json_parts,
    request_id,
)
from edgeproxy.bodies import close_body, send_file
from edgeproxy.cachekey import route_key
from edgeproxy.config import Route
from edgeproxy.http.cache_control import request_cache_control
from edgeproxy.http.cache_status import CacheStatus
from edgeproxy.http.conditionals import Precondition
from edgeproxy.http.ranges import IGNORE, evaluate_range
from edgeproxy.http.request_head import RequestHead
from edgeproxy.metrics import byte_source, outcome
from edgeproxy.policy.decide import Request, Serve, decide
from edgeproxy.policy.entry import Entry
from edgeproxy.proxy import Located, access_logged, access_record, locate, select
from edgeproxy.serving import keep, prebuilt_for, stored_template
from edgeproxy.state import EdgeState, Snapshot
from edgeproxy.store.tiered import TieredStore

_VERSION = (1, 1)
_AGE, _STATUS, _ID = "age", "cache-status", REQUEST_ID.lower()
_SOURCE = byte_source(True, True)  # as the full path counts a stored body


class WireHead:
    """A stored response's head as bytes, with the three per-request values
    (Age, Cache-Status, request id) as gaps: `parts` are the bytes around
    them, `order` which value goes in each gap."""

    __slots__ = ("code", "lines", "order", "parts", "statuses")

    def __init__(self, parts: list[bytes], order: list[int], code: int) -> None:
        self.parts = parts
        self.order = order
        self.code = code  # the status it sends
        # (method, target, cache outcome) -> the access line's fixed runs.
        self.lines: dict[tuple[str, str, str], tuple[str, str]] = {}
        # ttl -> (Cache-Status value, cache outcome): the same for every hit
        # of this entry, snapshot and status within a second of ttl.
        self.statuses: dict[int, tuple[bytes, str]] = {}

    def line_parts(
        self, method: str, target: str, nbytes: int, cache: str, route: str
    ) -> tuple[str, str]:
        """accesslog.json_parts for a hit of this head: kept per method, target
        and outcome (everything else in them is fixed for the head)."""
        slot = (method, target, cache)
        parts = self.lines.get(slot)
        if parts is None:
            parts = json_parts(method, target, self.code, nbytes, cache, route, None, None)
            if len(self.lines) >= 64:
                self.lines.clear()
            self.lines[slot] = parts
        return parts

    def status(self, ttl: int, status: int, cache_name: str) -> tuple[bytes, str]:
        """The Cache-Status a hit sends (RFC 9211: hit, ttl) and its outcome."""
        memo = self.statuses.get(ttl)
        if memo is None:
            cs = CacheStatus(hit=True, ttl=ttl)
            memo = (cs.render(cache_name).encode(), outcome(cs, status, True))
            if len(self.statuses) >= 16:
                self.statuses.clear()
            self.statuses[ttl] = memo
        return memo

    def render(self, values: tuple[bytes, bytes, bytes]) -> bytes:
        parts, order = self.parts, self.order
        out = [parts[0]]
        for i, which in enumerate(order):
            out.append(values[which])
            out.append(parts[i + 1])
        return b"".join(out)


def wire_head(template: CIMultiDict[str], status: int, length: int | None) -> WireHead | None:
    """`template` as aiohttp would send it for `status` (`length`: the body's
    Content-Length, None for a 304), or None if it would not send it as is:
    aiohttp adds Date when there is none (and with its own clock), and
    refuses CR or LF in a field."""
    headers = CIMultiDict(template)
    if length is not None:
        headers["Content-Length"] = str(length)  # StreamResponse.content_length does this
    if "Date" not in headers:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return None
    parts: list[bytes] = []
    order: list[int] = []
    text = f"HTTP/1.1 {status} {phrase}\r\n"
    gaps = {_AGE: 0, _STATUS: 1, _ID: 2}
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            return None
        gap = gaps.get(name.lower())
        if gap is None:
            text += f"{name}: {value}\r\n"
            continue
        text += f"{name}: "
        parts.append(text.encode("utf-8"))
        order.append(gap)
        text = "\r\n"
    parts.append(text.encode("utf-8") + b"\r\n")
    if sorted(order) != [0, 1, 2]:
        return None
    return WireHead(parts, order, status)


def _wire_head(
    store: TieredStore, snap: Snapshot, route: Route, entry: Entry, status: int
) -> WireHead | None:
    """The entry's WireHead for this snapshot, route and status, built once."""
    templates = prebuilt_for(store, entry)
    slot = ("wire", id(snap), id(route), status)
    kept = templates.get(slot)
    if kept is not None and kept[0] is snap and kept[1] is route:
        return kept[2]  # type: ignore[return-value]
    template = stored_template(store, snap, route, _VERSION, entry, status, False)
    length = None if status == 304 else entry.body_size
    built = None
    if template is not None:
        try:
            built = wire_head(template, status, length)
        except UnicodeEncodeError:  # aiohttp would fail on it too: the full path's
            built = None
    keep(templates, slot, (snap, route, built))
    return built


class _RouteMemo:
    """Per snapshot: (Host field, target, method) -> the caching route that
    serves it, the normalised host and the cache key (None when the key
    takes request fields), or
    None when the fast path can't take it. The same functions the full path
    calls, once per URL: hot URLs are what a cache answers over and over.
    Bounded: cleared when full, and when the snapshot changes (a reload)."""

    MAX = 4096

    def __init__(self) -> None:
        self._snap: Snapshot | None = None
        self._found: dict[tuple[str | None, str, str], tuple[Route, str, str | None] | None] = {}

    def find(
        self, snap: Snapshot, host: str | None, target: str, method: str
    ) -> tuple[Route, str, str | None] | None:
        found = self._found
        if self._snap is not snap:
            found.clear()
            self._snap = snap
        slot = (host, target, method)
        try:
            return found[slot]
        except KeyError:
            pass
        result = _find(snap, host, target, method)
        if len(found) >= self.MAX:
            found.clear()
        found[slot] = result
        return result


def _find(
    snap: Snapshot, host: str | None, target: str, method: str
) -> tuple[Route, str, str | None] | None:
    cfg = snap.config
    where = locate(target, host)
    if not isinstance(where, Located) or where.absolute:
        return None
    host, target = where.host, where.target
    route = select(cfg, where, method)
    if route is None or route.origin is None or not route.cache:
        return None
    if route.key.headers or route.key.cookies:
        return route, host, None
    return route, host, route_key(route.key, host, target, _NO_FIELDS)


_ROUTES = _RouteMemo()
_NO_FIELDS: CIMultiDict[str] = CIMultiDict()  # a key that takes none


class FileHit:
    """A fresh hit whose body is a file (above the hot tier's `max_object`):
    the protocol sends it in a task (server._AnyMethodProtocol._file_hit),
    as the full path would: the head, then the body by sendfile."""

    __slots__ = ("entry", "finish", "head", "store")

    def __init__(
        self, store: TieredStore, entry: Entry, head: bytes, finish: Callable[[int], None]
    ) -> None:
        self.store = store
        self.entry = entry
        self.head = head
        self.finish = finish  # the accounting, with the body bytes sent

    async def send(self, transport: asyncio.Transport) -> bool:
        """Open the body, write the head, sendfile the body, close it. False
        when the body is gone (nothing written: the full path answers);
        ConnectionResetError when the client left, ShortBody when the file
        ended early (the caller drops the connection)."""
        body = await self.store.open_body(self.entry)
        if body is None:
            return False
        sent = 0
        try:
            if body.file is None:  # kept in memory meanwhile: sent with the head
                data = body.data or b""
                transport.write(self.head + data)
                sent = len(data)
                return True
            transport.write(self.head)
            sent = await send_file(transport, body.file.fileno(), 0, self.entry.body_size)
        finally:
            self.finish(sent)
            await close_body(body)
        return True


def answer(edge: EdgeState, head: RequestHead, client: str | None) -> bytes | FileHit | None:
    """The whole response to `head` (head and body), a FileHit to send, or
    None: the full path's."""
    started = time.monotonic()
    store = edge.store
    if not isinstance(store, TieredStore):
        return None
    snap = edge.snapshot  # read once: this request keeps these rules
    cfg = snap.config
    if not cfg.cache.fast_path:
        return None
    at = edge.clock()
    headers = CIMultiDict(head.fields)
    method = head.method
    found = _ROUTES.find(snap, headers.get("Host"), head.target, method)
    if found is None:
        return None
    route, host, key = found
    if key is None:  # the route keys on request fields: this request's
        key = route_key(route.key, host, head.target, headers)
    candidates = store.hot_entries(key)
    if not candidates:
        return None
    req = Request(method, headers, request_cache_control(headers))
    d = decide(req, candidates, route.policy, edge.clock())
    if not isinstance(d, Serve) or d.stale or d.outcome is Precondition.FAILED:
        return None
    entry = d.entry
    body = b""
    from_file = False
    if d.outcome is Precondition.NOT_MODIFIED:
        status = 304
    else:
        status = entry.status
        if status in (204, 304) or status < 200:
            return None
        if method == "GET":
            hot = store.hot_body(entry)
            if hot is not None and hot.data is not None:
                body = hot.data
            elif status != 200 or entry.body_size <= store.max_object or not _SENDFILE:
                return None  # not yet read into memory: the full path fills it
            else:
                from_file = True  # a body the hot tier never holds: sendfile
            if (
                status == 200
                and evaluate_range(method, headers, entry.fields, entry.body_size) is not IGNORE
            ):
                return None  # a 206 or 416: the full path's
    wire = _wire_head(store, snap, route, entry, status)
    if wire is None:
        return None
    rid = request_id(headers.get(REQUEST_ID))
    cache_status, cache = wire.status(d.ttl, status, cfg.cache.status_name)
    out = wire.render((str(max(0, d.age)).encode(), cache_status, rid.encode()))
    done = (edge, snap, wire, head, headers, client, rid, route.name, status, cache, at, started)
    if from_file:
        return FileHit(store, entry, out, functools.partial(_account, *done))
    if body:
        out += body
    _account(*done, len(body))
    return out


def _account(
    edge: EdgeState,
    snap: Snapshot,
    wire: WireHead,
    head: RequestHead,
    headers: CIMultiDict[str],
    client: str | None,
    rid: str,
    route: str,
    status: int,
    cache: str,
    at: float,
    started: float,
    nbytes: int,
) -> None:
    """An answer sent here, accounted as the full path accounts a hot hit
    (TieredStore.lookup's hit, Responder.serve_stored's counters,
    proxy.account's outcome, metrics and access line)."""
    store = edge.store
    assert isinstance(store, TieredStore)
    store.hits += 1
    counters = edge.counters
    if status == 304:
        counters["client_304"] += 1
    counters["hits"] += 1
    counters["wire_hits"] += 1  # of those, answered here (in /stats)
    edge.outcomes[cache] += 1
    edge.metrics.served(route, head.method, cache, _SOURCE, nbytes)
    if not access_logged(snap):
        return
    fmt = snap.config.log.access_format
    if fmt == "json":  # the line's fixed runs kept per head
        asked, answered = wire.line_parts(head.method, head.target, nbytes, cache, route)
        duration = round((time.monotonic() - started) * 1000, 3)
        emit_line(json_line(at, json_client(client), asked, duration, answered, rid))
    else:
        asked_by = (client, head.method, head.target, "HTTP/1.1", headers)
        answer_was = (rid, route, status, cache, nbytes)
        emit(access_record((at, started), asked_by, answer_was), fmt)


_SENDFILE = hasattr(os, "sendfile")
