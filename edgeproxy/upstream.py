"""Sending a request upstream: its fields, a server of the origin's pool
(one retry on another), passive health, releasing the server.
"""

from __future__ import annotations

import logging
import time

from multidict import CIMultiDict

from edgeproxy import origin
from edgeproxy.accesslog import REQUEST_ID
from edgeproxy.bodies import CHUNK
from edgeproxy.errors import EdgeError
from edgeproxy.exchange import ExchangeState
from edgeproxy.forwarding import request_headers
from edgeproxy.h1client import UpstreamResponse
from edgeproxy.http.accept_encoding import request_coding
from edgeproxy.http.fields import combined
from edgeproxy.policy.transform import upstream_if_none_match
from edgeproxy.pool import Pool, is_server_failure, should_retry
from edgeproxy.routing import apply_edits

log = logging.getLogger("edgeproxy.proxy")  # one logger for the request path


class UpstreamClient(ExchangeState):
    """The exchange's requests to the origin."""

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
    ) -> UpstreamResponse:
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
                    edge.session,
                    self.origin,
                    method,
                    self.target,
                    headers,
                    body,
                    server,
                    edge.conns,
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

    def _release(self, upstream: UpstreamResponse) -> None:
        upstream.release()
        if self._slot is not None:
            pool, server = self._slot
            self._slot = None
            pool.release(server)
