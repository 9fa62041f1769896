"""Origin pools: balancing, passive ejection, active health checks, retries.

Two scripted origins stand for two servers of one origin. Pool time (ejection
timeouts) runs on a FakeClock of its own; the active health-check test uses
small real intervals with bounded waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.config import CacheConfig, Config, OriginConfig, default_route
from edgeproxy.pool import PoolSettings, Strategy
from edgeproxy.server import build_app, snapshot
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.harness import (
    ProductionTestServer,
    Proxy,
    Reply,
    ScriptedOrigin,
    closed_port_url,
    fetch,
    until,
)

NO_STORE = {"Cache-Control": "no-store"}


class PoolProxy(Proxy):
    """The proxy with its pool clock injected too."""

    def __init__(
        self, config: Config, clock: Callable[[], float], monotonic: Callable[[], float]
    ) -> None:
        super().__init__(config, clock)
        self.monotonic = monotonic

    async def start(self) -> None:
        app = build_app(self.config, clock=self.clock, monotonic=self.monotonic)
        self.server = ProductionTestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()


def url(o: ScriptedOrigin) -> str:
    assert o.server is not None
    return f"http://127.0.0.1:{o.server.port}"


def pool_config(servers: tuple[str, ...], cache_dir: str, **pool: Any) -> Config:
    origin = OriginConfig(
        "default", servers, connect_timeout=2.0, read_timeout=2.0, pool=PoolSettings(**pool)
    )
    cfg = Config(
        origins=MappingProxyType({"default": origin}), cache=CacheConfig(directory=cache_dir)
    )
    return replace(cfg, routes=(default_route(cfg, "default"),))


Start = Callable[..., Awaitable[PoolProxy]]


@pytest.fixture
def pool_clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
async def second(clock: FakeClock) -> AsyncIterator[ScriptedOrigin]:
    o = ScriptedOrigin(clock)
    await o.start()
    yield o
    await o.close()


@pytest.fixture
async def start(clock: FakeClock, pool_clock: FakeClock, tmp_path: Any) -> AsyncIterator[Start]:
    started: list[PoolProxy] = []

    async def go(
        servers: tuple[str, ...], monotonic: Callable[[], float] | None = None, **pool: Any
    ) -> PoolProxy:
        cfg = pool_config(servers, str(tmp_path / "cache"), **pool)
        p = PoolProxy(cfg, clock, monotonic or pool_clock)
        await p.start()
        started.append(p)
        return p

    yield go
    for p in started:
        await p.close()


def is_up(proxy: Proxy, server: str, now: float) -> bool:
    return proxy.app[EDGE].pools()["default"].is_up(server, now)


async def test_round_robin_over_the_servers(
    start: Start, origin: ScriptedOrigin, second: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    for o, name in ((origin, b"a"), (second, b"b")):
        o.script("/p", Reply(body=name, headers=NO_STORE))
    proxy = await start((url(origin), url(second)))
    bodies = [(await fetch(client, "GET", proxy.url + "/p")).body for _ in range(4)]
    assert bodies == [b"a", b"b", b"a", b"b"]


async def test_least_connections_avoids_the_busy_server(
    start: Start, origin: ScriptedOrigin, second: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=b"a", headers=NO_STORE)

    origin.script("/p", slow)
    second.script("/p", Reply(body=b"b", headers=NO_STORE))
    proxy = await start((url(origin), url(second)), strategy=Strategy.LEAST_CONNECTIONS)
    busy = asyncio.create_task(fetch(client, "GET", proxy.url + "/p?0"))
    await until(lambda: origin.hits("/p") == 1, "a request held by the first server")
    # Round robin would send the second of these to the busy server. (Other
    # URLs: the same one would wait for the busy one, collapsed.)
    bodies = [(await fetch(client, "GET", proxy.url + f"/p?{i}")).body for i in (1, 2)]
    assert bodies == [b"b", b"b"]
    gate.set()
    assert (await busy).body == b"a"
    assert (origin.hits("/p"), second.hits("/p")) == (1, 2)


async def test_passive_ejection_after_consecutive_failures_then_probation(
    start: Start,
    origin: ScriptedOrigin,
    second: ScriptedOrigin,
    client: aiohttp.ClientSession,
    pool_clock: FakeClock,
) -> None:
    origin.script("/p", Reply(status=503, body=b"sick", headers=NO_STORE))
    second.script("/p", Reply(body=b"b", headers=NO_STORE))
    proxy = await start((url(origin), url(second)), fail_threshold=2, ejection_timeout=30)
    got = [await fetch(client, "GET", proxy.url + "/p") for _ in range(6)]
    # A 503 is an answer: relayed, never retried (the request reached a server).
    assert [g.status for g in got] == [503, 200, 503, 200, 200, 200]
    assert origin.hits("/p") == 2  # ejected after its second consecutive failure
    assert not is_up(proxy, url(origin), pool_clock())
    # Checks off: back after ejection_timeout, on probation; it is well now.
    pool_clock.advance(30)
    origin.script("/p", Reply(body=b"a", headers=NO_STORE))
    bodies = {(await fetch(client, "GET", proxy.url + "/p")).body for _ in range(2)}
    assert bodies == {b"a", b"b"}
    assert origin.hits("/p") == 3
    assert proxy.app[EDGE].pools()["default"].state(url(origin), pool_clock()).probation is False


async def test_a_lone_server_is_never_ejected(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/p", Reply(status=502, headers=NO_STORE))
    proxy = await start((url(origin),), fail_threshold=1)
    got = [await fetch(client, "GET", proxy.url + "/p") for _ in range(4)]
    assert [g.status for g in got] == [502] * 4
    assert origin.hits("/p") == 4


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_idempotent_request_that_cannot_connect_is_retried_on_another_server(
    start: Start, second: ScriptedOrigin, client: aiohttp.ClientSession, method: str
) -> None:
    # RFC 9110 section 9.2.2; pool.should_retry: GET and HEAD, once.
    second.script("/p", Reply(body=b"b", headers=NO_STORE))
    proxy = await start((closed_port_url(), url(second)))
    got = await fetch(client, method, proxy.url + "/p")
    assert got.status == 200
    assert second.hits("/p") == 1


async def test_non_idempotent_request_is_never_retried(
    start: Start, second: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    second.script("/p", Reply(body=b"b", headers=NO_STORE))
    proxy = await start((closed_port_url(), url(second)))
    got = await fetch(client, "POST", proxy.url + "/p", data=b"once")
    assert got.status == 502
    assert got.headers["Proxy-Status"].startswith("edgeproxy; error=connection_refused")
    assert second.hits("/p") == 0


async def test_every_server_down_is_503_naming_the_origin_or_stale_if_error(
    start: Start,
    origin: ScriptedOrigin,
    second: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
) -> None:
    for o in (origin, second):
        o.script(
            "/s", Reply(body=b"stored", headers={"Cache-Control": "max-age=10, stale-if-error=60"})
        )
        o.script("/p", Reply(status=503, headers=NO_STORE))
    proxy = await start((url(origin), url(second)), fail_threshold=1)
    assert (await fetch(client, "GET", proxy.url + "/s")).body == b"stored"
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    assert [(await fetch(client, "GET", proxy.url + "/p")).status for _ in range(2)] == [503, 503]
    hits = origin.hits() + second.hits()
    # Both ejected: nothing is tried. RFC 9110 15.6.4, RFC 9209 section 2.3.
    got = await fetch(client, "GET", proxy.url + "/p")
    assert got.status == 503
    assert got.body.startswith(b"Service Unavailable")
    assert got.headers["Proxy-Status"] == (
        'edgeproxy; error=destination_unavailable; details="origin default: all 2 servers are down"'
    )
    # A stale entry within stale-if-error is the answer instead (RFC 5861 section 4).
    clock.advance(15)
    got = await fetch(client, "GET", proxy.url + "/s")
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; ttl=-5; detail=stale-if-error"
    assert origin.hits() + second.hits() == hits


async def test_active_health_checks_eject_and_restore(
    start: Start, origin: ScriptedOrigin, second: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    health = {"a": 503}

    async def check_a(request: web.Request) -> web.StreamResponse:
        return web.Response(status=health["a"])

    origin.script("/health", check_a)
    second.script("/health", Reply(status=200))
    for o, name in ((origin, b"a"), (second, b"b")):
        o.script("/p", Reply(body=name, headers=NO_STORE))
    a = url(origin)
    proxy = await start(
        (a, url(second)),
        monotonic=time.monotonic,
        health_path="/health",
        interval=0.1,
        timeout=0.1,
        rise=2,
        fail_threshold=2,
    )
    await until(lambda: not is_up(proxy, a, time.monotonic()), "the failing server's ejection")
    bodies = [(await fetch(client, "GET", proxy.url + "/p")).body for _ in range(3)]
    assert bodies == [b"b"] * 3
    assert origin.hits("/p") == 0
    assert origin.last().headers["User-Agent"] == "edgeproxy-health-check"
    # Its checks pass again: back after `rise` passing checks.
    health["a"] = 200
    await until(lambda: is_up(proxy, a, time.monotonic()), "the server's return")
    bodies = [(await fetch(client, "GET", proxy.url + "/p")).body for _ in range(2)]
    assert sorted(bodies) == [b"a", b"b"]


async def test_reload_rebuilds_the_pool_keeping_known_servers_state(
    start: Start,
    origin: ScriptedOrigin,
    second: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    pool_clock: FakeClock,
) -> None:
    origin.script("/p", Reply(status=503, headers=NO_STORE))
    second.script("/p", Reply(body=b"b", headers=NO_STORE))
    dead = closed_port_url()
    proxy = await start((url(origin), dead), fail_threshold=1)
    await fetch(client, "GET", proxy.url + "/p")  # ejects the first server
    edge = proxy.app[EDGE]
    assert not is_up(proxy, url(origin), pool_clock())
    # The second server is replaced; the first keeps its ejection.
    cfg = edge.snapshot.config
    new = replace(cfg.origins["default"], servers=(url(origin), url(second)))
    edge.snapshot = snapshot(replace(cfg, origins=MappingProxyType({"default": new})))
    bodies = [(await fetch(client, "GET", proxy.url + "/p")).body for _ in range(3)]
    assert bodies == [b"b"] * 3
    assert origin.hits("/p") == 1
    assert edge.pools()["default"].servers == (url(origin), url(second))
