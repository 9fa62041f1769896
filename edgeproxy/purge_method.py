"""`PURGE <url>` on the public listener (the Varnish / Fastly convention).

Off unless `admin.purge_method: true`, and then only with the admin token as
`Authorization: Bearer <token>`: without a configured token it is refused.
It purges every stored variant of the URL (hard), exactly as
`POST /purge {"url": ...}` on the admin listener does, and never reaches the
origin. With the option off, PURGE is an extension method like any other and
is forwarded.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from edgeproxy.admin import stored_key
from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.state import EdgeState
from edgeproxy.store.base import StoreError

log = logging.getLogger("edgeproxy.admin")


def _authorised(request: web.Request, token: str | None) -> bool:
    if token is None:
        return False
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogatepass"),
        token.encode("utf-8", "surrogatepass"),
    )


async def handle_purge(
    request: web.Request, edge: EdgeState, host: str, target: str
) -> web.Response:
    if not _authorised(request, edge.admin_token):
        why = "invalid bearer token" if edge.admin_token else "no admin token is configured"
        return web.json_response(
            {"error": f"PURGE needs the admin token: {why}"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = stored_key(f"http://{host}{target}", edge.snapshot)
    purge = Purge(PurgeURL(key), issued_at=edge.clock())
    try:
        count = await edge.purge(purge)
    except StoreError as e:
        log.error("PURGE %s failed: %s", key, e)
        return web.json_response({"error": f"purge failed: {e}"}, status=503)
    edge.counters["purges"] += 1
    edge.counters["purged_entries"] += count
    log.info("PURGE %s: %d entries", key, count)
    return web.json_response({"purged": count, "soft": False, "url": key})
