"""The exchange's requests to the origin: `UpstreamClient`, a base of
fill.Relay, over upstream.py's functions.

Its own module: upstream.py is compiled (edgeproxy/compiled.py), and this
class builds on a plain one (exchange.ExchangeState) and is combined with
another (serving.Responder), which mypyc's classes do not allow.
"""

from __future__ import annotations

from multidict import CIMultiDict

from edgeproxy.bodies import CHUNK
from edgeproxy.errors import EdgeError
from edgeproxy.exchange import ExchangeState
from edgeproxy.h1client import UpstreamResponse
from edgeproxy.upstream import Prefetched, Trip, release, send_upstream, upstream_fields


class UpstreamClient(ExchangeState):
    """The exchange's requests to the origin."""

    def _upstream_headers(
        self,
        drop: tuple[str, ...] = (),
        add: list[tuple[str, str]] | None = None,
        raw_encoding: bool = False,
    ) -> CIMultiDict[str]:
        """The request fields sent upstream (`upstream_fields`)."""
        peer = self.request.transport.get_extra_info("peername") if self.request.transport else None
        return upstream_fields(
            self.request.headers,
            (self.request.version.major, self.request.version.minor),
            peer[0] if peer else None,
            (self.snap, self.route, self.host),
            self.request_id,
            drop,
            add or (),
            raw_encoding,
        )

    async def _send_upstream(
        self, method: str, headers: CIMultiDict[str], with_body: bool
    ) -> UpstreamResponse:
        """Send to a server of the origin's pool (`send_upstream`), unless
        the wire path already did (`Prefetched`)."""
        body = None
        if with_body and self.request.body_exists:
            body = self.request.content.iter_chunked(CHUNK)
        elif not with_body:
            headers.popall("content-length", None)
        pre, self.prefetched = self.prefetched, None
        if pre is not None:
            if body is None and pre.matches(method, self.target, headers):
                return self._take(pre)
            pre.discard()
        trip = Trip()
        try:
            upstream = await send_upstream(
                self.edge, self.origin, (method, self.target, self.key), headers, body, trip
            )
        except EdgeError:
            if trip.ms is not None:
                self.origin_ms = trip.ms
            raise
        self._slot, self.origin_status, self.origin_ms = trip.slot, trip.status, trip.ms
        return upstream

    def _take(self, pre: Prefetched) -> UpstreamResponse:
        """The wire path's answer to the request we were about to send."""
        self._slot = pre.trip.slot
        self.origin_status = pre.trip.status
        self.origin_ms = pre.trip.ms
        self.upstream_times = pre.times
        if pre.error is not None:
            raise pre.error
        assert pre.upstream is not None
        return pre.upstream

    def _release(self, upstream: UpstreamResponse) -> None:
        release(upstream, self._slot)
        self._slot = None
