"""The wire path's revalidations: a stale hot entry validated upstream and,
when the origin answers 304, answered in the listener's protocol.

A revalidation through aiohttp's handler pays its request and response
objects, router and writer on top of the trip upstream (a full-path hit
costs ~3.5x a wire hit, docs/benchmarks.md). So, as wire.py does for fresh
hits, the protocol (server._AnyMethodProtocol) runs a `Revalidation` in a
task when `revalidation` here takes the request, holding whatever the
client sends after it. It does what proxy._Exchange does for the same
request, calling the same functions: `upstream_fields` and `send_upstream`
(the request that goes upstream, its pool server, retry and health),
`validates` and `merge_304` (RFC 9111 section 4.3.4), `storable`, the
store's `update` (section 3.2: the stored fields are freshened), the
flight other requests for the key collapse onto (collapse.py), `evaluate`
(the client's own conditionals, RFC 9110 section 13.2.2), then the entry's
wire head (wire.py) and the accounting of proxy.handle.

It takes only what it can finish the same way: a GET of a routed, caching
route whose decision is Revalidate because the entry is stale (fwd=stale),
no stale rule applies (nothing past its keep time, no stale-while-
revalidate: policy/stale.py), the body is in the hot tier, no other
request is already revalidating the key, and neither a Range nor an
If-Match / If-Unmodified-Since (a 206 or 412) is asked for. Anything else
is the full path's from the start.

Once the request has gone upstream, only a 304 that validates the entry is
answered here. Any other answer, or a failure, is handed to the full path
with the request (`upstream.Prefetched`): the exchange takes it as the
answer to the same conditional request instead of sending it again, and
relays and stores it, or serves stale-if-error, as it always does.
"""

from __future__ import annotations

import asyncio
import logging
import time

from multidict import CIMultiDict

from edgeproxy.accesslog import Format, emit, emit_line, json_client, json_line, json_parts
from edgeproxy.collapse import Flight, Refreshed, Released
from edgeproxy.config import Route
from edgeproxy.errors import EdgeError
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.http.conditionals import Precondition, evaluate
from edgeproxy.http.request_head import RequestHead
from edgeproxy.metrics import byte_source, outcome
from edgeproxy.policy.decide import Request, Revalidate
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import current_age, ttl
from edgeproxy.policy.stale import discardable, with_stale_while_revalidate
from edgeproxy.policy.storable import stays_storable
from edgeproxy.policy.validation import CLIENT_CONDITIONALS, merge_304, validates
from edgeproxy.proxy import access_logged, access_record, drop_merged, keep_merged
from edgeproxy.state import EdgeState, Snapshot
from edgeproxy.store.tiered import TieredStore
from edgeproxy.upstream import Prefetched, Trip, send_upstream, upstream_fields
from edgeproxy.wire_head import WireHead, wire_head_after_304, wire_head_for

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path

_SOURCE = byte_source(True, True)  # as the full path counts a stored body
# Left to the full path: a 412 (If-Match, If-Unmodified-Since) or a 206 (Range).
_NOT_HERE = ("if-match", "if-unmodified-since", "range", "if-range")


class Asked:
    """The request as the wire path read it: its head and fields, the
    client's address, its request id, and when it began (HTTP clock,
    monotonic)."""

    __slots__ = ("at", "client", "head", "headers", "req", "rid", "started")

    def __init__(
        self,
        head: RequestHead,
        headers: CIMultiDict[str],
        req: Request,
        client: str | None,
        rid: str,
        times: tuple[float, float],
    ) -> None:
        self.head = head
        self.headers = headers
        self.req = req
        self.client = client
        self.rid = rid
        self.at, self.started = times

    def log(self, fmt: Format, answered: tuple[str, int, str, int], trip: Trip) -> None:
        """Its access line, as proxy.handle writes one: `answered` is the
        route, status, cache outcome and body bytes, `trip` the origin's part."""
        route, status, cache, nbytes = answered
        head = self.head
        if fmt == "json":
            asked, tail = json_parts(
                head.method, head.target, status, nbytes, cache, route, trip.status, trip.ms
            )
            duration = round((time.monotonic() - self.started) * 1000, 3)
            emit_line(json_line(self.at, json_client(self.client), asked, duration, tail, self.rid))
            return
        record = access_record(
            (self.at, self.started),
            (self.client, head.method, head.target, "HTTP/1.1", self.headers),
            (self.rid, route, status, cache, nbytes),
            (trip.status, trip.ms),
        )
        emit(record, fmt)


def revalidation(
    edge: EdgeState,
    where: tuple[Snapshot, Route, str, str],
    asked: Asked,
    candidates: list[Entry],
    d: Revalidate,
) -> Revalidation | None:
    """A Revalidation for the protocol to run, or None: the full path's.
    `where`: the snapshot, route, normalised host and cache key."""
    snap, route, _, key = where
    store = edge.store
    headers = asked.headers
    if asked.head.method != "GET" or d.fwd is not Fwd.STALE or not isinstance(store, TieredStore):
        return None
    if any(name in headers for name in _NOT_HERE):
        return None
    policy = route.policy
    now = edge.clock()
    if any(discardable(e, policy, now) for e in candidates):
        return None  # deleted first, then decided again: the full path's
    if with_stale_while_revalidate(asked.req, candidates, d, policy, now) is not d:
        return None  # served stale while a task revalidates: the full path's
    entry = d.entry
    if entry.status in (204, 304) or entry.status < 200:
        return None
    hot = store.hot_body(entry)
    if hot is None or hot.data is None:
        return None
    head = wire_head_for(store, snap, route, entry, entry.status, validated=True)
    if head is None:
        return None  # could not be written here after the 304 either
    flights = edge.flights
    if flights.get(key) is not None:
        return None  # another request is on it: the full path joins it
    cache = snap.config.cache
    flight = None
    # As _Exchange._collapsible and _collapse: the cache's own conditional
    # request is shared unless the client asked for its own (no-cache).
    if (
        cache.collapse_max_waiters
        and not asked.req.cc.has("no-cache")
        and not flights.passing(key, now)
    ):
        flight = flights.lead(key, cache.collapse_buffer, cache.directory, now)
    return Revalidation(edge, where, asked, (d, head), flight)


class WireJob:
    """A request the protocol answers from a task (a Revalidation, a
    wire_miss.Miss): it may lead its key's flight, and when it leaves the
    request to the full path after going upstream, it hands over the
    origin's answer and the flight with it (`prefetched`)."""

    __slots__ = ("edge", "flight", "prefetched")
    COUNTED = ""  # the counter the full path counts again as it takes the answer

    def __init__(self, edge: EdgeState) -> None:
        self.edge = edge
        self.flight: Flight | None = None
        # Set when it returns False: the origin's answer for the full path.
        self.prefetched: Prefetched | None = None

    async def send(self, transport: asyncio.Transport) -> bool:
        """Answer; False when the full path is to answer the request."""
        # No `finally` with an await in it: compiled, one re-raises an error
        # an earlier coroutine handled (edgeproxy/compiled.py: no await in a finally).
        try:
            answered = await self._send(transport)
        except BaseException:
            if (spilled := self._close_flight()) is not None:
                await self.edge.flights.close(spilled)
            raise
        if (spilled := self._close_flight()) is not None:
            await self.edge.flights.close(spilled)
        return answered

    def _close_flight(self) -> Flight | None:
        """Close the flight it still leads (None once handed over with the
        answer): waiters without an outcome are Released. The flight again
        when its buffer spilled to a file, which Flights.close (awaited:
        idempotent) drops; only then does a job pay for a coroutine (~2%)."""
        flight = self.flight
        if flight is not None and self.edge.flights.close_now(flight):
            return flight
        return None

    async def _send(self, transport: asyncio.Transport) -> bool:
        raise NotImplementedError

    def _hand_over(self, pre: Prefetched) -> None:
        """The full path answers, and leads the key's flight on: the waiters
        get what it makes of the answer (a changed object streams to them)."""
        if self.flight is not None:
            pre.lead((self.edge.flights, self.flight))
            self.flight = None
        self.prefetched = pre
        self.edge.counters[self.COUNTED] -= 1


class Revalidation(WireJob):
    """One revalidation the protocol runs (server._AnyMethodProtocol._wire_task)."""

    __slots__ = ("asked", "d", "head", "where")
    COUNTED = "revalidations"

    def __init__(
        self,
        edge: EdgeState,
        where: tuple[Snapshot, Route, str, str],
        asked: Asked,
        decided: tuple[Revalidate, WireHead],
        flight: Flight | None,
    ) -> None:
        super().__init__(edge)
        self.where = where
        self.asked = asked
        self.d, self.head = decided  # the decision, and its entry's head as it stands
        self.flight = flight

    async def _send(self, transport: asyncio.Transport) -> bool:
        edge, d, asked = self.edge, self.d, self.asked
        snap, route, host, key = self.where
        assert route.origin is not None
        target = asked.head.target
        edge.counters["revalidations"] += 1
        fields = upstream_fields(
            asked.headers,
            (1, 1),
            asked.client,
            (snap, route, host),
            asked.rid,
            drop=CLIENT_CONDITIONALS,
            add=d.conditional_headers,
        )
        trip = Trip()
        request_time = edge.clock()
        try:
            upstream = await send_upstream(
                edge, snap.config.origins[route.origin], ("GET", target, key), fields, None, trip
            )
        except EdgeError as e:
            times = (request_time, edge.clock())
            self._hand_over(Prefetched(("GET", target, fields), e, trip, times, asked.rid))
            return False
        response_time = edge.clock()
        if upstream.status != 304 or not validates(d.entry, upstream.headers):
            times = (request_time, response_time)
            pre = Prefetched(("GET", target, fields), upstream, trip, times, asked.rid)
            self._hand_over(pre)
            return False
        trip.release(upstream)
        edge.counters["revalidated_304"] += 1
        merged = merge_304(d.entry, upstream.headers, request_time, response_time)
        storable_now = stays_storable(asked.headers, asked.req.cc, merged, route.policy)
        kept = storable_now and await keep_merged(edge.store, merged)
        if self.flight is not None:
            self.flight.resolve(Refreshed(merged) if kept else Released(status=304))
            edge.flights.land(self.flight)
        # Unstorable now (no-store, private...): it still answers this
        # request (4.3.4), then the stored one goes. (Not in a `finally`:
        # see send.)
        try:
            answered = self._answer(transport, merged, trip)
        except BaseException:
            if not storable_now:
                await drop_merged(edge.store, merged)
            raise
        if not storable_now:
            await drop_merged(edge.store, merged)
        return answered

    def _answer(self, transport: asyncio.Transport, merged: Entry, trip: Trip) -> bool:
        """Write the freshened response (or the client's 304), as
        _Exchange._revalidate serves it, and account for it."""
        edge, asked = self.edge, self.asked
        snap, route, _, _ = self.where
        store = edge.store
        assert isinstance(store, TieredStore)
        now = edge.clock()
        fresh_for = ttl(merged, route.policy, now)
        cs = CacheStatus(fwd=Fwd.STALE, fwd_status=304, ttl=fresh_for)
        not_modified = (
            evaluate("GET", asked.headers, merged.fields, merged.date) is Precondition.NOT_MODIFIED
        )
        status = 304 if not_modified else merged.status
        # The stored body (a 304 leaves it as it is), as the store holds it
        # now: a purge while the request was upstream took it, and the full
        # path then answers (a miss) rather than serve what was purged.
        hot = store.hot_body(merged)
        if hot is None or hot.data is None:
            return False
        wire = wire_head_after_304(store, (snap, route), (self.d.entry, self.head), merged, status)
        if wire is None:
            # Not writable here after all (the 304 changed a field): the full
            # path answers; the entry is freshened, so it may well be a hit.
            log.debug("%s: revalidated, but answered by the full path", self.where[3])
            return False
        cfg = snap.config
        age = str(max(0, int(current_age(merged, now)))).encode()
        rendered = cs.render(cfg.cache.status_name)
        out = wire.render((age, rendered.encode(), asked.rid.encode()))
        body = b"" if not_modified else hot.data
        if not transport.is_closing():
            transport.write(out + body if body else out)
        counters = edge.counters
        store.hits += 1  # as TieredStore.lookup counts the full path's
        counters["revalidated_hits"] += 1  # as Responder._count_hit
        counters["wire_revalidations"] += 1  # of those, answered here (in /stats)
        if not_modified:
            counters["client_304"] += 1
        cache = outcome(cs, status, True)
        edge.outcomes[cache] += 1
        edge.metrics.served(route.name, "GET", cache, _SOURCE, len(body))
        if access_logged(snap):
            answered = (route.name, status, cache, len(body))
            asked.log(cfg.log.access_format, answered, trip)
        return True
