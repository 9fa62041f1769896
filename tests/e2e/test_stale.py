"""Serving stale: stale-while-revalidate and stale-if-error (RFC 5861), the
limits RFC 9111 section 4.2.4 puts on them, and grace (how long past expiry
an entry is kept)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.config import Config
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch, make_config, until

ETAG = '"v1"'
SWR = {"Cache-Control": "max-age=10, stale-while-revalidate=30", "ETag": ETAG}
SIE = {"Cache-Control": "max-age=10, stale-if-error=60", "ETag": ETAG}

Start = Callable[..., Awaitable[Proxy]]


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


@pytest.fixture
async def start(origin: ScriptedOrigin, clock: FakeClock, tmp_path: Any) -> AsyncIterator[Start]:
    """A proxy whose one route takes these policy settings (grace, RFC 5861 defaults)."""
    started: list[Proxy] = []

    async def go(read_timeout: float = 2.0, **policy: Any) -> Proxy:
        cfg: Config = make_config(
            origin_url(origin), str(tmp_path / "cache"), read_timeout=read_timeout
        )
        route = cfg.routes[0]
        cfg = replace(cfg, routes=(replace(route, policy=replace(route.policy, **policy)),))
        p = Proxy(cfg, clock)
        await p.start()
        started.append(p)
        return p

    yield go
    for p in started:
        await p.close()


def gated_304(
    origin: ScriptedOrigin, gate: asyncio.Event, headers: dict[str, str]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=304, headers={"Date": origin.date(), **headers})

    return handle


async def prime(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    origin.script("/r", Reply(body=b"stored", headers=headers))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert "; stored" in got.headers["Cache-Status"]
    await landed(proxy)


async def landed(proxy: Proxy) -> None:
    """The client may have the whole body before the commit: wait for the fill to land."""
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")


# -- stale-while-revalidate (RFC 5861 section 3) ----------------------------


async def test_stale_while_revalidate_answers_at_once_and_revalidates_once(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SWR)
    clock.advance(15)
    gate = asyncio.Event()
    origin.script("/r", gated_304(origin, gate, {**SWR, "X-Version": "2"}))
    # Five clients, all answered while the origin has not answered yet.
    got = await asyncio.gather(*(fetch(client, "GET", proxy.url + "/r") for _ in range(5)))
    assert not gate.is_set()
    for g in got:
        assert (g.status, g.body) == (200, b"stored")
        assert g.headers["Cache-Status"] == "edgeproxy; hit; ttl=-5; detail=stale-while-revalidate"
        assert g.headers["Age"] == "15"
    # One background revalidation, conditional, not one per request.
    await until(lambda: origin.hits("/r") == 2, "the background revalidation")
    assert origin.last().headers["If-None-Match"] == ETAG
    gate.set()
    await proxy.app[EDGE].drain()
    got1 = await fetch(client, "GET", proxy.url + "/r")
    assert got1.headers["Cache-Status"] == "edgeproxy; hit; ttl=10"
    assert got1.headers["X-Version"] == "2"
    assert got1.headers["Age"] == "0"
    assert origin.hits("/r") == 2


async def test_background_revalidation_completes_when_its_client_leaves_at_once(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SWR)
    clock.advance(15)
    gate = asyncio.Event()

    async def new_body(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=b"fresh", headers={"Date": origin.date(), **SWR, "ETag": '"v2"'})

    origin.script("/r", new_body)
    assert proxy.server is not None
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    writer.write(f"GET /r HTTP/1.1\r\nHost: 127.0.0.1:{proxy.server.port}\r\n\r\n".encode())
    await writer.drain()
    writer.close()  # gone before any answer
    await writer.wait_closed()
    await until(lambda: origin.hits("/r") == 2, "the background request")
    gate.set()
    await proxy.app[EDGE].drain()
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.body, got.headers["Cache-Status"]) == (b"fresh", "edgeproxy; hit; ttl=10")
    assert origin.hits("/r") == 2


async def test_without_validator_the_background_request_refetches(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    swr = {"Cache-Control": "max-age=10, stale-while-revalidate=30"}
    await prime(proxy, origin, client, swr)
    clock.advance(15)
    origin.script("/r", Reply(body=b"fresh", headers=swr))
    got = await fetch(client, "GET", proxy.url + "/r", headers={"If-None-Match": '"x"'})
    assert got.body == b"stored"
    await proxy.app[EDGE].drain()
    assert "If-None-Match" not in origin.last().headers  # our refetch, not the client's
    assert (await fetch(client, "GET", proxy.url + "/r")).body == b"fresh"
    assert origin.hits("/r") == 2


async def test_past_the_window_revalidation_is_synchronous(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SWR)
    clock.advance(41)  # 31 s stale: past stale-while-revalidate=30
    origin.script("/r", Reply(status=304, headers=SWR))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=10"
    assert origin.hits("/r") == 2


async def test_route_default_stale_while_revalidate(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start(stale_while_revalidate=30)
    await prime(proxy, origin, client, {"Cache-Control": "max-age=10", "ETag": ETAG})
    clock.advance(15)
    origin.script("/r", Reply(status=304, headers={"Cache-Control": "max-age=10", "ETag": ETAG}))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=-5; detail=stale-while-revalidate"
    await proxy.app[EDGE].drain()
    assert origin.hits("/r") == 2


FORBIDDEN = [
    pytest.param("max-age=10, must-revalidate", id="must-revalidate-5.2.2.2"),
    pytest.param("max-age=10, proxy-revalidate", id="proxy-revalidate-5.2.2.8"),
    pytest.param("s-maxage=10", id="s-maxage-5.2.2.10"),
    pytest.param("no-cache, max-age=10", id="no-cache-5.2.2.4"),
]


@pytest.mark.parametrize("cc", FORBIDDEN)
async def test_never_stale_while_revalidate_where_directives_forbid_it(
    start: Start,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    cc: str,
) -> None:
    # RFC 9111 section 4.2.4: "MUST NOT generate a stale response if it is
    # prohibited by an explicit in-protocol directive".
    headers = {"Cache-Control": f"{cc}, stale-while-revalidate=30", "ETag": ETAG}
    proxy = await start()
    await prime(proxy, origin, client, headers)
    clock.advance(15)
    origin.script("/r", Reply(status=304, headers=headers))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
    assert origin.hits("/r") == 2


# -- stale-if-error (RFC 5861 section 4) -----------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_stale_if_error_answers_origin_error_statuses(
    start: Start,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    status: int,
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SIE)
    clock.advance(15)
    origin.script("/r", Reply(status=status, body=b"origin error"))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"] == (
        f"edgeproxy; fwd=stale; fwd-status={status}; ttl=-5; detail=stale-if-error"
    )
    assert got.headers["Age"] == "15"
    # Past the window: the error itself.
    clock.advance(60)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (status, b"origin error")
    assert origin.hits("/r") == 3


async def test_a_non_error_status_is_not_replaced(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SIE)
    clock.advance(15)
    origin.script("/r", Reply(status=404, body=b"gone"))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (404, b"gone")
    assert origin.hits("/r") == 2


async def test_stale_if_error_when_the_origin_drops_the_connection(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SIE)
    clock.advance(15)

    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    origin.script("/r", hang_up)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (200, b"stored")
    # No answer came, so no fwd-status (RFC 9211 section 2.3).
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; ttl=-5; detail=stale-if-error"
    # The fill, the revalidation and the HTTP client's one retry of a GET on a
    # dropped connection (RFC 9112 section 9.3.1).
    assert origin.hits("/r") == 3


async def test_stale_if_error_when_the_origin_times_out(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start(read_timeout=0.2)
    await prime(proxy, origin, client, SIE)
    clock.advance(15)
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response()

    origin.script("/r", stall)
    try:
        got = await fetch(client, "GET", proxy.url + "/r")
    finally:
        release.set()
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; ttl=-5; detail=stale-if-error"
    assert origin.hits("/r") == 2


async def test_request_stale_if_error_and_route_default(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    host = {"Host": "edge.test"}  # one cache key across the restart below
    proxy = await start()
    origin.script(
        "/r", Reply(body=b"stored", headers={"Cache-Control": "max-age=10", "ETag": ETAG})
    )
    await fetch(client, "GET", proxy.url + "/r", headers=host)
    await landed(proxy)
    clock.advance(15)
    origin.script("/r", Reply(status=503))
    assert (await fetch(client, "GET", proxy.url + "/r", headers=host)).status == 503
    # RFC 5861 section 4: the directive in a request too.
    got = await fetch(
        client, "GET", proxy.url + "/r", headers={**host, "Cache-Control": "stale-if-error=60"}
    )
    assert (got.status, got.body) == (200, b"stored")
    await proxy.close()
    proxy = await start(stale_if_error=60)  # same cache directory
    got = await fetch(client, "GET", proxy.url + "/r", headers=host)
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"].endswith("detail=stale-if-error")
    assert origin.hits("/r") == 4


@pytest.mark.parametrize("cc", FORBIDDEN)
async def test_never_stale_if_error_where_directives_forbid_it(
    start: Start,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    cc: str,
) -> None:
    # RFC 9111 section 5.2.2.2: a cache that cannot reach the origin "MUST
    # generate an error response" rather than reuse a must-revalidate one.
    proxy = await start(stale_if_error=600)
    await prime(proxy, origin, client, {"Cache-Control": f"{cc}, stale-if-error=60", "ETag": ETAG})
    clock.advance(15)
    origin.script("/r", Reply(status=503, body=b"down"))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (503, b"down")
    assert origin.hits("/r") == 2


async def test_uncacheable_methods_never_get_stale(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start()
    await prime(proxy, origin, client, SIE)
    clock.advance(15)
    origin.script("/r", Reply(status=503))
    assert (await fetch(client, "POST", proxy.url + "/r", data=b"x")).status == 503
    assert origin.hits("/r") == 2


# -- grace: keeping expired entries (policy/stale.py keep_until) ----------------


async def test_within_grace_revalidated_past_it_refetched_whole(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    plain = {"Cache-Control": "max-age=10", "ETag": ETAG}
    proxy = await start(grace=20)
    await prime(proxy, origin, client, plain)
    clock.advance(25)  # 15 s past expiry: within grace, so revalidated (4.3.1)
    origin.script("/r", Reply(status=304, headers=plain))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=10"
    assert origin.last().headers["If-None-Match"] == ETAG
    clock.advance(35)  # 25 s past the new expiry: past grace, a miss
    origin.script("/r", Reply(body=b"new", headers=plain))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert "If-None-Match" not in origin.last().headers
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=200; stored; ttl=10"
    assert origin.hits("/r") == 3


async def test_an_entry_past_its_keep_time_is_deleted(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    proxy = await start(grace=20)
    await prime(proxy, origin, client, {"Cache-Control": "max-age=10", "ETag": ETAG})
    edge = proxy.app[EDGE]
    (entry,) = await edge.store.lookup((await edge.store.entries())[0].key)
    clock.advance(40)
    # The origin's new answer is not storable, so only the deletion can empty the store.
    origin.script("/r", Reply(body=b"private", headers={"Cache-Control": "no-store"}))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.body == b"private"
    await edge.drain()
    assert await edge.store.lookup(entry.key) == []
    assert edge.counters["discarded"] == 1
    assert origin.hits("/r") == 2


async def test_expired_entries_are_kept_while_still_servable_on_error(
    start: Start, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # No validator and grace 0, but stale-if-error=60: kept for 60 s past expiry.
    proxy = await start(grace=0)
    await prime(proxy, origin, client, {"Cache-Control": "max-age=10, stale-if-error=60"})
    clock.advance(50)
    origin.script("/r", Reply(status=502))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (200, b"stored")
    assert proxy.app[EDGE].counters["discarded"] == 0
    assert origin.hits("/r") == 2
