"""The public listener's handler: straight-line glue over one policy decision.

route -> key -> lookup -> decide -> (origin) -> store -> respond. Every RFC
rule lives in policy/ and http/; this module only moves bytes and matches on
the decision type.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import assert_never
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy import origin
from edgeproxy.cachekey import route_key
from edgeproxy.config import Route
from edgeproxy.errors import EdgeError
from edgeproxy.forwarding import request_headers, response_headers, storable_fields, via_value
from edgeproxy.http.cache_control import request_cache_control, response_cache_control
from edgeproxy.http.cache_status import CacheStatus, Fwd, proxy_status
from edgeproxy.http.conditionals import Precondition, evaluate
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.vary import secondary_key, vary_names
from edgeproxy.policy.decide import (
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
from edgeproxy.policy.storable import storable
from edgeproxy.policy.validation import CLIENT_CONDITIONALS, merge_304, validates
from edgeproxy.routing import apply_edits, bare_host, select_route
from edgeproxy.state import EDGE, EdgeState, Snapshot
from edgeproxy.store.base import BodyWriter, StoreError

log = logging.getLogger("edgeproxy.proxy")

CHUNK = 65536


class UpstreamBroke(Exception):
    """The origin failed mid-body: the client connection must be aborted."""


async def handle(request: web.Request) -> web.StreamResponse:
    edge = request.app[EDGE]
    snap = edge.snapshot  # read once: in-flight requests keep their rules
    target = request.raw_path
    host = request.headers.get("Host")
    if not target.startswith("/"):
        host, target = _absolute_form(target, host)
    if not host:
        return _text(400, "Bad Request: missing Host header (RFC 9112 section 3.2)\n")
    cfg = snap.config
    path = target.partition("?")[0]
    route = select_route(cfg.routes, cfg.default_route, host, path, request.method)
    if route is None:
        return _text(404, f"Not Found: no route matches {bare_host(host)}{path}\n")
    if route.origin is None:
        return _text(404, f"Not Found: route {route.name!r} has no origin\n")
    ctx = _Exchange(request, edge, snap, route, host, target)
    try:
        return await ctx.run()
    except EdgeError as e:
        log.warning("%s %s: %s", request.method, ctx.key, e)
        return ctx.error_response(e)


def _absolute_form(target: str, host: str | None) -> tuple[str | None, str]:
    """Host and origin-form target of an absolute-form request (RFC 9112 section 3.2.2).

    The target's authority wins over any Host field; anything else that isn't
    origin-form is passed on as received.
    """
    try:
        parts = urlsplit(target)
    except ValueError:
        return host, target
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return host, target
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
    ) -> None:
        self.request = request
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

    async def run(self) -> web.StreamResponse:
        method = self.request.method
        if not self.route.cache:
            return await self.forward(Fwd.BYPASS, cacheable=False)
        candidates = await self.edge.store.lookup(self.key) if method in ("GET", "HEAD") else []
        decision = decide(self.req, candidates, self.policy, self.edge.clock())
        match decision:
            case Serve():
                served = await self.serve_stored(decision)
                if served is not None:
                    return served
                return await self.forward(Fwd.URI_MISS, cacheable=True)
            case Fetch(fwd=fwd):
                return await self.forward(fwd, cacheable=True)
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

    # -- answering from the store -----------------------------------------

    async def serve_stored(
        self, d: Serve, status: CacheStatus | None = None, validated: bool = False
    ) -> web.StreamResponse | None:
        """Answer from a stored response; None when its body is gone (a miss)."""
        entry = d.entry
        cs = status or CacheStatus(hit=True, ttl=d.ttl)
        if d.outcome is Precondition.NOT_MODIFIED:
            self.edge.counters["client_304"] += 1
            self._count_hit(cs)
            headers = not_modified_fields(entry, d.age)
            return await self._send_head(304, headers, cs, via=True)
        if d.outcome is Precondition.FAILED:
            return self.respond_text(412, "Precondition Failed\n", cs)
        body = None
        if self.request.method != "HEAD":
            body = await self.edge.store.open_body(entry)
            if body is None:
                return None
        self._count_hit(cs)
        headers = reuse_fields(entry, d.age, validated)
        resp = await self._send_head(entry.status, headers, cs, length=entry.body_size, via=True)
        if body is not None:
            try:
                async for chunk in self.edge.store.read_body(body, CHUNK):
                    await resp.write(chunk)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                return resp
        await resp.write_eof()
        return resp

    def _count_hit(self, cs: CacheStatus) -> None:
        self.edge.counters["hits" if cs.hit else "revalidated_hits"] += 1

    # -- going upstream -----------------------------------------------------

    async def revalidate(self, d: Revalidate) -> web.StreamResponse:
        """Validate the stored response upstream (RFC 9111 section 4.3)."""
        self.edge.counters["revalidations"] += 1
        self.fwd = d.fwd
        clock = self.edge.clock
        request_time = clock()
        headers = self._upstream_headers(drop=CLIENT_CONDITIONALS, add=d.conditional_headers)
        upstream = await self._send_upstream("GET", headers, with_body=False)
        response_time = clock()
        if upstream.status == 304:
            upstream.release()
            if validates(d.entry, upstream.headers):
                self.edge.counters["revalidated_304"] += 1
                merged = merge_304(d.entry, upstream.headers, request_time, response_time)
                await self._keep_merged(merged)
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
            return await self.forward(d.fwd, cacheable=True)
        return await self.relay(upstream, d.fwd, request_time, response_time, cacheable=True)

    async def _keep_merged(self, merged: Entry) -> None:
        """Store the freshened response, unless the 304 made it unstorable
        (e.g. it added no-store or private): then the old one goes too."""
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
                await self.edge.store.update(merged)
            else:
                await self.edge.store.delete_variant(merged)
        except StoreError as e:
            log.warning("could not refresh %s after 304: %s", self.key, e)

    async def forward(self, fwd: Fwd, cacheable: bool) -> web.StreamResponse:
        self.fwd = fwd
        if fwd in (Fwd.URI_MISS, Fwd.VARY_MISS):
            self.edge.counters["misses"] += 1
        request_time = self.edge.clock()
        upstream = await self._send_upstream(
            self.request.method, self._upstream_headers(), with_body=True
        )
        response_time = self.edge.clock()
        return await self.relay(upstream, fwd, request_time, response_time, cacheable)

    def _upstream_headers(
        self, drop: tuple[str, ...] = (), add: list[tuple[str, str]] | None = None
    ) -> CIMultiDict[str]:
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
        if self.route.request_headers:
            apply_edits(headers, self.route.request_headers)
        return headers

    async def _send_upstream(
        self, method: str, headers: CIMultiDict[str], with_body: bool
    ) -> aiohttp.ClientResponse:
        body = None
        if with_body and self.request.body_exists:
            body = self.request.content.iter_chunked(CHUNK)
        elif not with_body:
            headers.popall("content-length", None)
        self.edge.counters["origin_requests"] += 1
        server = self.edge.next_server(self.origin)
        return await origin.send(
            self.edge.session, self.origin, method, self.target, headers, body, server
        )

    async def relay(
        self,
        upstream: aiohttp.ClientResponse,
        fwd: Fwd,
        request_time: float,
        response_time: float,
        cacheable: bool,
    ) -> web.StreamResponse:
        """Stream an origin response to the client, teeing it into the store."""
        policy = self.policy
        writer: BodyWriter | None = None
        try:
            writer, entry = self._plan_store(upstream, request_time, response_time, cacheable)
            cs = CacheStatus(
                fwd=fwd,
                fwd_status=upstream.status,
                stored=writer is not None,
                # Remaining freshness, net of any age it arrived with (RFC 9211 2.7).
                ttl=ttl(entry, policy, response_time) if entry is not None else None,
            )
            headers = response_headers(
                upstream.headers, version=self._version(), pseudonym=self.cfg.via
            )
            if "date" not in headers:
                headers["Date"] = format_http_date(response_time)
            length = upstream.content_length
            if self.request.method == "HEAD" or upstream.status in (204, 304):
                length = None if upstream.status in (204, 304) else length
            resp = await self._send_head(upstream.status, headers, cs, length=length)
            if self.request.method == "HEAD":
                await resp.write_eof()
                return resp
            complete, writer = await self._pump(upstream, resp, writer, policy.max_object_size)
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
                    log.warning("not stored %s: %s", self.key, e)
            if complete:
                await resp.write_eof()
            await self._invalidate(upstream)
            return resp
        finally:
            if writer is not None:
                # Any other way out (a short body, an exception, cancellation)
                # leaves nothing behind.
                await writer.abort()
            upstream.release()

    def _plan_store(
        self,
        upstream: aiohttp.ClientResponse,
        request_time: float,
        response_time: float,
        cacheable: bool,
    ) -> tuple[BodyWriter | None, Entry | None]:
        policy = self.policy
        if not cacheable:
            return None, None
        resp_cc = response_cache_control(upstream.headers, policy.targeted)
        verdict = storable(
            self.req.method,
            self.request.headers,
            self.req.cc,
            upstream.status,
            upstream.headers,
            resp_cc,
            policy,
        )
        if not verdict.ok:
            return None, None
        length = upstream.content_length
        if length is not None and length > policy.max_object_size:
            return None, None
        fields = storable_fields(upstream.headers)
        if "date" not in fields:
            fields["Date"] = format_http_date(response_time)  # RFC 9110 section 6.6.1
        names = vary_names(upstream.headers)
        entry = Entry(
            key=self.key,
            status=upstream.status,
            fields=CIMultiDictProxy(fields),
            request_time=request_time,
            response_time=response_time,
            vary=names,
            secondary=secondary_key(self.request.headers, names) or (),
            targeted=policy.targeted,
        )
        return self.edge.store.open_writer(self.key), entry

    async def _pump(
        self,
        upstream: aiohttp.ClientResponse,
        resp: web.StreamResponse,
        writer: BodyWriter | None,
        max_size: int,
    ) -> tuple[bool, BodyWriter | None]:
        """Copy the body: (clean end, the writer still worth committing).

        A writer dropped on the way (too big, store error) is already aborted;
        on an unclean end the caller aborts the one returned. The client's
        connection is aborted when the origin fails.
        """
        chunks: AsyncIterator[bytes] = upstream.content.iter_chunked(CHUNK)
        try:
            async for chunk in chunks:
                if writer is not None:
                    if writer.size + len(chunk) > max_size:
                        await writer.abort()  # too big to keep: pass it through
                        writer = None
                    else:
                        try:
                            await writer.write(chunk)
                        except StoreError as e:
                            log.warning("not storing %s: %s", self.key, e)
                            await writer.abort()
                            writer = None
                try:
                    await resp.write(chunk)
                except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                    return False, writer  # the client left: nothing partial is stored
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
            log.warning("origin broke off %s mid-body: %s", self.key, e)
            # A silent short 200 would look complete: drop the connection.
            if self.request.transport is not None:
                self.request.transport.abort()
            return False, writer
        return True, writer

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
        headers["Cache-Status"] = cs.render(self.cfg.cache.status_name)
        if via:
            headers.add("Via", via_value(self._version(), self.cfg.via))
        if self.route.response_headers:
            apply_edits(headers, self.route.response_headers)
        resp = RelayedResponse(status=status, headers=headers)
        if length is not None and status not in (204, 304):
            resp.content_length = length
        await resp.prepare(self.request)
        return resp

    def respond_text(self, status: int, text: str, cs: CacheStatus) -> web.Response:
        resp = _text(status, text)
        resp.headers["Cache-Status"] = cs.render(self.cfg.cache.status_name)
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


class RelayedResponse(web.StreamResponse):
    """A response that carries only the fields we chose.

    aiohttp fills in Server and Content-Type when absent; a proxy must not
    invent either (RFC 9110 sections 8.3 and 10.2.4: they describe the origin
    and its content), so both are taken out again if we didn't set them.
    """

    async def _prepare_headers(self) -> None:
        invented = [name for name in ("Server", "Content-Type") if name not in self._headers]
        await super()._prepare_headers()
        for name in invented:
            self._headers.popall(name, None)


def _reason(status: int) -> str:
    return {502: "Bad Gateway", 504: "Gateway Timeout", 400: "Bad Request"}.get(status, "Error")


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")
