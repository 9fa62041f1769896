"""The miss path: relaying an origin response to the client while teeing it
into the store and to collapsed waiters, with edge compression and a
Range miss answered from the whole object.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy import compress
from edgeproxy.bodies import CHUNK
from edgeproxy.collapse import Flight, Released, Streaming
from edgeproxy.config import Config, Route
from edgeproxy.forwarding import response_headers, storable_fields, via_value
from edgeproxy.h1client import UpstreamResponse
from edgeproxy.http.accept_encoding import request_coding
from edgeproxy.http.cache_control import response_cache_control
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.fields import Headers, combined
from edgeproxy.http.range_slicer import RangeSlicer
from edgeproxy.http.ranges import (
    ACCEPT_RANGES,
    IGNORE,
    NotPartial,
    RangesSpecifier,
    evaluate_range,
    parse_range,
    unsatisfied_content_range,
)
from edgeproxy.http.surrogate import surrogate_keys
from edgeproxy.http.vary import secondary_key, vary_names
from edgeproxy.policy.decide import Serve
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import ttl
from edgeproxy.policy.invalidation import invalidation_targets
from edgeproxy.policy.stale import is_error_status, stale_if_error_status, stale_on_error
from edgeproxy.policy.storable import storable
from edgeproxy.policy.transform import (
    AS_IS,
    TransformPlan,
    compression_plan,
    transformed_etag,
    transformed_fields,
    upstream_if_none_match,
)
from edgeproxy.responses import NoClient
from edgeproxy.serving import Responder, range_parts
from edgeproxy.store.base import BodyWriter, Degraded, StoreError, health_of
from edgeproxy.upstream_client import UpstreamClient

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path


# Why a response was not stored, when the response itself is the reason: its
# key then skips collapsing for a while (hit-for-pass). Not for reasons of
# the leading request (no-store, Authorization) nor origin errors (5xx), whose
# next answer may well be shareable.
_PASS_REASONS = frozenset(
    {"no-store", "private", "set-cookie", "vary-star", "no-freshness", "must-understand", "too-big"}
)


def store_log_level(e: StoreError) -> int:
    # A degraded store logged its state change once: not again per request.
    return logging.DEBUG if isinstance(e, Degraded) else logging.WARNING


class Relay(Responder, UpstreamClient):
    """Relays origin responses, storing what may be stored."""

    def _range_fill(self) -> bool:
        """Is this a client GET with a usable byte Range (RFC 9110 section 14.2)
        that a miss answers from the whole object instead of forwarding?"""
        if not self.client or self.req.method != "GET" or self.request.body_exists:
            return False
        return isinstance(parse_range(combined(self.request.headers, "range")), RangesSpecifier)

    def _stale_on_error(self) -> Serve | None:
        # The stored response for an origin error; also the exchange's stale-if-error.
        if self.decision is None or not self.client:
            return None
        return stale_on_error(
            self.req, self.candidates, self.decision, self.policy, self.edge.clock()
        )

    async def relay(
        self,
        upstream: UpstreamResponse,
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
                    # A body-less response being stored is complete for the
                    # client with its head: that head waits for the commit
                    # (write_eof below), as a body's last chunk does (`_pump`).
                    bodiless = length == 0 or upstream.status == 204
                    resp = await self._send_head(
                        upstream.status,
                        headers,
                        cs,
                        length=length,
                        coalesce=writer is not None and bodiless,
                    )
                else:
                    slicer, resp = sliced
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                if flight is None or not flight.waiters:
                    raise
                # Gone before the head: the fill goes on for the waiters.
                self._client_gone = True
                resp = NoClient()
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
                    log.log(store_log_level(e), "not stored %s: %s", self.key, e)
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

    def _transform_plan(self, upstream: UpstreamResponse, cacheable: bool) -> TransformPlan:
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

    def _relayed_fields(self, upstream: UpstreamResponse, plan: TransformPlan) -> Headers:
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
        size, parts, trailer = range_parts(headers, spans, length, headers.get("Content-Type"))
        resp = await self._send_head(206, headers, cs, length=size)
        return RangeSlicer(parts, trailer), resp

    def _plan_store(
        self,
        upstream: UpstreamResponse,
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
        entry = stored_entry(
            (self.key, self.route, self.cfg),
            (upstream.status, storable_fields(fields_in), upstream.headers),
            self.request.headers,
            (request_time, response_time),
            plan,
        )
        if not health_of(self.edge.store).writable:
            return None, None, "store-degraded"  # pass through; the store retries later
        return self.edge.store.open_writer(self.key), entry, ""

    async def _pump(
        self,
        upstream: UpstreamResponse,
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
                                log.log(store_log_level(e), "not storing %s: %s", self.key, e)
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

    async def _invalidate(self, upstream: UpstreamResponse) -> None:
        """RFC 9111 section 4.4, with targets turned into our keys."""
        for target in invalidation_targets(
            self.request.method, upstream.status, self.key, upstream.headers
        ):
            with contextlib.suppress(StoreError):
                await self.edge.store.delete(target)


def stored_entry(
    where: tuple[str, Route, Config],
    response: tuple[int, CIMultiDict[str], Headers],
    request: Headers,
    times: tuple[float, float],
    plan: TransformPlan,
) -> Entry:
    """The entry a relayed response is stored as (its body size comes at the
    commit): `where` the key, route and config; `response` its status, its
    fields as kept (`storable_fields` of those relayed: the entry takes this
    very dict, with a Date added if it has none) and as the origin sent them
    (for the surrogate keys); `request` the client's fields (Vary's
    secondary key, RFC 9111 section 4.1); `times` request and response time
    (4.2.3)."""
    key, route, cfg = where
    status, fields, origin_fields = response
    request_time, response_time = times
    if "date" not in fields:
        fields["Date"] = format_http_date(response_time)  # RFC 9110 section 6.6.1
    names = vary_names(fields)
    return Entry(
        key=key,
        status=status,
        fields=CIMultiDictProxy(fields),
        request_time=request_time,
        response_time=response_time,
        vary=names,
        secondary=secondary_key(request, names) or (),
        tags=surrogate_keys(origin_fields, cfg.cache.tag_headers),
        route=route.name,
        targeted=route.policy.targeted,
        coding=plan.marker,
    )


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
    upstream: UpstreamResponse, encoder: compress.Encoder | None
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
