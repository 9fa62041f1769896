"""The wire path's misses: a small object fetched, stored and answered in
the listener's protocol.

As for revalidations (wire_revalidation.py), a miss through aiohttp's
handler pays its request and response objects, router and writer on top
of the trip upstream and the store's commit. So the protocol runs a `Miss`
in a task when `miss` here takes the request (a plain GET the hot tier
knows nothing of, on a caching route, with no conditionals or Range of the
client's and no fill for the key under way), and the task does what
proxy._Exchange and fill.Relay do for it, through the same functions:
the store's lookup, `decide` (RFC 9111 section 4: a miss), the flight the
key's other requests collapse onto, `upstream_fields` and `send_upstream`,
`compression_plan`, `storable` (section 3), `stored_entry`, the store's
writer (written, then committed: the client gets the response once the
store has it, as fill.py holds back the last chunk), the relayed head
(`response_headers`, Cache-Status, the route's edits) and proxy.handle's
accounting.

It finishes only the simple case: a 200 with a Content-Length no larger
than the hot tier's largest object, stored as it came (no compression),
with a head aiohttp would send as is. Anything else is the full path's:
the request is handed to aiohttp's handler with what was done for it, the
store's lookup (so it is not counted twice) and, once the request has gone
upstream, the origin's answer or failure and the key's flight
(`upstream.Prefetched`), which the exchange takes instead of sending the
request again.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from multidict import CIMultiDict

from edgeproxy import compress
from edgeproxy.accesslog import REQUEST_ID
from edgeproxy.bodies import CHUNK
from edgeproxy.collapse import Streaming
from edgeproxy.config import Route
from edgeproxy.errors import EdgeError
from edgeproxy.fill import store_log_level, stored_entry
from edgeproxy.forwarding import storable_fields, via_value
from edgeproxy.h1client import OriginResponse, UpstreamResponse
from edgeproxy.http.accept_encoding import request_coding
from edgeproxy.http.cache_control import response_cache_control
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.fields import Headers
from edgeproxy.http.ranges import ACCEPT_RANGES
from edgeproxy.metrics import byte_source, outcome
from edgeproxy.policy.decide import Fetch, decide
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import ttl
from edgeproxy.policy.storable import storable
from edgeproxy.policy.transform import compression_plan, transformed_fields
from edgeproxy.policy.validation import CLIENT_CONDITIONALS
from edgeproxy.proxy import access_logged
from edgeproxy.serving import finish_fields
from edgeproxy.state import EdgeState, Snapshot
from edgeproxy.store.base import BodyWriter, StoreError, health_of
from edgeproxy.store.tiered import TieredStore
from edgeproxy.upstream import Prefetched, Trip, send_upstream, upstream_fields
from edgeproxy.wire_head import response_head
from edgeproxy.wire_revalidation import Asked, WireJob

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path

_SOURCE = byte_source(False, True)  # as the full path counts a relayed body
# Left to the full path: the client's own conditionals (its miss goes
# upstream uncollapsed, with them) and a Range (fetched whole, then cut).
_NOT_HERE = (*CLIENT_CONDITIONALS, "range")
_VERSION = (1, 1)


def miss(edge: EdgeState, where: tuple[Snapshot, Route, str, str], asked: Asked) -> Miss | None:
    """A Miss for the protocol to run, or None: the full path's. `where`:
    the snapshot, route, normalised host and cache key."""
    key = where[3]
    headers = asked.headers
    if asked.head.method != "GET" or not isinstance(edge.store, TieredStore):
        return None
    if any(name in headers for name in _NOT_HERE):
        return None
    if edge.flights.get(key) is not None:
        return None  # a fill under way: the full path joins it
    return Miss(edge, where, asked)


def _arrived(upstream: UpstreamResponse) -> bool:
    """Whether the whole response is in already (h1client's; aiohttp's don't say)."""
    return isinstance(upstream, OriginResponse) and upstream.arrived


class Miss(WireJob):
    """One miss the protocol runs (server._AnyMethodProtocol._wire_task)."""

    __slots__ = ("asked", "looked_up", "where")
    COUNTED = "misses"

    def __init__(
        self, edge: EdgeState, where: tuple[Snapshot, Route, str, str], asked: Asked
    ) -> None:
        super().__init__(edge)
        self.where = where
        self.asked = asked
        # Set when it returns False: the store's lookup, for the full path.
        self.looked_up: tuple[str, list[Entry]] | None = None

    async def _send(self, transport: asyncio.Transport) -> bool:
        edge, asked = self.edge, self.asked
        snap, route, host, key = self.where
        store = edge.store
        found = await store.lookup(key)
        self.looked_up = (key, found)
        if found:
            return False  # stored after all (another worker, or evicted from memory)
        now = edge.clock()
        d = decide(asked.req, [], route.policy, now)
        if not isinstance(d, Fetch) or d.fwd is not Fwd.URI_MISS:
            return False  # only-if-cached, say
        flights = edge.flights
        if flights.get(key) is not None or flights.passing(key, now):
            return False  # a fill began meanwhile, or the key is hit-for-pass
        cache = snap.config.cache
        # As _Exchange._collapsible and _collapse: a plain GET's miss is shared
        # unless the client asked for an answer of its own (no-cache).
        if cache.collapse_max_waiters and not asked.req.cc.has("no-cache"):
            self.flight = flights.lead(key, cache.collapse_buffer, cache.directory, now)
        edge.counters["misses"] += 1
        fields = upstream_fields(
            asked.headers, _VERSION, asked.client, (snap, route, host), asked.rid
        )
        assert route.origin is not None
        trip = Trip()
        request_time = edge.clock()
        request = ("GET", asked.head.target, fields)
        try:
            upstream = await send_upstream(
                edge,
                snap.config.origins[route.origin],
                ("GET", request[1], key),
                fields,
                None,
                trip,
            )
        except EdgeError as e:
            self._hand_over(Prefetched(request, e, trip, (request_time, edge.clock()), asked.rid))
            return False
        response_time = edge.clock()
        planned = self._plan(upstream, (request_time, response_time))
        if planned is None:
            times = (request_time, response_time)
            self._hand_over(Prefetched(request, upstream, trip, times, asked.rid))
            return False
        entry, head, cs = planned
        return await self._fill(transport, (upstream, trip), entry, (head, cs))

    def _plan(
        self, upstream: UpstreamResponse, times: tuple[float, float]
    ) -> tuple[Entry, bytes, CacheStatus] | None:
        """The entry, response head and Cache-Status, as fill.Relay.relay
        would store and send this response, if it is the simple case."""
        edge, asked = self.edge, self.asked
        snap, route, _, key = self.where
        store = edge.store
        assert isinstance(store, TieredStore)
        policy, cfg = route.policy, snap.config
        length = upstream.content_length
        if upstream.status != 200 or length is None:
            return None
        if length > store.max_object or length > policy.max_object_size:
            return None
        plan = compression_plan(
            200,
            upstream.headers,
            request_coding(asked.headers),
            cfg.cache.compress,
            compress.available(),
            policy.targeted,
        )
        if plan.coding is not None:
            return None  # compressed as it streams: the full path's
        fields: Headers = upstream.headers
        if plan.vary:
            fields = transformed_fields(fields, plan)  # as Relay._relayed_fields
        resp_cc = response_cache_control(fields, policy.targeted)
        verdict = storable("GET", asked.headers, asked.req.cc, 200, fields, resp_cc, policy)
        if not verdict.ok or not health_of(store).writable:
            return None
        # Hop-by-hop fields and Content-Length out once, for the store and the
        # client alike (storable_fields and response_headers strip the same).
        kept = storable_fields(fields)
        entry = stored_entry(
            (key, route, cfg), (200, kept, upstream.headers), asked.headers, times, plan
        )
        cs = CacheStatus(
            fwd=Fwd.URI_MISS, fwd_status=200, stored=True, ttl=ttl(entry, policy, times[1])
        )
        headers = CIMultiDict(kept)
        headers.add("Via", via_value(_VERSION, cfg.via))  # as response_headers
        if "date" not in headers:
            headers["Date"] = format_http_date(times[1])
        headers["Accept-Ranges"] = ACCEPT_RANGES  # stored: we answer its ranges (14.3)
        headers["Cache-Status"] = cs.render(cfg.cache.status_name)
        headers[REQUEST_ID] = asked.rid
        finish_fields(headers, snap, route, _VERSION, via=False)
        head = response_head(headers, 200, length)
        return None if head is None else (entry, head, cs)

    async def _fill(
        self,
        transport: asyncio.Transport,
        got: tuple[UpstreamResponse, Trip],
        entry: Entry,
        answer: tuple[bytes, CacheStatus],
    ) -> bool:
        """fill.Relay.relay's pump for the simple case: the head, then the
        body as it arrives, to the client, the flight's waiters and the
        store's writer; the last chunk is held back until the commit (a
        client with the whole response can count on the next request being
        a hit). A client that leaves stops it unless waiters want the rest."""
        upstream, trip = got
        key = self.where[3]
        length = upstream.content_length
        flight = self.flight
        if flight is not None:
            flight.resolve(Streaming(entry, length))
        writer: BodyWriter | None = self.edge.store.open_writer(key)
        held = b""
        sent = 0  # body bytes written to the client, for the access log
        # A body-less one is complete with its head: that waits for the commit.
        # So does the head of a body that came with it (most small ones): the
        # head goes with the first chunk written, for a body of one chunk
        # with it after the commit, in one write, one packet.
        head = answer[0]
        if length and not _arrived(upstream) and not transport.is_closing():
            transport.write(head)
            head = b""
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                writer = await self._write(writer, chunk, key)
                if flight is not None:
                    await flight.append(chunk)
                if writer is not None and writer.size == length:
                    held = chunk  # the last one: sent after the commit
                elif not transport.is_closing():
                    transport.write(head + chunk if head else chunk)
                    head = b""
                    sent += len(chunk)
                elif flight is None or not flight.waiters:
                    return await self._abandon(writer, upstream, trip)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
            log.warning("origin broke off %s mid-body: %s", key, e)
            transport.abort()  # as fill.py: a silent short response would look complete
            return await self._abandon(writer, upstream, trip)
        trip.release(upstream)
        if flight is not None:
            flight.finish()  # waiters are done; the store commit is ours
        if writer is not None:
            await self._commit(writer, entry, key)
        if (head or held) and not transport.is_closing():
            transport.write(head + held)
            sent += len(held)
        self._account(answer[1], sent, trip)
        return True

    async def _write(self, writer: BodyWriter | None, chunk: bytes, key: str) -> BodyWriter | None:
        if writer is None:
            return None
        try:
            await writer.write(chunk)
        except StoreError as e:
            log.log(store_log_level(e), "not storing %s: %s", key, e)
            await writer.abort()
            return None
        return writer

    async def _abandon(
        self, writer: BodyWriter | None, upstream: UpstreamResponse, trip: Trip
    ) -> bool:
        """Nothing partial is stored; the flight's waiters are told as the
        flight closes (a broken body: they drop their clients too)."""
        if writer is not None:
            await writer.abort()
        trip.release(upstream)
        return True

    async def _commit(self, writer: BodyWriter, entry: Entry, key: str) -> None:
        try:
            await writer.commit(entry)
        except StoreError as e:
            log.log(store_log_level(e), "not stored %s: %s", key, e)
            return
        self.edge.counters["stored"] += 1

    def _account(self, cs: CacheStatus, nbytes: int, trip: Trip) -> None:
        """As proxy.handle accounts for a relayed response."""
        edge, asked = self.edge, self.asked
        snap, route, _, _ = self.where
        cache = outcome(cs, 200, False)
        edge.outcomes[cache] += 1
        edge.metrics.served(route.name, "GET", cache, _SOURCE, nbytes)
        edge.counters["wire_misses"] += 1  # answered here (in /stats)
        if access_logged(snap):
            asked.log(snap.config.log.access_format, (route.name, 200, cache, nbytes), trip)
