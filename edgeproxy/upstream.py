"""Sending a request upstream: its fields, a server of the origin's pool
(one retry on another), passive health, releasing the server.

The functions serve both shells: the exchange (upstream_client.py,
aiohttp's handler) and the wire path's revalidations (wire_revalidation.py), which
hands a response it will not answer itself over to the exchange as a
`Prefetched` one instead of sending the request twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from multidict import CIMultiDict

from edgeproxy import origin
from edgeproxy.accesslog import REQUEST_ID
from edgeproxy.collapse import Flight, Flights
from edgeproxy.config import OriginConfig, Route
from edgeproxy.errors import EdgeError, OriginDown
from edgeproxy.forwarding import request_headers
from edgeproxy.h1client import UpstreamResponse
from edgeproxy.http.accept_encoding import request_coding
from edgeproxy.http.fields import Headers, combined
from edgeproxy.policy.transform import upstream_if_none_match
from edgeproxy.pool import Pool, is_server_failure, should_retry
from edgeproxy.routing import apply_edits
from edgeproxy.state import EdgeState, Snapshot

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path


def upstream_fields(
    incoming: Headers,
    version: tuple[int, int],
    client_ip: str | None,
    where: tuple[Snapshot, Route, str],
    rid: str,
    drop: tuple[str, ...] = (),
    add: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    raw_encoding: bool = False,
) -> CIMultiDict[str]:
    """The request fields sent upstream for a client's `incoming` ones
    (`where`: the snapshot, route and normalised host it was routed by).

    Accept-Encoding is the client's normalised coding (br, gzip or
    identity; http/accept_encoding.py) unless `raw_encoding` (a response
    that won't be stored): the origin then sees exactly what the Vary
    secondary key holds, so one answer serves every request with that
    token. A client's If-None-Match naming our transformed tags is turned
    back into the origin's (policy/transform.py).
    """
    snap, route, host = where
    cfg = snap.config
    assert route.origin is not None
    headers = request_headers(
        incoming,
        version=version,
        client_ip=client_ip,
        host=host,
        scheme="http",
        pseudonym=cfg.via,
        upstream_host=cfg.origins[route.origin].host_header,
        drop=drop,
        add=add,
    )
    # Replaces any client value: a malformed one was not kept (accesslog.request_id).
    headers[REQUEST_ID] = rid
    if not raw_encoding:
        headers["Accept-Encoding"] = request_coding(incoming)
    if "if-none-match" not in drop and "if-none-match" in headers:
        inm, _ = upstream_if_none_match(combined(headers, "if-none-match"))
        if inm is not None:
            headers.popall("if-none-match")
            headers["If-None-Match"] = inm
    if route.request_headers:
        apply_edits(headers, route.request_headers)
    return headers


class Trip:
    """What one request's trip upstream left behind: the pool server its
    response holds (released with it), the origin's status and the time to
    its head or failure (for the access log)."""

    __slots__ = ("ms", "slot", "status")

    def __init__(self) -> None:
        self.slot: tuple[Pool, str] | None = None
        self.status: int | None = None
        self.ms: float | None = None

    def release(self, upstream: UpstreamResponse) -> None:
        release(upstream, self.slot)
        self.slot = None


def release(upstream: UpstreamResponse, slot: tuple[Pool, str] | None) -> None:
    """Done with a response: its connection, then its pool server's count."""
    upstream.release()
    if slot is not None:
        pool, server = slot
        pool.release(server)


async def send_upstream(
    edge: EdgeState,
    to: OriginConfig,
    request: tuple[str, str, str],
    headers: CIMultiDict[str],
    body: AsyncIterator[bytes] | None,
    trip: Trip,
) -> UpstreamResponse:
    """Send `request` (method, origin-form target, cache key for the log) to
    a server of `to`'s pool; a GET or HEAD that could not connect is retried
    once on another server (pool.should_retry). `trip` records the outcome."""
    method, target, key = request
    pool = edge.pool(to)
    tried: list[str] = []
    failure: EdgeError | None = None
    started = time.monotonic()
    while True:
        server = pool.pick(edge.monotonic(), exclude=tried)
        if server is None:
            if failure is not None:
                raise failure  # no other server to retry on
            raise OriginDown(f"origin {to.name}: all {len(pool.servers)} servers are down")
        tried.append(server)
        edge.counters["origin_requests"] += 1
        pool.acquire(server)
        attempt = time.monotonic()
        try:
            upstream = await origin.send(
                edge.session, to, method, target, headers, body, server, edge.conns
            )
        except EdgeError as e:
            pool.release(server)
            _record(edge, to, pool, server, None)
            edge.metrics.origin_response(to.name, None, time.monotonic() - attempt)
            trip.ms = round((time.monotonic() - started) * 1000, 3)
            # Only where there is another server to try (a lone one would
            # only log a retry that never happens).
            retry = (
                body is None
                and len(pool.servers) > len(tried)
                and should_retry(method, connected=origin.connected(e), attempts=len(tried))
            )
            if not retry:
                raise
            log.warning("%s %s: %s; retrying on another server", method, key, e)
            failure = e
            continue
        except BaseException:
            pool.release(server)
            raise
        _record(edge, to, pool, server, upstream.status)
        edge.metrics.origin_response(to.name, upstream.status, time.monotonic() - attempt)
        trip.slot = (pool, server)
        trip.status = upstream.status
        trip.ms = round((time.monotonic() - started) * 1000, 3)
        return upstream


def _record(edge: EdgeState, to: OriginConfig, pool: Pool, server: str, status: int | None) -> None:
    """Passive health: only in a pool of several (a lone server is never ejected:
    there is nowhere else to go, as in nginx)."""
    if len(pool.servers) < 2:
        return
    now = edge.monotonic()
    if is_server_failure(status):
        was_up = pool.is_up(server, now)
        pool.record_failure(server, now)
        if was_up and not pool.is_up(server, now):
            log.warning("origin %s server %s ejected", to.name, server)
    else:
        pool.record_success(server, now)


class Prefetched:
    """An origin's answer (or failure) to a request the wire path sent and
    then left to the exchange: the exchange takes it instead of sending the
    same request again, if it would send exactly that request (`matches`);
    else it is discarded. `times`: the request and response times (RFC 9111
    section 4.2.3) it was sent and answered at; `rid`: the request id it
    carried, which the exchange then keeps."""

    __slots__ = (
        "_flights",
        "error",
        "fields",
        "flight",
        "method",
        "rid",
        "target",
        "times",
        "trip",
        "upstream",
    )

    def __init__(
        self,
        request: tuple[str, str, CIMultiDict[str]],
        answer: UpstreamResponse | EdgeError,
        trip: Trip,
        times: tuple[float, float],
        rid: str,
    ) -> None:
        self.method, self.target, self.fields = request
        self.upstream = answer if not isinstance(answer, EdgeError) else None
        self.error = answer if isinstance(answer, EdgeError) else None
        self.trip = trip
        self.times = times
        self.rid = rid
        # The key's flight the wire path led for it, which the exchange then
        # leads on (proxy._Exchange._collapse): waiters stay with the answer.
        self.flight: Flight | None = None
        self._flights: Flights | None = None

    def matches(self, method: str, target: str, headers: CIMultiDict[str]) -> bool:
        return method == self.method and target == self.target and headers == self.fields

    def lead(self, flight: tuple[Flights, Flight]) -> None:
        """Hand on the key's flight with the answer."""
        self._flights, self.flight = flight

    def discard(self) -> None:
        """Not taken: the response (and its pool server) goes back, and a
        flight nobody took over lets its waiters go their own way."""
        if self.upstream is not None:
            self.trip.release(self.upstream)
            self.upstream = None
        if self.flight is not None and self._flights is not None:
            self._flights.land(self.flight)
            self.flight.abandon()  # Released(): it never streamed, so no file
            self.flight = None
