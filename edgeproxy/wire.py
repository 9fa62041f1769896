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
  (a 412, a Range: the full path); a `Revalidate` one may be taken by
  wire_revalidation.py (a `Revalidation`, run in a task like a FileHit),
  and a key the hot tier doesn't hold by wire_miss.py (a `Miss`: the
  store's lookup first, in the task).

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
from typing import Final

from multidict import CIMultiDict

from edgeproxy.accesslog import (
    REQUEST_ID,
    emit,
    emit_line,
    json_client,
    json_line,
    request_id,
)
from edgeproxy.bodies import close_body, send_file
from edgeproxy.cachekey import route_key
from edgeproxy.config import Route
from edgeproxy.http.cache_control import request_cache_control
from edgeproxy.http.conditionals import Precondition
from edgeproxy.http.ranges import IGNORE, evaluate_range
from edgeproxy.http.request_head import RequestHead
from edgeproxy.metrics import byte_source
from edgeproxy.policy.decide import Request, Revalidate, Serve, decide
from edgeproxy.policy.entry import Entry
from edgeproxy.proxy import Located, access_logged, access_record, locate, select
from edgeproxy.state import EdgeState, Snapshot
from edgeproxy.store.tiered import TieredStore
from edgeproxy.wire_head import WireHead, wire_head_for
from edgeproxy.wire_miss import Miss, miss
from edgeproxy.wire_revalidation import Asked, Revalidation, revalidation

_VERSION = (1, 1)
_AGE, _STATUS, _ID = "age", "cache-status", REQUEST_ID.lower()
_SOURCE = byte_source(True, True)  # as the full path counts a stored body


class _RouteMemo:
    """Per snapshot: (Host field, target, method) -> the caching route that
    serves it, the normalised host and the cache key (None when the key
    takes request fields), or
    None when the fast path can't take it. The same functions the full path
    calls, once per URL: hot URLs are what a cache answers over and over.
    Bounded: cleared when full, and when the snapshot changes (a reload)."""

    MAX: Final = 4096  # Final: a class constant, compiled or not

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
        # No `finally` with an await in it: compiled, one re-raises an error
        # an earlier coroutine handled (edgeproxy/compiled.py: no await in a finally).
        try:
            if body.file is None:  # kept in memory meanwhile: sent with the head
                data = body.data or b""
                transport.write(self.head + data)
                sent = len(data)
            else:
                transport.write(self.head)
                sent = await send_file(transport, body.file.fileno(), 0, self.entry.body_size)
        except BaseException:
            self.finish(sent)
            await close_body(body)
            raise
        self.finish(sent)
        await close_body(body)
        return True


def answer(
    edge: EdgeState, head: RequestHead, client: str | None
) -> bytes | FileHit | Revalidation | Miss | None:
    """The whole response to `head` (head and body), a FileHit to send, a
    Revalidation or Miss to run (wire_revalidation.py, wire_miss.py), or
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
    req = Request(method, headers, request_cache_control(headers))
    if not candidates:  # not hot: the store's lookup, then maybe a miss (wire_miss.py)
        asked = Asked(
            head, headers, req, client, request_id(headers.get(REQUEST_ID)), (at, started)
        )
        return miss(edge, (snap, route, host, key), asked)
    d = decide(req, candidates, route.policy, edge.clock())
    if isinstance(d, Revalidate):
        asked = Asked(
            head, headers, req, client, request_id(headers.get(REQUEST_ID)), (at, started)
        )
        return revalidation(edge, (snap, route, host, key), asked, candidates, d)
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
    wire = wire_head_for(store, snap, route, entry, status)
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
