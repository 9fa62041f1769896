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

Here is the request's story (routing, the decision, collapsing, going
upstream); the parts it calls on, one job each, are the classes `_Exchange`
is built from (exchange.py has the chain): serving.py answers from the
store and writes every response head, fill.py relays and stores an origin
response, upstream.py sends requests to the origin, bodies.py puts stored
bodies on the wire, responses.py holds the response types.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, assert_never, cast
from urllib.parse import urlsplit

from aiohttp import web

from edgeproxy.accesslog import (
    REQUEST_ID,
    AccessRecord,
    access_log,
    emit,
    request_id,
)
from edgeproxy.cachekey import normalise_host
from edgeproxy.collapse import Flight, Refreshed, Released, Streaming
from edgeproxy.config import Config, Route
from edgeproxy.errors import EdgeError
from edgeproxy.fill import Relay, store_log_level
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.http.conditionals import Precondition, evaluate
from edgeproxy.http.fields import Headers
from edgeproxy.http.vary import matches
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
from edgeproxy.policy.stale import (
    ServeWhileRevalidating,
    discardable,
    is_error_status,
    stale_if_error_status,
    stale_while_revalidate_status,
    with_stale_while_revalidate,
)
from edgeproxy.policy.storable import stays_storable
from edgeproxy.policy.validation import CLIENT_CONDITIONALS, merge_304, validates
from edgeproxy.purge_method import handle_purge
from edgeproxy.responses import NoClient, RelayedResponse, text_response
from edgeproxy.routing import bare_host, select_route
from edgeproxy.state import EDGE, EdgeState, Snapshot
from edgeproxy.store.base import Store, StoreError
from edgeproxy.upstream import Prefetched

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path


# Forwards that may collapse: misses and stale entries. Not fwd=request (nor
# any request with no-cache): a client that demanded an answer gets its own.
_COLLAPSIBLE_FWD = frozenset({Fwd.URI_MISS, Fwd.VARY_MISS, Fwd.STALE})
# Not sent upstream on a Range miss: the whole object is fetched instead.
_RANGE_FIELDS = ("range", "if-range")


async def handle(request: web.Request) -> web.StreamResponse:
    """Answer one client request; however it ends (refusal, error, an
    exception), it is one access-log line, and it carries its request id."""
    started = time.monotonic()
    edge = request.app[EDGE]
    snap = edge.snapshot  # read once: in-flight requests keep their rules
    at = edge.clock()
    pre, looked = _handover(request)
    rid = pre.rid if pre is not None else request_id(request.headers.get(REQUEST_ID))
    handed = None
    if pre is not None:
        handed, pre.flight = pre.flight, None  # ours now: led on, or closed below
    ctx: _Exchange | None = None
    route_name: str | None = None
    resp: web.StreamResponse | None = None
    try:
        routed = await _route(request, edge, snap, rid)
        if isinstance(routed, _Exchange):
            ctx = routed
            ctx.prefetched, pre = pre, None
            ctx.handed_flight = handed
            ctx.looked_up = looked
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
        if ctx is not None and ctx.prefetched is not None:
            pre, ctx.prefetched = ctx.prefetched, None
        if pre is not None:
            pre.discard()  # not taken: its request was not the one this exchange sent
        if handed is not None and not handed.landed:
            await edge.flights.close(handed)  # not led on: its waiters go their own way
        # Metrics on every request; what the client got, as the access log says.
        sent = resp if resp is not None or ctx is None else ctx.sent
        from_store = ctx is not None and ctx.from_store
        cache = outcome(
            ctx.cache_status if ctx is not None else None,
            sent.status if sent is not None else None,
            from_store,
        )
        nbytes = _body_bytes(request, sent)
        source = byte_source(from_store, isinstance(sent, RelayedResponse))
        account(
            edge,
            snap,
            route_name,
            request.method,
            cache,
            source,
            nbytes,
            lambda: _access_record(request, at, started, rid, route_name, ctx, sent, cache, nbytes),
        )


async def keep_merged(store: Store, merged: Entry) -> bool:
    """Store a response freshened by a 304 (RFC 9111 section 4.3.4); True
    when it is stored. Both paths' revalidations (and wire_revalidation.py)."""
    try:
        return await store.update(merged)
    except StoreError as e:
        log.log(store_log_level(e), "could not refresh %s after 304: %s", merged.key, e)
    return False


async def drop_merged(store: Store, merged: Entry) -> None:
    """Drop a stored response a 304 made unstorable (`stays_storable`)."""
    try:
        await store.delete_variant(merged)
    except StoreError as e:
        log.log(store_log_level(e), "could not drop %s after 304: %s", merged.key, e)


def _handover(
    request: web.Request,
) -> tuple[Prefetched | None, tuple[str, list[Entry]] | None]:
    """What the wire path did for this request before it left it to us
    (server._AnyMethodProtocol.take_handover): the origin's answer, the
    store's lookup."""
    take = getattr(request.protocol, "take_handover", None)
    if take is None:
        return None, None
    return cast("tuple[Prefetched | None, tuple[str, list[Entry]] | None]", take())


def account(
    edge: EdgeState,
    snap: Snapshot,
    route: str | None,
    method: str,
    cache: str,
    source: str,
    nbytes: int,
    record: Callable[[], AccessRecord],
) -> None:
    """One answered request in the outcome counts, the metrics and the
    access log (the line is built only when someone reads it)."""
    edge.outcomes[cache] += 1
    edge.metrics.served(route, method, cache, source, nbytes)
    if access_logged(snap):
        emit(record(), snap.config.log.access_format)


def access_logged(snap: Snapshot) -> bool:
    """Whether a request's access line is written (`account`'s test)."""
    return snap.config.log.access_log and access_log.isEnabledFor(logging.INFO)


class Located(NamedTuple):
    """Where a request goes: its normalised host and origin-form target."""

    host: str
    target: str
    absolute: bool  # the target came in absolute-form


def locate(target: str, host: str | None) -> Located | str:
    """The request's host and target, or why it is refused (a 400's reason).
    The one reading of a request's address, for both the aiohttp handler
    and the wire fast path (wire.py); `select` then finds its route."""
    absolute = not target.startswith("/")
    if absolute:
        absolute_form = _absolute_form(target, host)
        if isinstance(absolute_form, str):
            return absolute_form
        host, target = absolute_form
    if not host:
        return "missing Host header (RFC 9112 section 3.2)"
    # One normalised view for routing, the key and X-Forwarded-Host, so a
    # request can't be keyed as one URL and described upstream as another.
    # An invalid Host is a 400 (RFC 9112 section 3.2): a bare uri-host
    # (reg-name, IPv4, IP-literal) and an optional port, nothing else.
    if not _VALID_HOST.fullmatch(host):
        return "invalid Host (RFC 9112 section 3.2)"
    host = normalise_host(host, "http")
    return Located(host, target, absolute)


def select(cfg: Config, at: Located, method: str) -> Route | None:
    """The route that serves `at` for `method`, if any."""
    path = at.target.partition("?")[0]
    return select_route(cfg.routes, cfg.default_route, at.host, path, method)


_VALID_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]*)?")


async def _route(
    request: web.Request, edge: EdgeState, snap: Snapshot, rid: str
) -> _Exchange | tuple[web.StreamResponse, str | None]:
    """The exchange for a routed request, or the answer (and route name, if
    any) for one the edge answers itself."""
    cfg = snap.config
    at = locate(request.raw_path, request.headers.get("Host"))
    if isinstance(at, str):
        return _refuse(f"Bad Request: {at}\n"), None
    if request.method == "PURGE" and cfg.admin.purge_method:
        return await handle_purge(request, edge, at.host, at.target), None
    host, target, absolute = at
    route = select(cfg, at, request.method)
    if route is None and absolute:
        # Not ours: an edge is no forward proxy for other hosts.
        return _refuse(f"Bad Request: {bare_host(host)} is not served here\n"), None
    if route is None:
        path = target.partition("?")[0]
        return text_response(404, f"Not Found: no route matches {bare_host(host)}{path}\n"), None
    if route.origin is None:
        return text_response(404, f"Not Found: route {route.name!r} has no origin\n"), route.name
    return _Exchange(request, edge, snap, route, host, target, rid)


def _access_record(
    request: web.Request,
    at: float,
    started: float,
    rid: str,
    route: str | None,
    ctx: _Exchange | None,
    sent: web.StreamResponse | None,
    cache: str,
    nbytes: int,
) -> AccessRecord:
    """`sent`, `cache` and `nbytes` as `handle` worked them out once for the
    metrics too: what the client got (after an exception past the head, the
    response already sent), its outcome, its body bytes."""
    status = sent.status if sent is not None else 500  # else aiohttp answers 500
    version = f"HTTP/{request.version.major}.{request.version.minor}"
    return access_record(
        (at, started),
        (request.remote, request.method, request.raw_path, version, request.headers),
        (rid, route, status, cache, nbytes),
        (ctx.origin_status, ctx.origin_ms) if ctx is not None else (None, None),
    )


def access_record(
    times: tuple[float, float],
    asked: tuple[str | None, str, str, str, Headers],
    answered: tuple[str, str | None, int, str, int],
    origin: tuple[int | None, float | None] = (None, None),
) -> AccessRecord:
    """One request's access-log record, from both paths (here and wire.py):
    `times` (its HTTP-clock start, its monotonic start), what was `asked`
    (client address, method, target, version, fields), how it was
    `answered` (request id, route, status, cache outcome, body bytes), and
    the `origin`'s status and time to its head, if it went there."""
    at, started = times
    client, method, url, version, headers = asked
    rid, route, status, cache, nbytes = answered
    # Positional, in AccessRecord's field order: a third of the keyword call's cost.
    return AccessRecord(
        at,
        client,
        method,
        url,
        status,
        nbytes,
        round((time.monotonic() - started) * 1000, 3),
        cache,
        route,
        origin[0],
        origin[1],
        rid,
        version,
        headers.get("Referer"),
        headers.get("User-Agent"),
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


def _refuse(reason: str) -> web.StreamResponse:
    """A 400 for a request the edge won't serve, on a connection it closes."""
    resp = text_response(400, reason)
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


class _Exchange(Relay):
    """One client request's trip through the cache."""

    async def run(self) -> web.StreamResponse:
        method = self.request.method
        if not self.route.cache:
            return await self.forward(Fwd.BYPASS, cacheable=False)
        looked, self.looked_up = self.looked_up, None
        if looked is not None and looked[0] == self.key:
            candidates = looked[1]  # the wire path looked it up (wire_miss.py)
        elif method in ("GET", "HEAD"):
            candidates = await self.edge.store.lookup(self.key)
        else:
            candidates = []
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
            log.log(store_log_level(e), "could not discard %s: %s", self.key, e)

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
        if flight is not None and flight is self.handed_flight:
            # The wire path led it and left the answer to us: we lead it on.
            self.handed_flight = None
            try:
                return await go(flight)
            finally:
                await flights.close(flight)
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
        bg.prefetched = bg.handed_flight = None  # the client's own request's, if any
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
        if self.upstream_times is not None:  # sent by the wire path (upstream.Prefetched)
            request_time, response_time = self.upstream_times
        if upstream.status == 304:
            self._release(upstream)
            if validates(d.entry, upstream.headers):
                self.edge.counters["revalidated_304"] += 1
                merged = merge_304(d.entry, upstream.headers, request_time, response_time)
                storable_now = stays_storable(
                    self.request.headers, self.req.cc, merged, self.policy
                )
                kept = storable_now and await keep_merged(self.edge.store, merged)
                if flight is not None:
                    flight.resolve(Refreshed(merged) if kept else Released(status=304))
                    self.edge.flights.land(flight)
                try:
                    if not self.client:
                        return NoClient()
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
                finally:
                    if not storable_now:
                        # Unstorable now (no-store, private...): it still answers
                        # this request (4.3.4), then the stored one goes.
                        await drop_merged(self.edge.store, merged)
            # The 304 doesn't describe what we hold (4.3.4): fetch it whole.
            return await self.forward(d.fwd, True, flight)
        return await self.relay(upstream, d.fwd, request_time, response_time, True, flight)

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
        if self.upstream_times is not None:  # sent by the wire path (upstream.Prefetched)
            request_time, response_time = self.upstream_times
        return await self.relay(upstream, fwd, request_time, response_time, cacheable, flight)

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
