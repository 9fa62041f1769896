"""Answering from the store: stored responses, their ranges, and every
response head the edge sends (fields, Via, Cache-Status, templates).
"""

from __future__ import annotations

import logging
import secrets
from typing import cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from edgeproxy.accesslog import REQUEST_ID
from edgeproxy.bodies import CHUNK, ShortBody, close_body, send_span
from edgeproxy.collapse import Flight, FlightBroken
from edgeproxy.config import Route
from edgeproxy.errors import EdgeError
from edgeproxy.exchange import ExchangeState
from edgeproxy.forwarding import via_value
from edgeproxy.http.cache_status import CacheStatus, proxy_status
from edgeproxy.http.conditionals import Precondition
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.ranges import (
    ACCEPT_RANGES,
    IGNORE,
    ByteRange,
    NotPartial,
    Part,
    content_range,
    evaluate_range,
    multipart_content_type,
    multipart_length,
    multipart_parts,
    multipart_trailer,
    unsatisfied_content_range,
)
from edgeproxy.policy.decide import Serve
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.response import not_modified_fields, reuse_fields
from edgeproxy.policy.stale import SIE_DETAIL
from edgeproxy.responses import CoalescedResponse, NoClient, RelayedResponse, text_response
from edgeproxy.routing import apply_edits
from edgeproxy.state import Snapshot
from edgeproxy.store.base import Body

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path


class Responder(ExchangeState):
    """Answers from stored responses, and the heads of all responses."""

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
                whole = [Part(b"", 0, body.size - 1)]
                if not await self._send_body(resp, body, whole):
                    return resp
        finally:
            if body is not None:
                await close_body(body)
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
            await close_body(body)
            refused = self.respond_text(416, "Range Not Satisfiable\n", cs)
            refused.headers["Content-Range"] = unsatisfied_content_range(length)
            refused.headers["Accept-Ranges"] = ACCEPT_RANGES
            return refused
        # A 206 keeps the stored fields (Date, Cache-Control, ETag, Expires,
        # Content-Location, Vary); its Content-Length is the message's (15.3.7).
        headers = reuse_fields(entry, d.age, validated)
        headers["Accept-Ranges"] = ACCEPT_RANGES
        headers.popall("Content-Range", None)
        size, plan, trailer = range_parts(headers, spans, length, entry.fields.get("Content-Type"))
        try:
            resp = await self._send_head(206, headers, cs, length=size, via=True)
            if not await self._send_body(resp, body, plan, trailer):
                return resp
        finally:
            await close_body(body)
        await resp.write_eof()
        return resp

    async def _send_body(
        self, resp: web.StreamResponse, body: Body, plan: list[Part], trailer: bytes = b""
    ) -> bool:
        """The parts of a stored body after its head (each a part header and a
        span); False when the response can't be ended: the client left, or
        the body was short (the connection is then dropped)."""
        try:
            for header, start, end in plan:
                if header:
                    await resp.write(header)
                await send_span(self.request, resp, body, start, end)
            if trailer:
                await resp.write(trailer)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return False
        except ShortBody:
            self._short_body(resp)
            return False
        return True

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
        coalesce: bool = False,
    ) -> web.StreamResponse:
        """Send status and fields. `via`: append our Via (RFC 9110 section 7.6.3)
        to a response from storage; relayed ones got it in `response_headers`.
        `coalesce`: hold the head until the first body write or write_eof."""
        if not self.client:
            return NoClient()
        self.cache_status, self.from_store = cs, via
        headers["Cache-Status"] = cs.render(self.cfg.cache.status_name)
        headers[REQUEST_ID] = self.request_id
        self._finish_fields(headers, via)
        return await self._start(status, headers, length, coalesce)

    def _finish_fields(self, headers: CIMultiDict[str], via: bool) -> None:
        finish_fields(headers, self.snap, self.route, self._version(), via)

    async def _start(
        self, status: int, headers: CIMultiDict[str], length: int | None, coalesce: bool = False
    ) -> web.StreamResponse:
        """`coalesce`: the head waits for the body's first write (one send for
        both); only when that write goes through the response, not sendfile."""
        resp = (CoalescedResponse if coalesce else RelayedResponse)(status=status, headers=headers)
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
            return NoClient()
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
        return stored_template(
            self.edge.store, self.snap, self.route, self._version(), entry, status, validated
        )

    def respond_text(self, status: int, text: str, cs: CacheStatus) -> web.Response:
        self.cache_status, self.from_store = cs, False
        resp = text_response(status, text)
        # The edge's own clock (injected, like every other Date it sends),
        # not the one aiohttp would read (RFC 9110 section 6.6.1).
        resp.headers["Date"] = format_http_date(self.edge.clock())
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


def finish_fields(
    headers: CIMultiDict[str], snap: Snapshot, route: Route, version: tuple[int, int], via: bool
) -> None:
    """What every response gets after its own fields: strips, Via, route edits."""
    cache = snap.config.cache
    if cache.strip_targeted:
        # Directives meant for us, not for caches downstream (RFC 9213 section 3 MAY).
        for name in route.policy.targeted:
            headers.popall(name, None)
    if cache.strip_tags:
        # Surrogate keys are the origin's purge handles, not the client's business.
        for name in cache.tag_headers:
            headers.popall(name, None)
    if via:
        headers.add("Via", via_value(version, snap.config.via))
    if route.response_headers:
        apply_edits(headers, route.response_headers)


def stored_template(
    store: object,
    snap: Snapshot,
    route: Route,
    version: tuple[int, int],
    entry: Entry,
    status: int,
    validated: bool,
) -> CIMultiDict[str] | None:
    """A stored response's head fields with Age, Cache-Status and the request
    id as placeholders, kept with the hot entry per snapshot, route, HTTP
    version and kind; None when the route's edits or strips name one of
    those (they must then be applied after them, in order)."""
    templates = prebuilt_for(store, entry)
    slot = (id(snap), id(route), version, status, validated)
    kept = templates.get(slot)
    if kept is not None and kept[0] is snap and kept[1] is route:
        return cast("CIMultiDict[str] | None", kept[2])
    headers: CIMultiDict[str] | None = _stored_fields(entry, status, 0, validated)
    assert headers is not None
    headers["Cache-Status"] = ""
    headers[REQUEST_ID] = ""
    finish_fields(headers, snap, route, version, via=True)
    if not _TEMPLATE_FIELDS.isdisjoint(name.lower() for name in _edited_names(snap, route)):
        headers = None
    keep(templates, slot, (snap, route, headers))
    return headers


def prebuilt_for(store: object, entry: Entry) -> Templates:
    """The hot entry's table of prebuilt heads (TieredStore.prebuilt), or a
    fresh one nobody keeps when the store has no hot tier."""
    prebuilt = getattr(store, "prebuilt", None)
    return {} if prebuilt is None else cast(Templates, prebuilt(entry, _new_templates))


def keep(
    templates: Templates, slot: tuple[object, ...], value: tuple[Snapshot, Route, object]
) -> None:
    if len(templates) >= 8:  # one per route, version and kind; reloads add more
        templates.clear()
    templates[slot] = value


def _edited_names(snap: Snapshot, route: Route) -> list[str]:
    """Every field name the route's edits or the strips touch."""
    edits = route.response_headers
    cache = snap.config.cache
    names = [*edits.remove, *(n for n, _ in edits.set), *(n for n, _ in edits.add)]
    if cache.strip_targeted:
        names += route.policy.targeted
    if cache.strip_tags:
        names += cache.tag_headers
    return names


# Fields a stored response's head sets per request (the rest is a template).
_TEMPLATE_FIELDS = frozenset({"age", "cache-status", REQUEST_ID.lower()})

# Per hot entry: slot -> (snapshot, route, what was built for them).
Templates = dict[tuple[object, ...], tuple[Snapshot, Route, object]]


def _new_templates(entry: Entry) -> Templates:
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


def range_parts(
    headers: CIMultiDict[str], spans: list[ByteRange], length: int, ctype: str | None
) -> tuple[int, list[Part], bytes]:
    """A 206's body plan for `spans` of `length` bytes (RFC 9110 section 15.3.7):
    sets its Content-Range (one part) or multipart Content-Type (`ctype`: the
    representation's) in `headers`; returns the body size, parts and trailer."""
    if len(spans) == 1:
        ((start, end),) = spans
        headers["Content-Range"] = content_range(start, end, length)
        return end - start + 1, [Part(b"", start, end)], b""
    # Several parts: multipart/byteranges (14.6, 15.3.7.2), a fresh
    # boundary per response so the content can't contain it.
    boundary = secrets.token_hex(16)
    headers["Content-Type"] = multipart_content_type(boundary)
    size = multipart_length(spans, length, ctype, boundary)
    return size, multipart_parts(spans, length, ctype, boundary), multipart_trailer(boundary)


def _reason(status: int) -> str:
    return {
        400: "Bad Request",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Error")
