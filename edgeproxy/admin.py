"""The admin listener: a separate aiohttp app on its own address.

Routes: `POST /purge`, `GET /entries`, `GET /stats`, `GET /config`,
`POST /reload`, `GET /cluster`, `GET /metrics` (Prometheus, metrics.py),
`GET /dashboard/status`, and `GET /healthz` (open to all, for probes). The
dashboard page `GET /` and its two assets are open too: they carry no data,
and every call the page makes needs the token (dashboard/).

With `cluster.redis_url` set (cluster.py), an accepted purge is applied
here, then published to every edge; its answer carries its `sequence` (null
while Redis is unreachable and it is queued), and `"wait": true` in the
request holds the answer until every live edge has applied it (at most
`cluster.wait_timeout`). `GET /cluster` lists the edges and the last purge
each applied; `/healthz` says "degraded" while Redis is unreachable.

Every data route needs `Authorization: Bearer <token>`, compared in
constant time. The token comes from the environment variable named by
`admin.token_env` (default EDGEPROXY_ADMIN_TOKEN) or the file `admin.token_file`,
never from the YAML itself. Without a token the listener binds to loopback only
and is open there (as Varnish's local admin is) to anything but a browser;
it refuses any other address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from edgeproxy import dashboard
from edgeproxy.cachekey import apply_key_rules, primary_key
from edgeproxy.cluster import Cluster
from edgeproxy.config import Address, AdminConfig, Config
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import current_age, ttl
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.purge import (
    Purge,
    PurgeRequestError,
    PurgeURL,
    listing_prefix,
    parse_purge_json,
    parse_purge_request,
)
from edgeproxy.ratelimit import FailureLimiter
from edgeproxy.reload import Reloader
from edgeproxy.routing import select_route
from edgeproxy.state import EdgeState, Snapshot
from edgeproxy.store.base import StoreError, health_of

log = logging.getLogger("edgeproxy.admin")

RELOADER = web.AppKey("reloader", Reloader)
TOKEN = web.AppKey("token", str)
PROXY_EDGE = web.AppKey("proxy_edge", EdgeState)
HEALTH_TIMEOUT = web.AppKey("health_timeout", float)
CLUSTER = web.AppKey("cluster", Cluster)

HEALTH_TIMEOUT_DEFAULT = 2.0  # seconds the store gets to answer /healthz
DEFAULT_LIMIT = 100
MAX_LIMIT = 5000  # /entries page size cap (the store caps a listing at 10000)

LIMITER = web.AppKey("limiter", FailureLimiter)
OPEN_PATHS = frozenset({"/healthz"}) | dashboard.PAGE_PATHS  # the page carries no data


class AdminSetupError(Exception):
    pass


def read_token(admin: AdminConfig) -> str | None:
    """The admin token from the environment, else from the token file."""
    token = os.environ.get(admin.token_env, "").strip()
    if token:
        return token
    if admin.token_file:
        try:
            with open(admin.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise AdminSetupError(f"admin.token_file {admin.token_file}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise AdminSetupError(f"admin.token_file {admin.token_file}: not UTF-8 text") from e
        if not token:
            raise AdminSetupError(f"admin.token_file {admin.token_file} is empty")
        return token
    return None


def is_loopback(address: Address) -> bool:
    if address.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        return False


def check_bind(admin: AdminConfig, token: str | None) -> None:
    if token is None and not is_loopback(admin.listen):
        raise AdminSetupError(
            f"refusing to bind the admin listener to {admin.listen} without a token: set "
            f"{admin.token_env} or admin.token_file, or listen on 127.0.0.1"
        )


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _same_token(presented: str, token: str) -> bool:
    # surrogatepass: header and environment text may carry escaped bytes;
    # encoding both alike keeps the comparison exact and never raising.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def _browser_refusal(request: web.Request) -> str | None:
    """Why an open (token-less) API refuses this request, if it does.

    Loopback is no wall against a browser on the same machine: any page can
    POST to 127.0.0.1 (a "simple" request needs no CORS preflight), and DNS
    rebinding lets it read the answers. Browsers mark their requests with
    Origin / Sec-Fetch-Site and name the page's host in Host; CLI and
    scripts send neither, so refusing those costs operators nothing.
    """
    if "Origin" in request.headers or request.headers.get("Sec-Fetch-Site", "none") != "none":
        return "browser requests need a token: set an admin token to use the API from a page"
    # The Host field, not request.host: that falls back to a blocking getfqdn().
    host = request.headers.get("Host")
    if host is not None and not is_loopback(Address(_host_name(host), 0)):
        return f"Host {host!r} is not a loopback address: refused (DNS rebinding?)"
    return None


def _host_name(host: str) -> str:
    """The name part of a Host value: `[::1]:80` -> `::1`, `a:80` -> `a`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name = host.partition(":")[0] if host.count(":") == 1 else host
    return name.lower().rstrip(".")


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    token = request.app.get(TOKEN)
    if token is None:  # loopback-only, see check_bind
        refusal = _browser_refusal(request)
        if refusal is not None:
            return json_error(403, refusal)
        return await handler(request)
    limiter = request.app[LIMITER]
    client = request.remote or "?"
    now = request.app[PROXY_EDGE].monotonic()
    wait = limiter.retry_after(client, now)
    if wait is not None:
        # Too many wrong tokens from this address: refused before any check.
        resp = json_error(429, "too many failed authentication attempts; try again later")
        resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return resp
    # The auth scheme is case-insensitive (RFC 9110 section 11.1).
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and _same_token(presented.strip(" \t"), token)):
        limiter.failed(client, now)
        log.warning("admin: rejected credentials from %s for %s", client, request.path)
        resp = json_error(
            401, "missing or invalid bearer token", hint="send Authorization: Bearer <token>"
        )
        # A 401 carries a challenge (RFC 9110 section 15.5.2; RFC 6750 section 3).
        resp.headers["WWW-Authenticate"] = 'Bearer realm="edgeproxy-admin"'
        return resp
    limiter.succeeded(client)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    """200 when the proxy can serve; 503 and the reason when it can't.

    The store must answer a cheap call in time (a hung or broken SQLite
    index fails every lookup). A store that can't write (disk full,
    unwritable: StoreHealth) is 200 with "status" and "store" "degraded"
    and the reason: the proxy still answers every request, passing responses
    through unstored, so a load balancer must not pull it; it caches again
    by itself when the disk recovers.
    """
    edge = request.app[PROXY_EDGE]
    timeout = request.app[HEALTH_TIMEOUT]
    loop = asyncio.get_running_loop()
    warnings: list[str] = []
    reasons: list[str] = []
    config = edge.snapshot.config
    if config.origin is None:
        reasons.append("no origin configured")
    try:
        await asyncio.wait_for(edge.store.stats(), timeout)
    except TimeoutError:
        reasons.append(f"the cache store did not answer within {timeout:g}s")
    except Exception as e:  # a health probe reports every failure, never a 500
        reasons.append(f"the cache store failed: {e or type(e).__name__}")
    cache_dir = config.cache.directory
    if not await loop.run_in_executor(None, os.access, cache_dir, os.W_OK):
        warnings.append(f"cache directory {cache_dir} is not writable: passing through")
    extra: dict[str, Any] = {}
    status = "ok"
    health = health_of(edge.store)  # no I/O: the state the store's own writes found
    if health.state == "degraded":
        status = extra["store"] = "degraded"
        extra["store_health"] = dataclasses.asdict(health)
        warnings.append(
            f"cache store degraded ({health.reason}): passing responses through unstored"
            + ("" if health.hits else ", serving no hits")
        )
    cluster = request.app.get(CLUSTER)
    if cluster is not None:
        extra["cluster"] = state = cluster.status()
        if not state["connected"]:
            # Still serving (and purging locally): degraded, not unavailable.
            status = "degraded"
            warnings.append(
                f"cluster: Redis unreachable ({state['last_error']}): purges apply here and "
                f"are queued ({state['queued']}); purges from other edges wait"
            )
    if reasons:
        reason = "; ".join(reasons)
        log.warning("healthz: unavailable: %s", reason)
        return web.json_response(
            {"status": "unavailable", "reason": reason, "warnings": warnings, **extra}, status=503
        )
    return web.json_response({"status": status, "warnings": warnings, **extra})


async def post_purge(request: web.Request) -> web.Response:
    """Apply one purge; the store has applied it when this answers."""
    edge = request.app[PROXY_EDGE]
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"purge request larger than {request.client_max_size} bytes")
    try:
        # The ban time comes from the clock that stamps request_time (purge.py).
        purge, wait = parse_purge_body(body, issued_at=edge.clock())
    except PurgeRequestError as e:
        return json_error(400, str(e))
    if isinstance(purge.target, PurgeURL):
        purge = replace(purge, target=PurgeURL(stored_key(purge.target.url, edge.snapshot)))
    try:
        count = await edge.purge(purge)
    except StoreError as e:
        log.error("purge %s failed: %s", purge.target, e)
        return json_error(503, f"purge failed: {e}")
    if not purge.dry_run:
        edge.counters["purges"] += 1
        edge.counters["purged_entries"] += count
        dashboard.record_purge(request.app, purge, count)
    log.info(
        "purge %s%s%s from %s: %d entries",
        purge.target,
        " soft" if purge.soft else "",
        " dry-run" if purge.dry_run else "",
        request.remote,
        count,
    )
    answer: dict[str, Any] = {"purged": count, "soft": purge.soft}
    if purge.dry_run:
        answer["dry_run"] = True
    cluster = request.app.get(CLUSTER)
    if cluster is not None and not purge.dry_run:
        answer.update(await publish(cluster, purge, wait))
    return web.json_response(answer)


async def publish(cluster: Cluster, purge: Purge, wait: bool) -> dict[str, Any]:
    """Send an applied purge to the other edges; with `wait`, until they applied it."""
    bus = cluster.bus
    seq = await bus.publish(purge)
    out: dict[str, Any] = {"sequence": seq, "cluster": "queued" if seq is None else "published"}
    if wait and seq is not None:
        try:
            done = await bus.wait_applied(seq, bus.settings.wait_timeout)
        except (RedisError, OSError) as e:
            out["wait"] = {"complete": False, "error": str(e) or type(e).__name__}
        else:
            out["wait"] = {
                "complete": done.complete,
                "applied": done.applied,
                "pending": done.pending,
            }
    return out


def parse_purge_body(body: bytes, *, issued_at: float) -> tuple[Purge, bool]:
    """The purge request and its `"wait"` flag (an admin option, not part of the purge).

    A body that is not a clean JSON object goes to `parse_purge_json`,
    which says what is wrong with it exactly as without `wait`.
    """
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return parse_purge_json(body, issued_at=issued_at), False
    if not isinstance(obj, dict) or "wait" not in obj:
        return parse_purge_request(obj, issued_at=issued_at), False
    wait = obj.pop("wait")
    if not isinstance(wait, bool):
        raise PurgeRequestError(f'"wait" must be true or false, got {json.dumps(wait)[:64]}')
    return parse_purge_request(obj, issued_at=issued_at), wait


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate name")  # parse_purge_json names it
    return out


async def get_cluster(request: web.Request) -> web.Response:
    """Every edge of the cluster with the last purge it applied and its last heartbeat."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return json_error(404, "clustering is off: set cluster.redis_url")
    bus = cluster.bus
    local = cluster.status()
    try:
        async with asyncio.timeout(request.app[HEALTH_TIMEOUT]):
            now, edges = await bus.edges()
            head = await bus.head()
    except (RedisError, OSError, TimeoutError) as e:
        return json_error(503, f"Redis unreachable: {e or type(e).__name__}", local=local)
    return web.json_response(
        {
            "edge": bus.edge_id,
            "redis_time": now,
            "head": head,  # the sequence of the newest purge published
            "local": local,
            "edges": [e.to_json() for e in edges],
        }
    )


def stored_key(url: str, snap: Snapshot) -> str:
    """The key a GET of `url` is stored under: its route's query rules applied.

    As `cachekey.route_key` builds it, minus the header/cookie `#extras`,
    which a URL purge takes anyway (purge.url_covers). So a purge names the
    URL as clients request it, e.g. with the utm_* parameters a route drops.
    """
    scheme, _, rest = url.partition("://")
    authority, slash, target = rest.partition("/")
    target = slash + target
    route = select_route(
        snap.config.routes, snap.config.default_route, authority, target.partition("?")[0], "GET"
    )
    if route is None:
        return url
    rules = route.key
    if not (rules.ignore_query or rules.query_params is not None or rules.sort_query):
        return url
    keyed = apply_key_rules(
        target,
        ignore_query=rules.ignore_query,
        query_params=rules.query_params,
        sort_query=rules.sort_query,
    )
    return primary_key(scheme, authority, keyed)


ENTRIES_PARAMS = ("prefix", "tag", "limit")


async def get_entries(request: web.Request) -> web.Response:
    """What is stored under `prefix` (and carrying `tag`), in key order."""
    edge = request.app[PROXY_EDGE]
    query = request.query
    for name in query:
        if name not in ENTRIES_PARAMS:
            return json_error(400, f"unknown parameter {name!r} (allowed: prefix, tag, limit)")
        if len(query.getall(name)) > 1:
            return json_error(400, f"parameter {name!r} given more than once")
    limit = _limit(query.get("limit"))
    if limit is None:
        return json_error(
            400, f"limit must be a whole number from 1 to {MAX_LIMIT}, got {query['limit']!r}"
        )
    tag = query.get("tag")
    if tag == "":
        return json_error(400, "tag is empty")
    prefix = listing_prefix(query.get("prefix", ""))
    try:
        # One more than asked: tells a full page from a truncated one.
        found = await edge.store.entries(prefix, tag, limit + 1)
    except StoreError as e:
        return json_error(503, f"listing failed: {e}")
    now = edge.clock()
    snap = edge.snapshot
    policies = {r.name: r.policy for r in snap.config.routes}
    listed = [describe(e, policies.get(e.route, snap.policy), now) for e in found[:limit]]
    return web.json_response(
        {
            "prefix": prefix,
            "tag": tag,
            "count": len(listed),
            "truncated": len(found) > limit,
            "entries": listed,
        }
    )


def _limit(value: str | None) -> int | None:
    if value is None:
        return DEFAULT_LIMIT
    # ASCII digits only: int() also takes " 1", "1_0" and other scripts' digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        return None
    n = int(value)
    return n if 1 <= n <= MAX_LIMIT else None


def describe(entry: Entry, policy: CachePolicy, now: float) -> dict[str, Any]:
    """One stored variant as /entries lists it; age and ttl as of `now`."""
    return {
        "url": entry.key,
        "variant": entry.variant,
        "vary": dict(zip(entry.vary, entry.secondary, strict=False)),
        "status": entry.status,
        "age": int(current_age(entry, now)),
        "ttl": ttl(entry, policy, now),
        "size": entry.body_size,
        "etag": entry.fields.get("ETag"),
        "last_modified": entry.fields.get("Last-Modified"),
        "tags": list(entry.tags),
        "soft_purged": entry.soft_purged,
        "route": entry.route,
    }


STAT_COUNTERS = (
    "hits",
    "misses",
    "revalidations",
    "revalidated_304",
    "client_304",
    "stored",
    "origin_requests",
    "purges",
    "purged_entries",
)

# Every request counted once by what the client got (accesslog.cache_outcome).
OUTCOMES = (
    "hit",
    "miss",
    "stale",
    "revalidated",
    "collapsed",
    "client-304",
    "bypass",
    "pass",
    "error",
    "none",
)


async def get_stats(request: web.Request) -> web.Response:
    """Store totals (shared by every worker) and this process's counters."""
    edge = request.app[PROXY_EDGE]
    try:
        totals = await edge.store.stats()
    except StoreError as e:
        return json_error(503, f"reading stats failed: {e}")
    counters = dict.fromkeys(STAT_COUNTERS, 0) | dict(edge.counters)
    outcomes = dict.fromkeys(OUTCOMES, 0) | dict(edge.outcomes)
    return web.json_response({**totals, **counters, "outcomes": outcomes})


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format (metrics.py): this edge's counters, every
    worker's added up, and the cache gauges read from the shared store now
    (left out, and logged, when the store can't answer)."""
    edge = request.app[PROXY_EDGE]
    stats: dict[str, int] | None
    try:
        stats = await edge.store.stats()
    except StoreError as e:
        log.warning("metrics: cache stats unavailable: %s", e)
        stats = None
    # Off the loop: with workers it reads every worker's files.
    health = health_of(edge.store)
    edge.metrics.flush()  # this worker's counts of this loop turn
    body = await asyncio.get_running_loop().run_in_executor(
        None, edge.metrics.exposition, stats, health
    )
    return web.Response(body=body, headers={"Content-Type": edge.metrics.content_type})


async def get_config(request: web.Request) -> web.Response:
    reloader = request.app[RELOADER]
    return web.json_response(config_summary(reloader))


def config_summary(reloader: Reloader) -> dict[str, Any]:
    cfg: Config = reloader.config
    st = reloader.status
    return {
        "version": st.version,
        "loaded_at": st.loaded_at,
        "trigger": st.trigger,
        "source": cfg.source,
        "last_error": st.last_error,
        "last_error_at": st.last_error_at,
        "restart_needed": st.restart_needed,
        "origins": {name: list(o.servers) for name, o in cfg.origins.items()},
        "routes": [{"name": r.name, "origin": r.origin, "cache": r.cache} for r in cfg.routes],
        "default_route": cfg.default_route,
    }


async def post_reload(request: web.Request) -> web.Response:
    reloader = request.app[RELOADER]
    ok = await reloader.reload("admin POST /reload")
    body = config_summary(reloader)
    return web.json_response({"reloaded": ok, **body}, status=200 if ok else 422)


def build_admin_app(
    edge: EdgeState,
    reloader: Reloader,
    token: str | None,
    *,
    health_timeout: float = HEALTH_TIMEOUT_DEFAULT,
    cluster: Cluster | None = None,
) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=1 << 20)
    app[PROXY_EDGE] = edge
    app[RELOADER] = reloader
    app[HEALTH_TIMEOUT] = health_timeout
    app[LIMITER] = FailureLimiter()
    if token is not None:
        app[TOKEN] = token
    if cluster is not None:
        app[CLUSTER] = cluster
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", get_config)
    app.router.add_post("/reload", post_reload)
    app.router.add_post("/purge", post_purge)
    app.router.add_get("/entries", get_entries)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/cluster", get_cluster)
    dashboard.add_routes(app, edge)  # GET /, its assets, /dashboard/status
    return app
