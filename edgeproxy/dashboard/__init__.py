"""The operator dashboard: one static page on the admin listener.

`GET /` serves `static/index.html`, which loads `app.js` and `style.css`
from `/dashboard/...`. Those three are open (PAGE_PATHS): they carry no data.
Everything the page shows comes from the token-protected JSON API
(`/stats`, `/config`, `/entries`, `/purge`) plus `GET /dashboard/status`
(origin health per server, the cache limit, recent purges), which the page
calls with `Authorization: Bearer` from sessionStorage.

Rates and the chart are computed in the browser from successive `/stats`
polls: the server keeps no time series (nothing to size, sample or share
between workers), at the cost of the chart starting empty on page load.

The page's CSP allows only its own script and style (no inline code, no
`eval`, no other origin), so a stored URL or tag shown in the browser can't
run as script even if the page's own escaping were wrong.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from edgeproxy.purge import Purge, PurgeAll, PurgePrefix, PurgeTags, PurgeURL
from edgeproxy.state import EdgeState

STATIC = Path(__file__).with_name("static")
ASSETS: Final = {
    "/": ("index.html", "text/html"),
    "/dashboard/app.js": ("app.js", "text/javascript"),
    "/dashboard/style.css": ("style.css", "text/css"),
}
PAGE_PATHS: Final = frozenset(ASSETS)  # open: the auth middleware lets these through
RECENT_PURGES_KEPT = 50

# Only our own files; data: for the (empty) favicon. No 'unsafe-inline'.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidate on every load: an upgrade must not pair an old page with a new API.
    "Cache-Control": "no-cache",
}


class RecentPurges:
    """The last purges this admin listener applied, newest first (per process)."""

    def __init__(self, kept: int = RECENT_PURGES_KEPT) -> None:
        self._ring: collections.deque[dict[str, Any]] = collections.deque(maxlen=kept)

    def add(self, purge: Purge, count: int) -> None:
        kind, target = describe_target(purge)
        self._ring.appendleft(
            {
                "at": purge.issued_at,
                "kind": kind,
                "target": target,
                "soft": purge.soft,
                "purged": count,
            }
        )

    def list(self) -> list[dict[str, Any]]:
        return list(self._ring)


def describe_target(purge: Purge) -> tuple[str, str]:
    """(kind, what) for display: ("prefix", "http://a/b/"), ("all", "*")."""
    t = purge.target
    if isinstance(t, PurgeURL):
        return "url", t.url
    if isinstance(t, PurgePrefix):
        return "prefix", t.prefix
    if isinstance(t, PurgeTags):
        return "tags", " ".join(t.tags)
    if isinstance(t, PurgeAll):
        return "all", t.host or "*"
    return "?", repr(t)  # pragma: no cover - Target is a closed union


DASH_EDGE = web.AppKey("dashboard_edge", EdgeState)
RECENT = web.AppKey("dashboard_recent_purges", RecentPurges)
FILES = web.AppKey("dashboard_files", dict)  # name -> bytes, read once off the loop


def add_routes(app: web.Application, edge: EdgeState) -> None:
    """The page, its two assets and `/dashboard/status`, on the admin app."""
    app[DASH_EDGE] = edge
    app[RECENT] = RecentPurges()
    app[FILES] = {}
    for path in ASSETS:
        app.router.add_get(path, serve_asset)
    app.router.add_get("/dashboard/status", get_status)


def record_purge(app: web.Application, purge: Purge, count: int) -> None:
    """Remember an applied (not dry-run) purge for the page's "recent purges"."""
    recent = app.get(RECENT)
    if recent is not None and not purge.dry_run:
        recent.add(purge, count)


async def serve_asset(request: web.Request) -> web.Response:
    name, content_type = ASSETS[request.path]
    files: dict[str, bytes] = request.app[FILES]
    body = files.get(name)
    if body is None:
        # A file read is blocking: off the event loop, once per process.
        body = await asyncio.get_running_loop().run_in_executor(None, (STATIC / name).read_bytes)
        files[name] = body
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=PAGE_HEADERS)


async def get_status(request: web.Request) -> web.Response:
    """What /stats and /config don't say: origin health, cache limit, recent purges."""
    edge = request.app[DASH_EDGE]
    now = edge.monotonic()  # pool time (state.py)
    origins: dict[str, list[dict[str, Any]]] = {}
    for name, pool in edge.pools().items():
        servers = []
        for server in pool.servers:
            s = pool.state(server, now)
            servers.append(
                {
                    "server": s.server,
                    "up": s.up,
                    "probation": s.probation,
                    "failures": s.failures,
                    "inflight": s.inflight,
                    "down_for": None if s.down_since is None else round(now - s.down_since, 1),
                }
            )
        origins[name] = servers
    cache = edge.snapshot.config.cache
    return web.json_response(
        {
            "origins": origins,
            "cache": {"size_limit": cache.size_limit, "directory": cache.directory},
            "purges": request.app[RECENT].list(),
        }
    )
