"""The state one client request carries through the cache.

The exchange's methods are split by job over classes built on this state:
`Responder` (serving.py) and `UpstreamClient` (upstream_client.py), both under
`Relay` (fill.py), under `_Exchange` (proxy.py). Each may call the ones it
is built on, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from edgeproxy.cachekey import route_key
from edgeproxy.config import Route
from edgeproxy.http.cache_control import request_cache_control
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.policy.decide import Decision, Request
from edgeproxy.policy.entry import Entry
from edgeproxy.pool import Pool
from edgeproxy.state import EdgeState, Snapshot

if TYPE_CHECKING:
    from edgeproxy.collapse import Flight
    from edgeproxy.upstream import Prefetched


class ExchangeState:
    """One client request's trip through the cache: what it asked, what
    went upstream, what was sent. The methods live in the classes built on it."""

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
        # The wire path's answer to this request's trip upstream, if it
        # went there first (upstream.Prefetched), and, once taken, its times.
        self.prefetched: Prefetched | None = None
        self.upstream_times: tuple[float, float] | None = None
        self.handed_flight: Flight | None = None  # the flight that came with it
        # The wire path's lookup of this request's key: (key, entries).
        self.looked_up: tuple[str, list[Entry]] | None = None
