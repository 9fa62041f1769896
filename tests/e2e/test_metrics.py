"""GET /metrics on the admin listener (issue #6): a known mix of traffic through
the real proxy and a scripted origin, then the exact counts scraped.

Each request's outcome is the one the access log names (accesslog.cache_outcome,
from the Cache-Status sent, RFC 9211), so the counts are asserted per outcome
against what the client saw, and the origin counts against what reached the
scripted origin. Counts are recorded as a handler returns, a moment after the
client has its response: every scrape waits (bounded) for the total it expects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.admin import build_admin_app
from edgeproxy.config import Config, Route, RouteMatch
from edgeproxy.errors import ConfigError
from edgeproxy.reload import Reloader
from edgeproxy.server import snapshot
from edgeproxy.state import EDGE, EdgeState
from edgeproxy.store.base import StoreError
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Got, Proxy, Reply, ScriptedOrigin, fetch, settle, until

TOKEN = "metrics-test-token-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API_HOST = "api.example"


@dataclass(frozen=True)
class Scraped:
    """One scrape: every sample by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float:
        """The one sample with exactly these labels (0 when there is none yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {ls: v for (n, ls), v in self.samples.items() if n == name and v}


def parse(text: str) -> Scraped:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scraped(samples)


@dataclass
class Admin:
    url: str
    client: aiohttp.ClientSession
    edge: EdgeState
    loads: list[Config | ConfigError]

    async def scrape(self) -> Scraped:
        async with self.client.get(self.url + "/metrics", headers=AUTH) as r:
            text = await r.text()
            assert r.status == 200, text
            assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return parse(text)

    async def scrape_when(self, ready: Callable[[Scraped], bool], what: str) -> Scraped:
        """Scrape until `ready` holds (bounded): counts land as handlers return."""
        for _ in range(200):
            got = await self.scrape()
            if ready(got):
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"metrics never showed {what}: {got.samples}")

    async def post(self, path: str, body: Any = None) -> dict[str, Any]:
        async with self.client.post(self.url + path, json=body, headers=AUTH) as r:
            answer: dict[str, Any] = await r.json()
            return answer


@pytest.fixture
async def admin(
    proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
) -> AsyncIterator[Admin]:
    """The proxy's admin app as server.serve wires it: the Reloader counts into
    the edge's metrics. Reloads load from `loads` (a config, or an error)."""
    edge = proxy.app[EDGE]
    loads: list[Config | ConfigError] = []

    def load() -> Config:
        item = loads.pop(0)
        if isinstance(item, ConfigError):
            raise item
        return item

    def apply(config: Config) -> None:
        edge.snapshot = snapshot(config)

    reloader = Reloader(proxy.config, load, apply, clock, edge.metrics)
    server = TestServer(build_admin_app(edge, reloader, TOKEN), host="127.0.0.1", port=0)
    await server.start_server()
    yield Admin(f"http://127.0.0.1:{server.port}", client, edge, loads)
    await server.close()


def two_routes(proxy: Proxy) -> None:
    """`api` (host api.example, cache off: bypass) and the catch-all `site`."""
    edge = proxy.app[EDGE]
    cfg = edge.snapshot.config
    site = replace(cfg.routes[0], name="site")
    api = Route(name="api", origin="default", cache=False, match=RouteMatch(hosts=(API_HOST,)))
    edge.snapshot = replace(edge.snapshot, config=replace(cfg, routes=(api, site)))


def cache_status(got: Got) -> str:
    return got.headers["Cache-Status"]


A, S, W, K, API, MADE = b"aaaa", b"ssssssss", b"wwwwwwwwwwww", b"kk", b"api!", b"made"
NOT_SCRIPTED = b"not scripted\n"  # the scripted origin's 404 body


async def test_known_mix_is_counted_exactly(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    admin: Admin,
) -> None:
    two_routes(proxy)
    url = proxy.url
    etag = {"ETag": '"a1"'}
    origin.script("/a", Reply(body=A, headers={"Cache-Control": "max-age=60", **etag}))
    origin.script("/s", Reply(body=S, headers={"Cache-Control": "max-age=5", "ETag": '"s1"'}))
    swr = "max-age=5, stale-while-revalidate=60"
    origin.script("/w", Reply(body=W, headers={"Cache-Control": swr}))
    origin.script("/api", Reply(body=API, headers={"Cache-Control": "max-age=60"}))
    origin.script("/form", Reply(status=201, body=MADE))

    # miss, then 3 hits and a client 304 (RFC 9111 section 4.3.2).
    assert "fwd=uri-miss" in cache_status(await fetch(client, "GET", url + "/a"))
    for _ in range(3):
        assert cache_status(await fetch(client, "GET", url + "/a")).startswith("edgeproxy; hit")
    got = await fetch(client, "GET", url + "/a", headers={"If-None-Match": '"a1"'})
    assert got.status == 304
    # miss, then stale: validated with a 304 (RFC 9111 section 4.3.4): revalidated.
    await fetch(client, "GET", url + "/s")
    await fetch(client, "GET", url + "/w")
    clock.advance(6)
    origin.script("/s", Reply(status=304, headers={"Cache-Control": "max-age=5", "ETag": '"s1"'}))
    got = await fetch(client, "GET", url + "/s")
    assert (got.status, got.body, cache_status(got)) == (
        200,
        S,
        "edgeproxy; fwd=stale; fwd-status=304; ttl=5",
    )
    # Stale served while a background fetch refreshes it (RFC 5861 section 3).
    got = await fetch(client, "GET", url + "/w")
    assert "stale-while-revalidate" in cache_status(got) and got.body == W
    await until(lambda: origin.hits("/w") == 2 and not proxy.app[EDGE].tasks, "the refresh")
    # bypass (a route with the cache off), twice.
    for _ in range(2):
        got = await fetch(client, "GET", url + "/api", headers={"Host": API_HOST})
        assert cache_status(got) == "edgeproxy; fwd=bypass; fwd-status=200"
    # pass: an unsafe method, and an extension method (its label is "other").
    assert (await fetch(client, "POST", url + "/form", data=b"x")).status == 201
    assert (await fetch(client, "BREW", url + "/form")).status == 201
    # A miss the origin answers 404.
    assert (await fetch(client, "GET", url + "/nope")).status == 404
    # collapsed: four concurrent misses, one origin request (RFC 9111 section 4).
    gate = asyncio.Event()

    async def gated(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(body=K, headers={"Cache-Control": "max-age=60", "Date": origin.date()})

    origin.script("/k", gated)
    tasks = [asyncio.create_task(fetch(client, "GET", url + "/k")) for _ in range(4)]
    await until(lambda: sum(proxy.app[EDGE].flights.waiting().values()) == 3, "3 waiters")
    gate.set()
    collapsed = await asyncio.gather(*tasks)
    assert sum("collapsed" in cache_status(g) for g in collapsed) == 3
    assert all(g.body == K for g in collapsed)

    requests = 1 + 3 + 1 + 2 + 1 + 1 + 2 + 2 + 1 + 4
    m = await admin.scrape_when(
        lambda m: m.total("edgeproxy_requests_total") == requests, f"{requests} requests"
    )
    site = {"route": "site", "method": "GET"}
    assert m.series("edgeproxy_requests_total") == {
        frozenset({**site, "cache": "miss"}.items()): 5,  # /a /s /w /nope, the /k leader
        frozenset({**site, "cache": "hit"}.items()): 3,
        frozenset({**site, "cache": "client-304"}.items()): 1,
        frozenset({**site, "cache": "revalidated"}.items()): 1,
        frozenset({**site, "cache": "stale"}.items()): 1,
        frozenset({**site, "cache": "collapsed"}.items()): 3,
        frozenset({"route": "api", "method": "GET", "cache": "bypass"}.items()): 2,
        frozenset({"route": "site", "method": "POST", "cache": "pass"}.items()): 1,
        frozenset({"route": "site", "method": "other", "cache": "pass"}.items()): 1,
    }
    # What reached the origin, by status; the refresh in the background too.
    assert origin.hits() == 11
    assert m.series("edgeproxy_origin_requests_total") == {
        frozenset({"origin": "default", "status": "200"}.items()): 7,
        frozenset({"origin": "default", "status": "304"}.items()): 1,
        frozenset({"origin": "default", "status": "201"}.items()): 2,
        frozenset({"origin": "default", "status": "404"}.items()): 1,
    }
    assert m.get("edgeproxy_origin_duration_seconds_count", origin="default") == 11
    assert m.get("edgeproxy_origin_duration_seconds_bucket", origin="default", le="+Inf") == 11
    # Body bytes by where they came from; a 304 has none (RFC 9110 section 15.4.5).
    from_cache = 3 * len(A) + len(S) + len(W) + 3 * len(K)
    from_origin = len(A + S + W + K) + 2 * len(API) + 2 * len(MADE) + len(NOT_SCRIPTED)
    assert m.series("edgeproxy_response_bytes_total") == {
        frozenset({"source": "cache"}.items()): from_cache,
        frozenset({"source": "origin"}.items()): from_origin,
    }
    # Store gauges, read from the store at scrape time: /a /s /w /k are stored.
    stats = await admin.edge.store.stats()
    assert stats["entries"] == 4
    assert m.get("edgeproxy_cache_entries") == 4
    assert m.get("edgeproxy_cache_bytes") == stats["bytes"] > 0
    assert m.get("edgeproxy_workers") == 1
    assert m.get("edgeproxy_evictions_total") == 0


async def test_purges_and_reloads_are_counted(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: Admin
) -> None:
    origin.script("/a", Reply(body=A, headers={"Cache-Control": "max-age=60"}))
    await fetch(client, "GET", proxy.url + "/a")
    await settle()
    assert (await admin.post("/purge", {"all": True, "dry_run": True}))["purged"] == 1
    assert (await admin.post("/purge", {"url": proxy.url + "/a"}))["purged"] == 1
    assert (await admin.post("/purge", {"tag": "nothing-has-it"}))["purged"] == 0
    assert (await admin.post("/purge", {"prefix": proxy.url + "/"}))["purged"] == 0
    admin.loads += [proxy.config, ConfigError(["edge.yaml:1 origins: bad"]), proxy.config]
    for expected in (True, False, True):
        assert (await admin.post("/reload"))["reloaded"] is expected
    m = await admin.scrape()
    # Dry runs change nothing and are not counted.
    assert m.series("edgeproxy_purges_total") == {
        frozenset({("kind", "url")}): 1,
        frozenset({("kind", "tag")}): 1,
        frozenset({("kind", "prefix")}): 1,
    }
    assert m.get("edgeproxy_purged_entries_total") == 1
    assert m.series("edgeproxy_reloads_total") == {
        frozenset({("result", "ok")}): 2,
        frozenset({("result", "error")}): 1,
    }
    assert m.get("edgeproxy_cache_entries") == 0


async def test_metrics_need_the_admin_token(
    proxy: Proxy, client: aiohttp.ClientSession, admin: Admin
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        async with client.get(admin.url + "/metrics", headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="edgeproxy-admin"'
            assert "edgeproxy_requests" not in await r.text()


async def test_unrouted_and_refused_requests(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: Admin
) -> None:
    edge = proxy.app[EDGE]
    cfg = edge.snapshot.config
    only = Route(name="site", origin="default", match=RouteMatch(hosts=("site.example",)))
    edge.snapshot = replace(edge.snapshot, config=replace(cfg, routes=(only,), default_route=None))
    got = await fetch(client, "GET", proxy.url + "/x")
    assert got.status == 404
    refused = await fetch(client, "GET", proxy.url + "/", headers={"Host": "bad host"})
    assert refused.status == 400
    m = await admin.scrape_when(lambda m: m.total("edgeproxy_requests_total") == 2, "2 requests")
    # No route: the route label is empty; the edge's own text is its bytes.
    assert m.series("edgeproxy_requests_total") == {
        frozenset({("route", ""), ("method", "GET"), ("cache", "none")}): 2
    }
    assert m.series("edgeproxy_response_bytes_total") == {
        frozenset({("source", "edge")}): len(got.body) + len(refused.body)
    }
    assert origin.hits() == 0


async def test_origin_failure_is_status_error(
    make_proxy: MakeProxy, clock: FakeClock, client: aiohttp.ClientSession
) -> None:
    from tests.e2e.harness import closed_port_url

    proxy = await make_proxy(closed_port_url())
    got = await fetch(client, "GET", proxy.url + "/a")
    assert got.status == 502
    metrics = proxy.app[EDGE].metrics
    await until(lambda: b'cache="error"' in metrics.exposition(None), "the 502 counted")
    m = parse(metrics.exposition(None).decode())
    assert m.series("edgeproxy_origin_requests_total") == {
        frozenset({("origin", "default"), ("status", "error")}): 1
    }
    assert m.series("edgeproxy_requests_total") == {
        frozenset({("route", "default"), ("method", "GET"), ("cache", "error")}): 1
    }
    assert m.series("edgeproxy_response_bytes_total") == {
        frozenset({("source", "edge")}): len(got.body)
    }


async def test_store_gauges_left_out_when_the_store_fails(
    spied_disk: None, proxy: Proxy, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> dict[str, int]:
        raise StoreError("database is locked")

    store = admin.edge.store
    # The disk's stats, which the hot tier's are (a SpiedDiskStore: compiled
    # classes' own attributes are read-only).
    assert isinstance(store, TieredStore)
    monkeypatch.setattr(store.disk, "stats", broken)
    m = await admin.scrape()
    assert m.get("edgeproxy_workers") == 1  # the rest still answers
    assert not m.series("edgeproxy_cache_entries") and not m.series("edgeproxy_cache_bytes")


BODY_SIZE = 40_000  # above diskcache's inline limit: a file, counted in full


@pytest.mark.parametrize("memory_size", [0, 1 << 20], ids=["disk", "disk+hot-tier"])
async def test_evictions_are_counted_and_the_hot_tier_still_hears_of_them(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    memory_size: int,
) -> None:
    assert origin.server is not None
    origin_url = f"http://127.0.0.1:{origin.server.port}"
    cache_dir = str(tmp_path / "small")
    # Room for about three bodies over what the empty database takes.
    empty = await make_proxy(origin_url, cache_dir=cache_dir)
    baseline = (await empty.app[EDGE].store.stats())["bytes"]
    await empty.close()
    proxy = await make_proxy(
        origin_url,
        cache_dir=cache_dir,
        size_limit=baseline + 3 * BODY_SIZE + BODY_SIZE // 2,
        memory_size=memory_size,
    )
    edge = proxy.app[EDGE]
    paths = [f"/e{i}" for i in range(10)]
    for path in paths:
        body = path.encode().ljust(BODY_SIZE, b".")
        origin.script(path, Reply(body=body, headers={"Cache-Control": "max-age=600"}))
        assert (await fetch(client, "GET", proxy.url + path)).body == body
    # Each commit is done once its client has the whole body (proxy.relay).
    stored = edge.counters["stored"]
    m = parse(edge.metrics.exposition(await edge.store.stats()).decode())
    evicted = m.get("edgeproxy_evictions_total")
    # Every committed response is still stored or was evicted, nothing else.
    assert 1 <= evicted == stored - m.get("edgeproxy_cache_entries")
    on_disk = {e.key for e in await edge.store.entries("", None, 100)}
    assert len(on_disk) == m.get("edgeproxy_cache_entries")
    # The hot tier heard of every eviction: it holds nothing the disk lost.
    for path in paths:
        key = proxy.url + path
        assert bool(await edge.store.lookup(key)) == (key in on_disk), key
