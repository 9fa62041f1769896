"""The public listener's handler: straight-line glue over one policy decision.

route -> key -> lookup -> decide -> (origin) -> store -> respond. Every RFC
rule lives in policy/ and http/; this module only moves bytes and matches on
the decision type.

Protecting the origin, on that path:
- stale rules (policy/stale.py): after a decision that is not a fresh hit,
  entries past their keep time are dropped (deleted in the background) and
  the decision may become ServeWhileRevalidating: served at once, revalidated
  by a task the proxy owns, one per key. An origin failure or 5xx answer
  turns into the stored response where stale-if-error allows.
- collapsing (collapse.py): a GET that must go upstream for a stale entry or
  a miss leads a flight for its key, or waits on the one in progress.
- pools (pool.py): each upstream request picks a server of the origin; a GET
  or HEAD that could not connect is retried once on another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import IO, assert_never, cast
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy import compress, origin
from edgeproxy.accesslog import (
    REQUEST_ID,
    AccessRecord,
    access_log,
    cache_outcome,
    emit,
    request_id,
)
from edgeproxy.cachekey import normalise_host, route_key
from edgeproxy.collapse import Flight, FlightBroken, Refreshed, Released, Streaming
from edgeproxy.config import Route
from edgeproxy.errors import EdgeError
from edgeproxy.forwarding import request_headers, response_headers, storable_fields, via_value
from edgeproxy.http.accept_encoding import request_coding
from edgeproxy.http.cache_control import request_cache_control, response_cache_control
from edgeproxy.http.cache_status import CacheStatus, Fwd, proxy_status
from edgeproxy.http.conditionals import Precondition, evaluate
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.fields import Headers, combined
from edgeproxy.http.range_slicer import RangeSlicer
from edgeproxy.http.ranges import (
    ACCEPT_RANGES,
    IGNORE,
    ByteRange,
    NotPartial,
    Part,
    RangesSpecifier,
    content_range,
    evaluate_range,
    multipart_content_type,
    multipart_length,
    multipart_parts,
    multipart_trailer,
    parse_range,
    unsatisfied_content_range,
)
from edgeproxy.http.surrogate import surrogate_keys
from edgeproxy.http.vary import matches, secondary_key, vary_names
from edgeproxy.metrics import byte_source, outcome
from edgeproxy.policy.decide import (
    Decision,
    Fetch,
    OnlyIfCachedMiss,
    Pass,
    Request,
    Revalidate,
    Serve,
    decide,
)
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import current_age, ttl
from edgeproxy.policy.invalidation import invalidation_targets
from edgeproxy.policy.response import not_modified_fields, reuse_fields
from edgeproxy.policy.stale import (
    SIE_DETAIL,
    ServeWhileRevalidating,
    discardable,
    is_error_status,
    stale_if_error_status,
    stale_on_error,
    stale_while_revalidate_status,
    with_stale_while_revalidate,
)
from edgeproxy.policy.storable import storable
from edgeproxy.policy.transform import (
    AS_IS,
    TransformPlan,
    compression_plan,
    transformed_etag,
    transformed_fields,
    upstream_if_none_match,
)
from edgeproxy.policy.validation import CLIENT_CONDITIONALS, merge_304, validates
from edgeproxy.pool import Pool, is_server_failure, should_retry
from edgeproxy.purge_method import handle_purge
from edgeproxy.routing import apply_edits, bare_host, select_route
from edgeproxy.state import EDGE, EdgeState, Snapshot
from edgeproxy.store.base import Body, BodyWriter, Degraded, StoreError, health_of

log = logging.getLogger("edgeproxy.proxy")

CHUNK = 65536

# Why a response was not stored, when the response itself is the reason: its
# key then skips collapsing for a while (hit-for-pass). Not for reasons of
# the leading request (no-store, Authorization) nor origin errors (5xx), whose
# next answer may well be shareable.
_PASS_REASONS = frozenset(
    {"no-store", "private", "set-cookie", "vary-star", "no-freshness", "must-understand", "too-big"}
)
# Forwards that may collapse: misses and stale entries. Not fwd=request (nor
# any request with no-cache): a client that demanded an answer gets its own.
_COLLAPSIBLE_FWD = frozenset({Fwd.URI_MISS, Fwd.VARY_MISS, Fwd.STALE})
# Not sent upstream on a Range miss: the whole object is fetched instead.
_RANGE_FIELDS = ("range", "if-range")


class UpstreamBroke(Exception):
    """The origin failed mid-body: the client connection must be aborted."""


class ShortBody(Exception):
    """A stored body file ended before a range's last byte (damaged or truncated)."""


async def handle(request: web.Request) -> web.StreamResponse:
    """Answer one client request; however it ends (refusal, error, an
    exception), it is one access-log line, and it carries its request id."""
    started = time.monotonic()
    edge = request.app[EDGE]
    snap = edge.snapshot  # read once: in-flight requests keep their rules
    at = edge.clock()
    rid = request_id(request.headers.get(REQUEST_ID))
    ctx: _Exchange | None = None
    route_name: str | None = None
    resp: web.StreamResponse | None = None
    try:
        routed = await _route(request, edge, snap, rid)
        if isinstance(routed, _Exchange):
            ctx = routed
            route_name = ctx.route.name
            try:
                resp = await ctx.run()
            except EdgeError as e:
                log.warning("%s %s: %s", request.method, ctx.key, e)
                resp = ctx.error_response(e)
        else:
            resp, route_name = routed
            if not resp.prepared:
                resp.headers[REQUEST_ID] = rid
        return resp
    finally:
        # Metrics on every request; what the client got, as the access log says.
        sent = resp if resp is not None or ctx is None else ctx.sent
        from_store = ctx is not None and ctx.from_store
        edge.metrics.served(
            route_name,
            request.method,
            outcome(
                ctx.cache_status if ctx is not None else None,
                sent.status if sent is not None else None,
                from_store,
            ),
            byte_source(from_store, isinstance(sent, RelayedResponse)),
            _body_bytes(request, sent),
        )
        # The line is built only when someone reads it.
        if snap.config.log.access_log and access_log.isEnabledFor(logging.INFO):
            record = _access_record(request, at, started, rid, route_name, ctx, resp)
            emit(record, snap.config.log.access_format)


async def _route(
    request: web.Request, edge: EdgeState, snap: Snapshot, rid: str
) -> _Exchange | tuple[web.StreamResponse, str | None]:
    """The exchange for a routed request, or the answer (and route name, if
    any) for one the edge answers itself."""
    target = request.raw_path
    host = request.headers.get("Host")
    absolute = not target.startswith("/")
    if absolute:
        absolute_form = _absolute_form(target, host)
        if isinstance(absolute_form, str):
            return _refuse(f"Bad Request: {absolute_form}\n"), None
        host, target = absolute_form
    if not host:
        return _refuse("Bad Request: missing Host header (RFC 9112 section 3.2)\n"), None
    # One normalised view for routing, the key and X-Forwarded-Host, so a
    # request can't be keyed as one URL and described upstream as another.
    # An invalid Host is a 400 (RFC 9112 section 3.2): a bare uri-host
    # (reg-name, IPv4, IP-literal) and an optional port, nothing else.
    if not re.fullmatch(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]*)?", host):
        return _refuse("Bad Request: invalid Host (RFC 9112 section 3.2)\n"), None
    host = normalise_host(host, "http")
    cfg = snap.config
    if request.method == "PURGE" and cfg.admin.purge_method:
        return await handle_purge(request, edge, host, target), None
    path = target.partition("?")[0]
    route = select_route(cfg.routes, cfg.default_route, host, path, request.method)
    if route is None and absolute:
        # Not ours: an edge is no forward proxy for other hosts.
        return _refuse(f"Bad Request: {bare_host(host)} is not served here\n"), None
    if route is None:
        return _text(404, f"Not Found: no route matches {bare_host(host)}{path}\n"), None
    if route.origin is None:
        return _text(404, f"Not Found: route {route.name!r} has no origin\n"), route.name
    return _Exchange(request, edge, snap, route, host, target, rid)


def _access_record(
    request: web.Request,
    at: float,
    started: float,
    rid: str,
    route: str | None,
    ctx: _Exchange | None,
    resp: web.StreamResponse | None,
) -> AccessRecord:
    if resp is None and ctx is not None:
        resp = ctx.sent  # an exception after the head: what the client got
    status = resp.status if resp is not None else 500  # else aiohttp answers 500
    cs = ctx.cache_status if ctx is not None else None
    if resp is None:
        cache = "error"
    else:
        cache = cache_outcome(cs, status, ctx is not None and ctx.from_store)
    headers = request.headers
    return AccessRecord(
        time=at,
        client=request.remote,
        method=request.method,
        url=request.raw_path,
        status=status,
        bytes=_body_bytes(request, resp),
        duration_ms=round((time.monotonic() - started) * 1000, 3),
        cache=cache,
        route=route,
        origin_status=ctx.origin_status if ctx is not None else None,
        origin_ms=ctx.origin_ms if ctx is not None else None,
        request_id=rid,
        version=f"HTTP/{request.version.major}.{request.version.minor}",
        referer=headers.get("Referer"),
        user_agent=headers.get("User-Agent"),
    )


def _body_bytes(request: web.Request, resp: web.StreamResponse | None) -> int:
    """Body bytes sent: counted as streamed, or the body aiohttp is about to send."""
    if isinstance(resp, RelayedResponse):
        return resp.body_bytes
    if not isinstance(resp, web.Response) or request.method == "HEAD":
        return 0
    if resp.status in (204, 304) or not isinstance(resp.body, bytes | bytearray):
        return 0
    return len(resp.body)


def _store_log_level(e: StoreError) -> int:
    # A degraded store logged its state change once: not again per request.
    return logging.DEBUG if isinstance(e, Degraded) else logging.WARNING


def _refuse(reason: str) -> web.StreamResponse:
    """A 400 for a request the edge won't serve, on a connection it closes."""
    resp = _text(400, reason)
    resp.force_close()
    return resp


def _absolute_form(target: str, host: str | None) -> tuple[str, str] | str:
    """Host and origin-form target of an absolute-form request (RFC 9112
    section 3.2.2), or why the target is refused.

    Only origin-form and absolute-form http(s) targets are served: the
    target is appended to the origin's URL, so anything else (asterisk- or
    authority-form, a bare "@evil.example/") could name another host.
    The authority replaces any Host field, and is then held to the same
    rules as one (validity, routing): it gains a client nothing a Host
    field wouldn't. A foreign host, one no route serves, is a 400 in
    `handle`. Userinfo is refused (RFC 9110 section 4.2.4).
    """
    try:
        parts = urlsplit(target)
    except ValueError:
        return "invalid request target (RFC 9112 section 3.2)"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return "only origin-form and http absolute-form targets are served (RFC 9112 section 3.2)"
    path = parts.path or "/"
    return parts.netloc, f"{path}?{parts.query}" if parts.query else path


class _Exchange:
    """One client request's trip through the cache."""

    def __init__(
        self,
        request: web.Request,
        edge: EdgeState,
        snap: Snapshot,
        route: Route,
        host: str,
        target: str,
        rid: str,
    ) -> None:
        self.request = request
        self.request_id = rid  # forwarded upstream, echoed to the client
        self.edge = edge
        self.snap = snap
        self.cfg = snap.config
        self.route = route
        self.policy = route.policy
        assert route.origin is not None
        self.origin = snap.config.origins[route.origin]
        self.host = host
        self.target = target  # origin-form: path and query as received, never re-encoded
        self.key = route_key(route.key, host, target, request.headers)
        self.req = Request(request.method, request.headers, request_cache_control(request.headers))
        self.fwd = Fwd.MISS  # why we went upstream, for error responses
        # What went upstream and what was stored, for stale-if-error.
        self.decision: Decision | None = None
        self.candidates: Sequence[Entry] = ()
        self.client = True  # False: the proxy's own background request
        self._slot: tuple[Pool, str] | None = None  # the pool server an upstream response holds
        self._client_gone = False
        self._rerun = False
        # For the access log, set as they become known (a few attribute sets).
        self.cache_status: CacheStatus | None = None  # the one sent
        self.from_store = False  # the response was made from a stored one
        self.sent: web.StreamResponse | None = None  # its head is out
        self.origin_status: int | None = None
        self.origin_ms: float | None = None  # until the origin's head, or its failure

    async def run(self) -> web.StreamResponse:
        method = self.request.method
        if not self.route.cache:
            return await self.forward(Fwd.BYPASS, cacheable=False)
        candidates = await self.edge.store.lookup(self.key) if method in ("GET", "HEAD") else []
        now = self.edge.clock()
        first = decide(self.req, candidates, self.policy, now)
        decision: Decision | ServeWhileRevalidating = first
        if candidates and not (isinstance(first, Serve) and not first.stale):
            decision = self._stale_rules(candidates, first, now)
        match decision:
            case ServeWhileRevalidating(serve=serve, background=background):
                self._revalidate_in_background(background)
                served = await self.serve_stored(serve, stale_while_revalidate_status(serve))
                if served is not None:
                    return served
                return await self.fetch(Fetch(Fwd.URI_MISS))
            case Serve():
                served = await self.serve_stored(decision)
                if served is not None:
                    return served
                return await self.fetch(Fetch(Fwd.URI_MISS))
            case Fetch():
                return await self.fetch(decision)
            case Revalidate():
                return await self.revalidate(decision)
            case Pass(fwd=fwd):
                return await self.forward(fwd, cacheable=False)
            case OnlyIfCachedMiss():
                self.edge.counters["misses"] += 1
                return self.respond_text(
                    504,
                    "Gateway Timeout: only-if-cached and nothing usable is stored\n",
                    # Nothing went forward, so no fwd (RFC 9211 section 2.2).
                    CacheStatus(detail="only-if-cached"),
                )
            case _:
                assert_never(decision)

    def _stale_rules(
        self, candidates: list[Entry], decision: Decision, now: float
    ) -> Decision | ServeWhileRevalidating:
        """policy/stale.py, for anything but a fresh hit: drop entries past their
        keep time (a miss; deleted in the background), then stale-while-revalidate."""
        if isinstance(decision, Revalidate | Fetch):
            kept = [e for e in candidates if not discardable(e, self.policy, now)]
            if len(kept) < len(candidates):
                for entry in candidates:
                    if not any(e is entry for e in kept):
                        self.edge.counters["discarded"] += 1
                        self.edge.spawn(self._discard(entry), f"discard {self.key}")
                candidates = kept
                redone = decide(self.req, kept, self.policy, now)
                # Still why it goes forward: what it found was stale (RFC 9211 2.2).
                decision = Fetch(decision.fwd) if isinstance(redone, Fetch) else redone
        self.candidates = candidates
        return with_stale_while_revalidate(self.req, candidates, decision, self.policy, now)

    async def _discard(self, entry: Entry) -> None:
        try:
            await self.edge.store.delete_variant(entry)
        except StoreError as e:
            log.log(_store_log_level(e), "could not discard %s: %s", self.key, e)

    # -- answering from the store -----------------------------------------

    async def serve_stored(
        self,
        d: Serve,
        status: CacheStatus | None = None,
        validated: bool = False,
        flight: Flight | None = None,
        length: int | None = None,
    ) -> web.StreamResponse | None:
        """Answer from a stored response; None when its body is gone (a miss).

        With `flight`, the body streams from a collapsed origin response still
        arriving (`length`: its Content-Length, if known) instead of the store.
        """
        entry = d.entry
        cs = status or CacheStatus(hit=True, ttl=d.ttl)
        if d.outcome is Precondition.NOT_MODIFIED:
            self.edge.counters["client_304"] += 1
            self._count_hit(cs)
            return await self._send_stored_head(entry, 304, d.age, cs)
        if d.outcome is Precondition.FAILED:
            return self.respond_text(412, "Precondition Failed\n", cs)
        if flight is not None:
            return await self._serve_flight(d, cs, validated, flight, length)
        body: Body | None = None
        if self.request.method != "HEAD":
            body = await self.edge.store.open_body(entry)
            if body is None:
                return None
            if entry.status == 200 and self.client:
                # Preconditions passed (above): now Range and If-Range
                # (RFC 9110 section 13.2.2 step 5, section 14.2).
                spans = evaluate_range(
                    self.request.method, self.request.headers, entry.fields, body.size
                )
                if spans is not IGNORE:
                    return await self._serve_ranges(d, cs, validated, body, spans)
        self._count_hit(cs)
        try:
            # A body from memory goes out with the head in one send; a file's by sendfile.
            in_memory = body is None or body.data is not None
            resp = await self._send_stored_head(
                entry, entry.status, d.age, cs, validated, coalesce=in_memory
            )
            if body is not None and body.size:
                try:
                    await _send_span(self.request, resp, body, 0, body.size - 1)
                except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                    return resp
                except ShortBody:
                    self._short_body(resp)
                    return resp
        finally:
            if body is not None:
                await _close_body(body)
        await resp.write_eof()
        return resp

    async def _serve_flight(
        self, d: Serve, cs: CacheStatus, validated: bool, flight: Flight, length: int | None
    ) -> web.StreamResponse:
        """A collapsed waiter's answer: the leader's head, its body as it arrives."""
        entry = d.entry
        self._count_hit(cs)
        headers = _stored_fields(entry, entry.status, d.age, validated)
        resp = await self._send_head(entry.status, headers, cs, length=length, via=True)
        if self.request.method != "HEAD":
            try:
                async for chunk in flight.body(CHUNK):
                    await resp.write(chunk)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                return resp
            except FlightBroken as e:
                # As for the leader's own client: a silent short body would look complete.
                log.warning("collapsed %s: %s", self.key, e)
                if self.request.transport is not None:
                    self.request.transport.abort()
                return resp
        await resp.write_eof()
        return resp

    def _short_body(self, resp: web.StreamResponse) -> None:
        """Content-Length is out and the stored body ended early: a short
        response would look complete, so the connection is dropped."""
        log.warning("%s: stored body shorter than recorded", self.key)
        if self.request.transport is not None:
            self.request.transport.abort()

    async def _serve_ranges(
        self,
        d: Serve,
        cs: CacheStatus,
        validated: bool,
        body: Body,
        spans: list[ByteRange] | NotPartial,
    ) -> web.StreamResponse:
        """A 206 (RFC 9110 section 15.3.7) or 416 (15.5.17) from a stored
        complete 200 whose `body` is open; it is closed here either way."""
        entry = d.entry
        length = body.size
        self._count_hit(cs)
        if isinstance(spans, NotPartial):  # UNSATISFIABLE: IGNORE stayed a 200 in the caller
            await _close_body(body)
            refused = self.respond_text(416, "Range Not Satisfiable\n", cs)
            refused.headers["Content-Range"] = unsatisfied_content_range(length)
            refused.headers["Accept-Ranges"] = ACCEPT_RANGES
            return refused
        # A 206 keeps the stored fields (Date, Cache-Control, ETag, Expires,
        # Content-Location, Vary); its Content-Length is the message's (15.3.7).
        headers = reuse_fields(entry, d.age, validated)
        headers["Accept-Ranges"] = ACCEPT_RANGES
        headers.popall("Content-Range", None)
        plan: list[Part]
        trailer = b""
        if len(spans) == 1:
            ((start, end),) = spans
            headers["Content-Range"] = content_range(start, end, length)
            size = end - start + 1
            plan = [Part(b"", start, end)]
        else:
            # Several parts: multipart/byteranges (14.6, 15.3.7.2), a fresh
            # boundary per response so the content can't contain it.
            boundary = secrets.token_hex(16)
            ctype = entry.fields.get("Content-Type")
            headers["Content-Type"] = multipart_content_type(boundary)
            size = multipart_length(spans, length, ctype, boundary)
            plan = multipart_parts(spans, length, ctype, boundary)
            trailer = multipart_trailer(boundary)
        try:
            resp = await self._send_head(206, headers, cs, length=size, via=True)
            try:
                for header, start, end in plan:
                    if header:
                        await resp.write(header)
                    await _send_span(self.request, resp, body, start, end)
                if trailer:
                    await resp.write(trailer)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                return resp
            except ShortBody:
                self._short_body(resp)
                return resp
        finally:
            await _close_body(body)
        await resp.write_eof()
        return resp

    def _count_hit(self, cs: CacheStatus) -> None:
        if cs.collapsed:
            name = "collapsed"
        elif cs.hit:
            name = "hits"
        elif cs.detail == SIE_DETAIL:
            name = "stale_if_error"
        else:
            name = "revalidated_hits"
        self.edge.counters[name] += 1

    # -- collapsing -----------------------------------------------------------

    async def fetch(self, d: Fetch) -> web.StreamResponse:
        """A cacheable forward for a miss or a stale entry without validators."""
        self.decision = d
        if not self._collapsible(d):
            return await self.forward(d.fwd, cacheable=True)
        return await self._collapse(d, lambda flight: self.forward(d.fwd, True, flight))

    async def revalidate(self, d: Revalidate) -> web.StreamResponse:
        """Validate the stored response upstream (RFC 9111 section 4.3)."""
        self.decision = d
        if not self._collapsible(d):
            return await self._revalidate(d, None)
        return await self._collapse(d, lambda flight: self._revalidate(d, flight))

    def _collapsible(self, d: Fetch | Revalidate) -> bool:
        if not self.client or self.req.method != "GET" or not self.cfg.cache.collapse_max_waiters:
            return False
        if self.req.cc.has("no-cache"):
            return False  # the client asked for an answer of its own (5.2.1.4)
        if isinstance(d, Revalidate):
            # The cache's own conditional request: the client's are dropped.
            return d.fwd is Fwd.STALE
        # A miss goes with the client's own fields: only a plain GET may
        # lead or share it (a conditional answer is the client's). A byte
        # Range is not: the whole object is fetched for it (forward).
        headers = self.request.headers
        skip = _RANGE_FIELDS if self._range_fill() else ()
        return d.fwd in _COLLAPSIBLE_FWD and not any(
            h in headers for h in CLIENT_CONDITIONALS if h not in skip
        )

    async def _collapse(
        self,
        d: Fetch | Revalidate,
        go: Callable[[Flight | None], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Lead a flight for the key, or wait on the one in progress."""
        flights = self.edge.flights
        cache = self.cfg.cache
        flight = flights.get(self.key)
        if flight is None:
            if flights.passing(self.key, self.edge.clock()):
                return await go(None)
            flight = flights.lead(
                self.key, cache.collapse_buffer, cache.directory, self.edge.clock()
            )
            try:
                return await go(flight)
            finally:
                await flights.close(flight)
        if not flights.joinable_after_purge(flight):
            # It began before a purge: its answer may be what was purged.
            return await go(None)
        if flight.joinable and flight.waiters < cache.collapse_max_waiters:
            return await self.join(flight, d)
        if not flight.joinable and not self._rerun:
            # A big body nobody waited for: no copy was kept. Once it is
            # stored, the store has it.
            self._rerun = True
            self.edge.counters["collapse_waited_for_store"] += 1
            if await flight.wait_landed(cache.collapse_wait):
                return await self.run()
        return await go(None)

    async def join(self, flight: Flight, d: Fetch | Revalidate) -> web.StreamResponse:
        """Wait for the leader's outcome and answer from it, or go on our own."""
        flight.waiters += 1
        try:
            outcome = await flight.wait(self.cfg.cache.collapse_wait)
            match outcome:
                case Streaming(entry=entry, length=length) if self._selects(entry):
                    served = await self._serve_collapsed(d.fwd, entry, flight, length)
                    if served is not None:  # always, from a flight
                        return served
                case Refreshed(entry=entry) if self._selects(entry):
                    served = await self._serve_collapsed(d.fwd, entry, None, None)
                    if served is not None:
                        return served
                case Released(error=error, status=status) if error is not None or (
                    status is not None and is_error_status(status)
                ):
                    self.fwd = d.fwd
                    served = await self._stale_if_error(status)
                    if served is not None:
                        return served
                    if error is not None:
                        raise error  # the origin just failed: don't send it one more
                case None:
                    log.info("collapsed %s: no answer in time, going on our own", self.key)
        finally:
            await flight.leave()
        if isinstance(d, Revalidate):
            return await self._revalidate(d, None)
        return await self.forward(d.fwd, cacheable=True)

    def _selects(self, entry: Entry) -> bool:
        """Does the leader's response fit this request's Vary values (4.1)?"""
        return not entry.vary or matches(self.request.headers, entry.vary, entry.secondary)

    async def _serve_collapsed(
        self, fwd: Fwd, entry: Entry, flight: Flight | None, length: int | None
    ) -> web.StreamResponse | None:
        """Answer from the leader's response: streaming (`flight`) or freshened in the store."""
        now = self.edge.clock()
        fwd_status = entry.status if flight is not None else 304
        cs = CacheStatus(
            fwd=fwd, fwd_status=fwd_status, collapsed=True, ttl=ttl(entry, self.policy, now)
        )
        outcome = (
            evaluate(self.req.method, self.request.headers, entry.fields, entry.date)
            if 200 <= entry.status < 300
            else Precondition.PASS
        )
        serve = Serve(entry, int(current_age(entry, now)), cs.ttl or 0, outcome)
        return await self.serve_stored(serve, cs, validated=True, flight=flight, length=length)

    def _revalidate_in_background(self, d: Revalidate | Fetch) -> None:
        """RFC 5861 section 3: once per key, in a task the proxy owns."""
        flights = self.edge.flights
        if flights.get(self.key) is not None:
            return  # already on its way
        cache = self.cfg.cache
        flight = flights.lead(self.key, cache.collapse_buffer, cache.directory)
        bg = copy.copy(self)
        bg.client = False
        bg.req = Request("GET", self.req.headers, self.req.cc)
        bg.decision = d
        self.edge.counters["background_revalidations"] += 1
        self.edge.spawn(bg._background(d, flight), f"revalidate {self.key}")

    async def _background(self, d: Revalidate | Fetch, flight: Flight) -> None:
        try:
            if isinstance(d, Revalidate):
                await self._revalidate(d, flight)
            else:
                await self.forward(d.fwd, True, flight)
        except EdgeError as e:
            log.warning("background revalidation of %s failed: %s", self.key, e)
        finally:
            await self.edge.flights.close(flight)

    # -- going upstream -----------------------------------------------------

    async def _revalidate(self, d: Revalidate, flight: Flight | None) -> web.StreamResponse:
        self.edge.counters["revalidations"] += 1
        self.fwd = d.fwd
        clock = self.edge.clock
        request_time = clock()
        headers = self._upstream_headers(drop=CLIENT_CONDITIONALS, add=d.conditional_headers)
        try:
            upstream = await self._send_upstream("GET", headers, with_body=False)
        except EdgeError as e:
            return await self._upstream_failed(e, flight)
        response_time = clock()
        if upstream.status == 304:
            self._release(upstream)
            if validates(d.entry, upstream.headers):
                self.edge.counters["revalidated_304"] += 1
                merged = merge_304(d.entry, upstream.headers, request_time, response_time)
                kept = await self._keep_merged(merged)
                if flight is not None:
                    flight.resolve(Refreshed(merged) if kept else Released(status=304))
                    self.edge.flights.land(flight)
                if not self.client:
                    return _NoClient()
                now = clock()
                age = int(current_age(merged, now))
                outcome = evaluate(
                    self.req.method, self.request.headers, merged.fields, merged.date
                )
                cs = CacheStatus(fwd=d.fwd, fwd_status=304, ttl=ttl(merged, self.policy, now))
                served = await self.serve_stored(
                    Serve(merged, age, cs.ttl or 0, outcome), cs, validated=True
                )
                if served is not None:
                    return served
            # The 304 doesn't describe what we hold (4.3.4): fetch it whole.
            return await self.forward(d.fwd, True, flight)
        return await self.relay(upstream, d.fwd, request_time, response_time, True, flight)

    async def _keep_merged(self, merged: Entry) -> bool:
        """Store the freshened response, unless the 304 made it unstorable
        (e.g. it added no-store or private): then the old one goes too.
        True when it is stored."""
        verdict = storable(
            "GET",
            self.request.headers,
            self.req.cc,
            merged.status,
            merged.fields,
            merged.cache_control,
            self.policy,
        )
        try:
            if verdict.ok:
                return await self.edge.store.update(merged)
            await self.edge.store.delete_variant(merged)
        except StoreError as e:
            log.log(_store_log_level(e), "could not refresh %s after 304: %s", self.key, e)
        return False

    async def forward(
        self, fwd: Fwd, cacheable: bool, flight: Flight | None = None
    ) -> web.StreamResponse:
        self.fwd = fwd
        if fwd in (Fwd.URI_MISS, Fwd.VARY_MISS):
            self.edge.counters["misses"] += 1
        request_time = self.edge.clock()
        # A byte Range on a miss: the whole object is fetched (to be stored)
        # and the client's ranges are cut from it as it arrives (relay).
        range_fill = cacheable and self._range_fill()
        if self.client:
            method = self.request.method
            headers = self._upstream_headers(
                drop=_RANGE_FIELDS if range_fill else (), raw_encoding=not cacheable
            )
        else:
            # Our own refetch: unconditional, whole, and without a body.
            method, headers = "GET", self._upstream_headers(drop=CLIENT_CONDITIONALS)
        try:
            upstream = await self._send_upstream(method, headers, with_body=self.client)
            length = upstream.content_length
            too_big = (length or 0) > self.policy.max_object_size
            if range_fill and upstream.status == 200 and too_big:
                # Too big to store (known up front): the client's Range goes
                # upstream as is, and its answer is relayed, not stored.
                upstream.close()
                self._release(upstream)
                if flight is not None:
                    flight.resolve(Released(status=upstream.status))
                    self.edge.flights.land(flight)
                    flight = None
                cacheable = False
                headers = self._upstream_headers(raw_encoding=True)
                upstream = await self._send_upstream(method, headers, with_body=False)
        except EdgeError as e:
            return await self._upstream_failed(e, flight, cacheable)
        response_time = self.edge.clock()
        return await self.relay(upstream, fwd, request_time, response_time, cacheable, flight)

    def _range_fill(self) -> bool:
        """Is this a client GET with a usable byte Range (RFC 9110 section 14.2)
        that a miss answers from the whole object instead of forwarding?"""
        if not self.client or self.req.method != "GET" or self.request.body_exists:
            return False
        return isinstance(parse_range(combined(self.request.headers, "range")), RangesSpecifier)

    async def _upstream_failed(
        self, e: EdgeError, flight: Flight | None, cacheable: bool = True
    ) -> web.StreamResponse:
        """No response from the origin: waiters are told; stale-if-error, else the error."""
        if flight is not None:
            flight.resolve(Released(error=e))
            self.edge.flights.land(flight)
        if cacheable:
            served = await self._stale_if_error(None)
            if served is not None:
                log.warning("%s: %s; served stale (stale-if-error)", self.key, e)
                return served
        raise e

    async def _stale_if_error(self, status: int | None) -> web.StreamResponse | None:
        """RFC 5861 section 4: the stored response instead of an origin error."""
        serve = self._stale_on_error()
        if serve is None:
            return None
        return await self.serve_stored(serve, stale_if_error_status(serve, self.fwd, status))

    def _stale_on_error(self) -> Serve | None:
        if self.decision is None or not self.client:
            return None
        return stale_on_error(
            self.req, self.candidates, self.decision, self.policy, self.edge.clock()
        )

    def _upstream_headers(
        self,
        drop: tuple[str, ...] = (),
        add: list[tuple[str, str]] | None = None,
        raw_encoding: bool = False,
    ) -> CIMultiDict[str]:
        """The request fields sent upstream.

        Accept-Encoding is the client's normalised coding (br, gzip or
        identity; http/accept_encoding.py) unless `raw_encoding` (a response
        that won't be stored): the origin then sees exactly what the Vary
        secondary key holds, so one answer serves every request with that
        token. A client's If-None-Match naming our transformed tags is turned
        back into the origin's (policy/transform.py).
        """
        peer = self.request.transport.get_extra_info("peername") if self.request.transport else None
        headers = request_headers(
            self.request.headers,
            version=(self.request.version.major, self.request.version.minor),
            client_ip=peer[0] if peer else None,
            host=self.host,
            scheme="http",
            pseudonym=self.cfg.via,
            upstream_host=self.origin.host_header,
            drop=drop,
            add=add or (),
        )
        # Replaces any client value: a malformed one was not kept (accesslog.request_id).
        headers[REQUEST_ID] = self.request_id
        if not raw_encoding:
            headers["Accept-Encoding"] = request_coding(self.request.headers)
        if "if-none-match" not in drop and "if-none-match" in headers:
            inm, _ = upstream_if_none_match(combined(headers, "if-none-match"))
            if inm is not None:
                headers.popall("if-none-match")
                headers["If-None-Match"] = inm
        if self.route.request_headers:
            apply_edits(headers, self.route.request_headers)
        return headers

    async def _send_upstream(
        self, method: str, headers: CIMultiDict[str], with_body: bool
    ) -> aiohttp.ClientResponse:
        """Send to a server of the origin's pool; a GET or HEAD that could not
        connect is retried once on another server (pool.should_retry)."""
        body = None
        if with_body and self.request.body_exists:
            body = self.request.content.iter_chunked(CHUNK)
        elif not with_body:
            headers.popall("content-length", None)
        edge = self.edge
        pool = edge.pool(self.origin)
        tried: list[str] = []
        failure: EdgeError | None = None
        started = time.monotonic()
        while True:
            server = pool.pick(edge.monotonic(), exclude=tried)
            if server is None:
                if failure is not None:
                    raise failure  # no other server to retry on
                raise origin.OriginDown(
                    f"origin {self.origin.name}: all {len(pool.servers)} servers are down"
                )
            tried.append(server)
            edge.counters["origin_requests"] += 1
            pool.acquire(server)
            attempt = time.monotonic()
            try:
                upstream = await origin.send(
                    edge.session, self.origin, method, self.target, headers, body, server
                )
            except EdgeError as e:
                pool.release(server)
                self._record(pool, server, None)
                edge.metrics.origin_response(self.origin.name, None, time.monotonic() - attempt)
                self.origin_ms = round((time.monotonic() - started) * 1000, 3)
                retry = body is None and should_retry(
                    method, connected=origin.connected(e), attempts=len(tried)
                )
                if not retry:
                    raise
                log.warning("%s %s: %s; retrying on another server", method, self.key, e)
                failure = e
                continue
            except BaseException:
                pool.release(server)
                raise
            self._record(pool, server, upstream.status)
            edge.metrics.origin_response(
                self.origin.name, upstream.status, time.monotonic() - attempt
            )
            self._slot = (pool, server)
            self.origin_status = upstream.status
            self.origin_ms = round((time.monotonic() - started) * 1000, 3)
            return upstream

    def _record(self, pool: Pool, server: str, status: int | None) -> None:
        """Passive health: only in a pool of several (a lone server is never ejected:
        there is nowhere else to go, as in nginx)."""
        if len(pool.servers) < 2:
            return
        now = self.edge.monotonic()
        if is_server_failure(status):
            was_up = pool.is_up(server, now)
            pool.record_failure(server, now)
            if was_up and not pool.is_up(server, now):
                log.warning("origin %s server %s ejected", self.origin.name, server)
        else:
            pool.record_success(server, now)

    def _release(self, upstream: aiohttp.ClientResponse) -> None:
        upstream.release()
        if self._slot is not None:
            pool, server = self._slot
            self._slot = None
            pool.release(server)

    async def relay(
        self,
        upstream: aiohttp.ClientResponse,
        fwd: Fwd,
        request_time: float,
        response_time: float,
        cacheable: bool,
        flight: Flight | None = None,
    ) -> web.StreamResponse:
        """Stream an origin response to the client, teeing it into the store
        (and to the waiters of `flight`)."""
        policy = self.policy
        writer: BodyWriter | None = None
        try:
            if cacheable and is_error_status(upstream.status):
                stale = self._stale_on_error()
                if stale is not None:
                    if flight is not None:
                        # Waiters apply their own stale-if-error.
                        flight.resolve(Released(status=upstream.status))
                        self.edge.flights.land(flight)
                        flight = None
                    cs = stale_if_error_status(stale, fwd, upstream.status)
                    served = await self.serve_stored(stale, cs)
                    if served is not None:
                        return served  # else (its body is gone) the error it is
            # Edge compression (policy/transform.py): what the client and the
            # store get are the transformed fields and body.
            plan = self._transform_plan(upstream, cacheable)
            fields = self._relayed_fields(upstream, plan)
            writer, entry, refusal = self._plan_store(
                upstream, fields, plan, request_time, response_time, cacheable
            )
            # A compressed body's length is known only at its end.
            length = upstream.content_length if plan.coding is None else None
            if flight is not None:
                if writer is not None and entry is not None:
                    flight.resolve(Streaming(entry, length))
                else:
                    flight.resolve(Released(status=upstream.status))
                    self.edge.flights.land(flight)
                    if refusal in _PASS_REASONS and not is_error_status(upstream.status):
                        self.edge.flights.mark_pass(
                            self.key, response_time, self.cfg.cache.hit_for_pass
                        )
                    flight = None  # nothing to feed
            cs = CacheStatus(
                fwd=fwd,
                fwd_status=upstream.status,
                stored=writer is not None,
                # Remaining freshness, net of any age it arrived with (RFC 9211 2.7).
                ttl=ttl(entry, policy, response_time) if entry is not None else None,
            )
            headers = response_headers(fields, version=self._version(), pseudonym=self.cfg.via)
            if "date" not in headers:
                headers["Date"] = format_http_date(response_time)
            if writer is not None and upstream.status == 200:
                # Once stored, we answer its ranges ourselves (RFC 9110 section 14.3).
                headers["Accept-Ranges"] = ACCEPT_RANGES
            if upstream.status in (204, 304):
                length = None
            slicer: RangeSlicer | None = None
            try:
                sliced = None
                if cacheable and upstream.status == 200 and length is not None:
                    sliced = await self._send_range_head(headers, cs, length)
                if sliced is None:
                    resp = await self._send_head(upstream.status, headers, cs, length=length)
                else:
                    slicer, resp = sliced
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                if flight is None or not flight.waiters:
                    raise
                # Gone before the head: the fill goes on for the waiters.
                self._client_gone = True
                resp = _NoClient()
            if self.request.method == "HEAD" and self.client:
                await resp.write_eof()
                return resp
            send = _sender(resp, slicer)
            encoder = None
            if plan.coding is not None and self.request.method != "HEAD":
                encoder = compress.encoder(plan.coding, self.cfg.cache.compress)
            complete, writer, held = await self._pump(
                upstream, send, writer, policy.max_object_size, flight, length, encoder, slicer
            )
            if flight is not None and complete:
                flight.finish()  # waiters are done; the store commit is ours
            # Write, then commit: only a clean end within the limit.
            if (
                writer is not None
                and entry is not None
                and complete
                and (length is None or writer.size == length)
            ):
                committing, writer = writer, None  # commit closes it either way
                try:
                    await committing.commit(entry)
                    self.edge.counters["stored"] += 1
                except StoreError as e:
                    log.log(_store_log_level(e), "not stored %s: %s", self.key, e)
            if complete and not self._client_gone:
                if held is not None:
                    try:
                        await send(held)
                    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                        return resp  # stored all the same: the body was complete
                await resp.write_eof()
            await self._invalidate(upstream)
            return resp
        finally:
            if writer is not None:
                # Any other way out (a short body, an exception, cancellation)
                # leaves nothing behind.
                await writer.abort()
            self._release(upstream)

    def _transform_plan(self, upstream: aiohttp.ClientResponse, cacheable: bool) -> TransformPlan:
        """Compress this response? Only on cacheable forwards, whose upstream
        Accept-Encoding was the normalised one (`_upstream_headers`)."""
        if not cacheable:
            return AS_IS
        return compression_plan(
            upstream.status,
            upstream.headers,
            request_coding(self.request.headers),
            self.cfg.cache.compress,
            compress.available(),
            self.policy.targeted,
        )

    def _relayed_fields(self, upstream: aiohttp.ClientResponse, plan: TransformPlan) -> Headers:
        """The origin's fields as the edge passes them on (to the client and
        the store): transformed by `plan`; a 304 to a client's If-None-Match
        that named our transformed tag gets its ETag transformed back."""
        fields: Headers = upstream.headers
        if plan.vary or plan.coding is not None:
            fields = transformed_fields(fields, plan)
        if upstream.status == 304 and self.client and "etag" in fields:
            _, coding = upstream_if_none_match(combined(self.request.headers, "if-none-match"))
            etag = transformed_etag(fields["etag"], coding) if coding is not None else None
            if etag is not None:
                fields = CIMultiDict(fields)
                fields["ETag"] = etag
        return fields

    async def _send_range_head(
        self, headers: CIMultiDict[str], cs: CacheStatus, length: int
    ) -> tuple[RangeSlicer, web.StreamResponse] | None:
        """For a Range miss answered from the whole object (`forward`): the
        head of its 206 (RFC 9110 section 15.3.7) and the slicer that cuts the
        body from the bytes as they arrive; or a whole 416 (15.5.17), the fill
        going on for the store; None when Range is ignored (a 200). Range and
        If-Range are evaluated against this response (14.2, 13.1.5)."""
        if not self._range_fill():
            return None
        spans = evaluate_range("GET", self.request.headers, headers, length)
        if spans is IGNORE:
            return None
        if isinstance(spans, NotPartial):  # UNSATISFIABLE
            text = b"Range Not Satisfiable\n"
            refused: CIMultiDict[str] = CIMultiDict()
            refused["Date"] = headers["Date"]
            refused["Via"] = via_value(self._version(), self.cfg.via)
            refused["Content-Type"] = "text/plain; charset=utf-8"
            refused["Content-Range"] = unsatisfied_content_range(length)
            refused["Accept-Ranges"] = ACCEPT_RANGES
            resp = await self._send_head(416, refused, cs, length=len(text))
            await resp.write(text)
            await resp.write_eof()
            return RangeSlicer([]), resp
        headers.popall("Content-Range", None)
        headers["Accept-Ranges"] = ACCEPT_RANGES
        parts: list[Part]
        trailer = b""
        if len(spans) == 1:
            ((start, end),) = spans
            headers["Content-Range"] = content_range(start, end, length)
            size = end - start + 1
            parts = [Part(b"", start, end)]
        else:
            # A fresh boundary per response, so the content can't contain it (14.6).
            boundary = secrets.token_hex(16)
            ctype = headers.get("Content-Type")
            headers["Content-Type"] = multipart_content_type(boundary)
            size = multipart_length(spans, length, ctype, boundary)
            parts = multipart_parts(spans, length, ctype, boundary)
            trailer = multipart_trailer(boundary)
        resp = await self._send_head(206, headers, cs, length=size)
        return RangeSlicer(parts, trailer), resp

    def _plan_store(
        self,
        upstream: aiohttp.ClientResponse,
        fields_in: Headers,
        plan: TransformPlan,
        request_time: float,
        response_time: float,
        cacheable: bool,
    ) -> tuple[BodyWriter | None, Entry | None, str]:
        """The writer and entry to store the response with, or why not.
        `fields_in` are its fields as relayed (`_relayed_fields`)."""
        policy = self.policy
        if not cacheable:
            return None, None, "bypass"
        resp_cc = response_cache_control(fields_in, policy.targeted)
        verdict = storable(
            self.req.method,
            self.request.headers,
            self.req.cc,
            upstream.status,
            fields_in,
            resp_cc,
            policy,
        )
        if not verdict.ok:
            return None, None, verdict.reason
        length = upstream.content_length
        if length is not None and length > policy.max_object_size:
            return None, None, "too-big"
        fields = storable_fields(fields_in)
        if "date" not in fields:
            fields["Date"] = format_http_date(response_time)  # RFC 9110 section 6.6.1
        names = vary_names(fields_in)
        entry = Entry(
            key=self.key,
            status=upstream.status,
            fields=CIMultiDictProxy(fields),
            request_time=request_time,
            response_time=response_time,
            vary=names,
            secondary=secondary_key(self.request.headers, names) or (),
            tags=surrogate_keys(upstream.headers, self.cfg.cache.tag_headers),
            route=self.route.name,
            targeted=policy.targeted,
            coding=plan.marker,
        )
        if not health_of(self.edge.store).writable:
            return None, None, "store-degraded"  # pass through; the store retries later
        return self.edge.store.open_writer(self.key), entry, ""

    async def _pump(
        self,
        upstream: aiohttp.ClientResponse,
        send: Callable[[bytes], Awaitable[None]],
        writer: BodyWriter | None,
        max_size: int,
        flight: Flight | None,
        length: int | None = None,
        encoder: compress.Encoder | None = None,
        slicer: RangeSlicer | None = None,
    ) -> tuple[bool, BodyWriter | None, bytes | None]:
        """Copy the body: (clean end, the writer still worth committing, held).

        `send` writes to the client (`_sender`: whole, or through `slicer`
        the client's ranges); with `encoder`, what is copied is the
        compressed body. Once a range client has its answer, the copy goes
        on only for the store or waiters.

        A writer dropped on the way (too big, store error) is already aborted;
        on an unclean end the caller aborts the one returned. The client's
        connection is aborted when the origin fails. When the client leaves,
        the copy goes on while the flight has waiters (the fill is theirs
        too), else it stops.

        With a Content-Length, the last chunk of a body being stored is held
        back (`held`) until the caller has committed it: a client that has
        the whole response can count on the next request being a hit.
        """
        try:
            async with contextlib.aclosing(_body(upstream, encoder)) as chunks:
                async for chunk in chunks:
                    if writer is not None:
                        if writer.size + len(chunk) > max_size:
                            await writer.abort()  # too big to keep: pass it through
                            writer = None
                        else:
                            try:
                                await writer.write(chunk)
                            except StoreError as e:
                                log.log(_store_log_level(e), "not storing %s: %s", self.key, e)
                                await writer.abort()
                                writer = None
                    if flight is not None:
                        await flight.append(chunk)
                    if self._client_gone:
                        continue
                    if slicer is not None and slicer.done and writer is None and flight is None:
                        return False, None, None  # the client has its ranges; nobody wants more
                    if writer is not None and length is not None and writer.size == length:
                        return True, writer, chunk  # the last chunk: sent after the commit
                    try:
                        await send(chunk)
                    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                        if flight is None or not flight.waiters:
                            if flight is not None:
                                self.edge.flights.land(flight)  # nobody may join an abandoned fill
                            return False, writer, None  # the client left: nothing partial is stored
                        log.info("%s: client left; the fill goes on for its waiters", self.key)
                        self._client_gone = True
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
            log.warning("origin broke off %s mid-body: %s", self.key, e)
            # A silent short 200 would look complete: drop the connection.
            if self.client and self.request.transport is not None:
                self.request.transport.abort()
            return False, writer, None
        return True, writer, None

    async def _invalidate(self, upstream: aiohttp.ClientResponse) -> None:
        """RFC 9111 section 4.4, with targets turned into our keys."""
        for target in invalidation_targets(
            self.request.method, upstream.status, self.key, upstream.headers
        ):
            with contextlib.suppress(StoreError):
                await self.edge.store.delete(target)

    # -- writing responses --------------------------------------------------

    def _version(self) -> tuple[int, int]:
        return (self.request.version.major, self.request.version.minor)

    async def _send_head(
        self,
        status: int,
        headers: CIMultiDict[str],
        cs: CacheStatus,
        length: int | None = None,
        via: bool = False,
    ) -> web.StreamResponse:
        """Send status and fields. `via`: append our Via (RFC 9110 section 7.6.3)
        to a response from storage; relayed ones got it in `response_headers`."""
        if not self.client:
            return _NoClient()
        self.cache_status, self.from_store = cs, via
        headers["Cache-Status"] = cs.render(self.cfg.cache.status_name)
        headers[REQUEST_ID] = self.request_id
        self._finish_fields(headers, via)
        return await self._start(status, headers, length)

    def _finish_fields(self, headers: CIMultiDict[str], via: bool) -> None:
        """What every response gets after its own fields: strips, Via, route edits."""
        cache = self.cfg.cache
        if cache.strip_targeted:
            # Directives meant for us, not for caches downstream (RFC 9213 section 3 MAY).
            for name in self.policy.targeted:
                headers.popall(name, None)
        if cache.strip_tags:
            # Surrogate keys are the origin's purge handles, not the client's business.
            for name in cache.tag_headers:
                headers.popall(name, None)
        if via:
            headers.add("Via", via_value(self._version(), self.cfg.via))
        if self.route.response_headers:
            apply_edits(headers, self.route.response_headers)

    async def _start(
        self, status: int, headers: CIMultiDict[str], length: int | None, coalesce: bool = False
    ) -> web.StreamResponse:
        """`coalesce`: the head waits for the body's first write (one send for
        both); only when that write goes through the response, not sendfile."""
        resp = (_CoalescedResponse if coalesce else RelayedResponse)(status=status, headers=headers)
        if length is not None and status not in (204, 304):
            resp.content_length = length
        await resp.prepare(self.request)
        self.sent = resp
        return resp

    async def _send_stored_head(
        self,
        entry: Entry,
        status: int,
        age: int,
        cs: CacheStatus,
        validated: bool = False,
        coalesce: bool = True,
    ) -> web.StreamResponse:
        """The head of a response from storage (`status` 304: its 304), exactly
        as `_send_head(..., via=True)` sends it, from a per-entry template when
        the store keeps one (TieredStore.prebuilt): a hot hit then copies the
        fields and sets only Age, Cache-Status and the request id in place."""
        if not self.client:
            return _NoClient()
        length = None if status == 304 else entry.body_size
        template = self._stored_template(entry, status, validated)
        if template is None:  # an edit or strip names a per-request field
            headers = _stored_fields(entry, status, age, validated)
            return await self._send_head(status, headers, cs, length=length, via=True)
        headers = CIMultiDict(template)
        headers["Age"] = str(max(0, age))  # RFC 9111 section 5.1
        self.cache_status, self.from_store = cs, True
        headers["Cache-Status"] = cs.render(self.cfg.cache.status_name)
        headers[REQUEST_ID] = self.request_id
        return await self._start(status, headers, length, coalesce)

    def _stored_template(
        self, entry: Entry, status: int, validated: bool
    ) -> CIMultiDict[str] | None:
        """A stored response's head fields with Age, Cache-Status and the request
        id as placeholders, kept with the hot entry per snapshot, route, HTTP
        version and kind; None when the route's edits or strips name one of
        those (they must then be applied after them, in order)."""
        prebuilt = getattr(self.edge.store, "prebuilt", None)
        templates: _Templates = {} if prebuilt is None else prebuilt(entry, _new_templates)
        slot = (id(self.snap), id(self.route), self._version(), status, validated)
        kept = templates.get(slot)
        if kept is not None and kept[0] is self.snap and kept[1] is self.route:
            return kept[2]
        headers: CIMultiDict[str] | None = _stored_fields(entry, status, 0, validated)
        assert headers is not None
        headers["Cache-Status"] = ""
        headers[REQUEST_ID] = ""
        self._finish_fields(headers, via=True)
        if not _TEMPLATE_FIELDS.isdisjoint(name.lower() for name in self._edited_names()):
            headers = None
        if len(templates) >= 8:  # one per route, version and kind; reloads add more
            templates.clear()
        templates[slot] = (self.snap, self.route, headers)
        return headers

    def _edited_names(self) -> list[str]:
        """Every field name the route's edits or the strips touch."""
        edits = self.route.response_headers
        cache = self.cfg.cache
        names = [*edits.remove, *(n for n, _ in edits.set), *(n for n, _ in edits.add)]
        if cache.strip_targeted:
            names += self.policy.targeted
        if cache.strip_tags:
            names += cache.tag_headers
        return names

    def respond_text(self, status: int, text: str, cs: CacheStatus) -> web.Response:
        self.cache_status, self.from_store = cs, False
        resp = _text(status, text)
        resp.headers["Cache-Status"] = cs.render(self.cfg.cache.status_name)
        resp.headers[REQUEST_ID] = self.request_id
        resp.headers["Via"] = via_value(self._version(), self.cfg.via)
        return resp

    def error_response(self, e: EdgeError) -> web.Response:
        resp = self.respond_text(
            e.status_hint,
            f"{_reason(e.status_hint)}: {e}\n",
            CacheStatus(fwd=self.fwd, detail=e.proxy_error.value),
        )
        resp.headers["Proxy-Status"] = proxy_status(
            self.cfg.cache.status_name, e.proxy_error, str(e)
        )
        return resp


def _sender(
    resp: web.StreamResponse, slicer: RangeSlicer | None
) -> Callable[[bytes], Awaitable[None]]:
    """How relayed body bytes reach the client: all of them, or through
    `slicer` only its ranges, the response ending once they are out."""
    if slicer is None:
        return resp.write

    async def send(data: bytes) -> None:
        if slicer.done:
            return
        out = slicer.feed(data)
        if out:
            await resp.write(out)
        if slicer.done:
            await resp.write_eof()  # the client has its ranges; the fill goes on

    return send


async def _body(
    upstream: aiohttp.ClientResponse, encoder: compress.Encoder | None
) -> AsyncGenerator[bytes, None]:
    """The origin's body, CHUNK at a time, compressed by `encoder` if given."""
    if encoder is None:
        async for chunk in upstream.content.iter_chunked(CHUNK):
            yield chunk
        return
    expected, got = upstream.content_length, 0
    async for chunk in upstream.content.iter_chunked(CHUNK):
        got += len(chunk)
        out = encoder.compress(chunk)
        if out:
            yield out
    if expected is not None and got != expected:
        # Its own length can't be checked against the compressed size later.
        raise aiohttp.ClientPayloadError(f"body ended at {got} of {expected} bytes")
    yield encoder.finish()


def _pread(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


async def _read_span(body: Body, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes start..end (inclusive) of a stored body: sliced from memory, or
    read from its file off the loop, CHUNK at a time (never the whole file)."""
    if body.data is not None:
        yield body.data[start : end + 1]
        return
    assert body.file is not None
    f = body.file
    loop = asyncio.get_running_loop()
    pos, stop = start, end + 1
    while pos < stop:
        chunk = await loop.run_in_executor(None, _pread, f, pos, min(CHUNK, stop - pos))
        if not chunk:
            raise ShortBody(f"ended at {pos} of {stop}")
        pos += len(chunk)
        yield chunk


async def _send_span(
    request: web.Request, resp: web.StreamResponse, body: Body, start: int, end: int
) -> None:
    """Bytes start..end (inclusive) of a stored body to the client, after its
    head: from memory in one write, or from its file with sendfile (zero-copy:
    the bytes never enter Python), else (TLS, no socket) read CHUNK at a time."""
    if isinstance(resp, _NoClient):
        return
    if body.data is not None:
        data = body.data if start == 0 and end == len(body.data) - 1 else body.data[start : end + 1]
        await resp.write(data)
        return
    assert body.file is not None
    transport = request.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if (
        transport is None
        or sock is None
        or transport.get_extra_info("sslcontext") is not None
        or not hasattr(os, "sendfile")
    ):
        async for chunk in _read_span(body, start, end):
            await resp.write(chunk)
        return
    sent = await _sendfile(transport, body.file.fileno(), start, end - start + 1)
    if isinstance(resp, RelayedResponse):
        resp.body_bytes += sent


async def _sendfile(transport: asyncio.BaseTransport, file_fd: int, offset: int, count: int) -> int:
    """os.sendfile `count` bytes of `file_fd` from `offset` to the connection's socket.

    Neither asyncio's `loop.sendfile` (uvloop has none) nor aiohttp's
    FileResponse (which falls back to reads there) will do on both loops, so:
    the bytes already queued in the transport (the head) go out first; each
    sendfile call runs on the thread pool (it may read the disk: never on the
    loop) on a dup of the socket, and waiting for room in the socket buffer
    happens on the loop (add_writer on the dup; the transport owns the fd
    itself). The dup is taken at once, while the transport is known open, and
    is all we write to: if the client leaves and the transport closes its
    fd, whose number may be reused by another connection at once, the dup
    still names this socket, and the call fails instead of writing into
    someone else's.
    """
    # uvloop's transports are WriteTransports in all but their class (no isinstance).
    writer = cast(asyncio.WriteTransport, transport)
    sock = transport.get_extra_info("socket")
    if transport.is_closing() or sock is None:
        raise ConnectionResetError("client connection closed")
    try:
        fd = os.dup(sock.fileno())
    except OSError as e:
        raise ConnectionResetError(f"client connection closed: {e}") from e
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        # The head (and any multipart part header) first. Bounded: each turn
        # waits for the socket to take bytes, and the transport writes what
        # it holds as soon as it can.
        while writer.get_write_buffer_size() > 0:
            if transport.is_closing():
                raise ConnectionResetError("client connection closed")
            await _writable(loop, fd)
            await asyncio.sleep(0)  # the transport's own write callback runs first
        while sent < count:
            if transport.is_closing():
                raise ConnectionResetError("client connection closed")
            try:
                n = await loop.run_in_executor(
                    None, os.sendfile, fd, file_fd, offset + sent, count - sent
                )
            except (BlockingIOError, InterruptedError):
                await _writable(loop, fd)
                continue
            except (BrokenPipeError, ConnectionError) as e:
                raise ConnectionResetError(str(e)) from e
            if n == 0:
                raise ShortBody(f"ended at {offset + sent} of {offset + count}")
            sent += n
    finally:
        os.close(fd)
    return sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until the socket behind `fd` can take more bytes (or has failed)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _close_body(body: Body) -> None:
    """Close a stored body's file (opened at lookup; the reader closes it)."""
    if body.file is not None:
        await asyncio.get_running_loop().run_in_executor(None, body.file.close)


# Fields a stored response's head sets per request (the rest is a template).
_TEMPLATE_FIELDS = frozenset({"age", "cache-status", REQUEST_ID.lower()})

_Templates = dict[tuple[object, ...], tuple[Snapshot, Route, CIMultiDict[str] | None]]


def _new_templates(entry: Entry) -> _Templates:
    """TieredStore.prebuilt's builder: the entry's (empty) template table."""
    return {}


def _stored_fields(entry: Entry, status: int, age: int, validated: bool) -> CIMultiDict[str]:
    """The fields of a response from storage before our own: a 304's
    (RFC 9110 section 15.4.5) or the stored ones with Age (RFC 9111 section 4)."""
    if status == 304:
        return not_modified_fields(entry, age)
    headers = reuse_fields(entry, age, validated)
    if entry.status == 200:
        # A stored complete 200 is one we answer ranges of (RFC 9110 section 14.3).
        headers["Accept-Ranges"] = ACCEPT_RANGES
    return headers


class _NoClient(web.StreamResponse):
    """What the proxy's own background request "sends": nobody reads it."""

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class RelayedResponse(web.StreamResponse):
    """A response that carries only the fields we chose.

    aiohttp fills in Server and Content-Type when absent; a proxy must not
    invent either (RFC 9110 sections 8.3 and 10.2.4: they describe the origin
    and its content), so both are taken out again if we didn't set them.
    """

    body_bytes = 0  # written so far, for the access log

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await super().write(data)
        self.body_bytes += len(data)

    async def _prepare_headers(self) -> None:
        invented = [name for name in ("Server", "Content-Type") if name not in self._headers]
        await super()._prepare_headers()
        for name in invented:
            self._headers.popall(name, None)


class _CoalescedResponse(RelayedResponse):
    """A RelayedResponse whose head is sent with the first body write (or at
    write_eof): one send instead of two for a small body from memory."""

    _send_headers_immediately = False


def _reason(status: int) -> str:
    return {
        400: "Bad Request",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Error")


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")
