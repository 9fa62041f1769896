"""Request collapsing: concurrent misses of one key make one origin request.

Cache-Status `collapsed` (RFC 9211 section 2.5) marks the requests answered
from another one's forward. The origin here blocks on an asyncio.Event until
the test has every request waiting, so "exactly once" is not a race won.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Got, Proxy, Reply, ScriptedOrigin, fetch, until

BODY = b"the one answer"
ETAG = '"v1"'
MAX_AGE = {"Cache-Control": "max-age=60"}


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


def waiting(proxy: Proxy) -> int:
    """Requests waiting on a leader, over all keys."""
    return sum(proxy.app[EDGE].flights.waiting().values())


@pytest.fixture
async def wide_client() -> AsyncIterator[aiohttp.ClientSession]:
    # No connection limit: 200 requests must be in flight at once.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as s:
        yield s


def gated(
    origin: ScriptedOrigin,
    gate: asyncio.Event,
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    status: int = 200,
    first_only: bool = False,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that answers once `gate` is set (only the first request, if first_only)."""
    calls = {"n": 0}

    async def handle(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 1 or not first_only:
            await gate.wait()
        h = {"Date": origin.date(), **(MAX_AGE if headers is None else headers)}
        return web.Response(status=status, body=body, headers=h)

    return handle


def statuses(got: list[Got]) -> Counter[str]:
    return Counter(g.headers["Cache-Status"] for g in got)


async def test_200_concurrent_misses_reach_the_origin_once(
    proxy: Proxy, origin: ScriptedOrigin, wide_client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()
    origin.script("/k", gated(origin, gate))
    tasks = [asyncio.create_task(fetch(wide_client, "GET", proxy.url + "/k")) for _ in range(200)]
    await until(lambda: waiting(proxy) == 199, "199 waiters")
    assert origin.hits("/k") == 1
    gate.set()
    got = await asyncio.gather(*tasks)
    assert origin.hits("/k") == 1
    assert all((g.status, g.body) == (200, BODY) for g in got)
    assert statuses(got) == {
        "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60": 1,
        "edgeproxy; fwd=uri-miss; fwd-status=200; collapsed; ttl=60": 199,
    }
    # Nothing left behind once the leader has committed.
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    got1 = await fetch(wide_client, "GET", proxy.url + "/k")
    assert got1.headers["Cache-Status"] == "edgeproxy; hit; ttl=60"


async def test_200_concurrent_revalidations_of_a_stale_key_reach_the_origin_once(
    proxy: Proxy,
    origin: ScriptedOrigin,
    wide_client: aiohttp.ClientSession,
    clock: FakeClock,
) -> None:
    headers = {"Cache-Control": "max-age=5", "ETag": ETAG}
    origin.script("/s", Reply(body=BODY, headers=headers))
    assert (await fetch(wide_client, "GET", proxy.url + "/s")).body == BODY
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    clock.advance(6)
    gate = asyncio.Event()
    origin.script("/s", gated(origin, gate, body=b"", headers=headers, status=304))
    tasks = [asyncio.create_task(fetch(wide_client, "GET", proxy.url + "/s")) for _ in range(200)]
    await until(lambda: waiting(proxy) == 199, "199 waiters")
    gate.set()
    got = await asyncio.gather(*tasks)
    assert origin.hits("/s") == 2  # the fill, then one revalidation (RFC 9111 4.3.1)
    assert origin.last().headers["If-None-Match"] == ETAG
    assert all((g.status, g.body) == (200, BODY) for g in got)
    assert statuses(got) == {
        "edgeproxy; fwd=stale; fwd-status=304; ttl=5": 1,
        "edgeproxy; fwd=stale; fwd-status=304; collapsed; ttl=5": 199,
    }


async def test_waiters_stream_the_body_as_it_arrives(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    first, rest = b"a" * 5000, b"b" * 7000
    gate = asyncio.Event()

    async def halves(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**MAX_AGE, "Date": origin.date()})
        resp.content_length = len(first) + len(rest)
        await resp.prepare(request)
        await resp.write(first)
        await gate.wait()
        await resp.write(rest)
        await resp.write_eof()
        return resp

    origin.script("/h", halves)
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/h"))
    await until(lambda: origin.hits("/h") == 1, "the leader upstream")
    got_first = asyncio.Event()

    async def waiter() -> tuple[str, bytes]:
        async with client.get(proxy.url + "/h") as r:
            head = await r.content.readexactly(len(first))
            got_first.set()
            return r.headers["Cache-Status"], head + await r.read()

    w = asyncio.create_task(waiter())
    # The first half reaches the waiter while the origin still holds the rest.
    await asyncio.wait_for(got_first.wait(), 10)
    assert not gate.is_set()
    gate.set()
    status, body = await w
    assert body == first + rest
    assert status == "edgeproxy; fwd=uri-miss; fwd-status=200; collapsed; ttl=60"
    assert (await leader).body == first + rest
    assert origin.hits("/h") == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Cache-Control": "private, max-age=60"}, id="private-5.2.2.7"),
        pytest.param({"Cache-Control": "no-store"}, id="no-store-5.2.2.5"),
        pytest.param({"Cache-Control": "max-age=60", "Set-Cookie": "a=1"}, id="set-cookie"),
    ],
)
async def test_uncacheable_answer_releases_waiters_and_marks_hit_for_pass(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    headers: dict[str, str],
) -> None:
    gate = asyncio.Event()
    origin.script("/u", gated(origin, gate, headers=headers, first_only=True))
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/u"))
    await until(lambda: origin.hits("/u") == 1, "the leader upstream")
    waiters = [asyncio.create_task(fetch(client, "GET", proxy.url + "/u")) for _ in range(5)]
    await until(lambda: waiting(proxy) == 5, "5 waiters")
    gate.set()
    got = [await leader, *await asyncio.gather(*waiters)]
    # Each waiter fetched its own: a private answer is nobody else's.
    assert origin.hits("/u") == 6
    assert all(g.status == 200 and "collapsed" not in g.headers["Cache-Status"] for g in got)

    # Hit-for-pass: for a while, concurrent requests for the key all go upstream at once.
    gate2 = asyncio.Event()
    origin.script("/u", gated(origin, gate2, headers=headers))
    burst = [asyncio.create_task(fetch(client, "GET", proxy.url + "/u")) for _ in range(3)]
    await until(lambda: origin.hits("/u") == 9, "3 uncollapsed requests at the origin")
    assert waiting(proxy) == 0
    gate2.set()
    await asyncio.gather(*burst)

    # Past hit_for_pass (30 s by default) the key collapses again.
    clock.advance(31)
    gate3 = asyncio.Event()
    origin.script("/u", gated(origin, gate3, headers=headers))
    again = [asyncio.create_task(fetch(client, "GET", proxy.url + "/u")) for _ in range(2)]
    await until(lambda: waiting(proxy) == 1 and origin.hits("/u") == 10, "a leader and a waiter")
    gate3.set()
    await asyncio.gather(*again)


async def test_leader_failure_answers_waiters_without_hanging_or_retrying(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()

    async def hang_up(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        assert request.transport is not None
        request.transport.abort()  # no response at all
        return web.Response()

    origin.script("/f", hang_up)
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/f"))
    await until(lambda: origin.hits("/f") == 1, "the leader upstream")
    waiters = [asyncio.create_task(fetch(client, "GET", proxy.url + "/f")) for _ in range(3)]
    await until(lambda: waiting(proxy) == 3, "3 waiters")
    gate.set()
    got = [await leader, *await asyncio.gather(*waiters)]
    # The leader got no response (RFC 9110 15.6.3); its waiters get the same
    # 502 rather than one more request each to an origin that is failing.
    assert [g.status for g in got] == [502] * 4
    assert all("error=connection_terminated" in g.headers["Proxy-Status"] for g in got)
    # The leader's one request, and the HTTP client's one retry of a GET on a
    # dropped connection (RFC 9112 section 9.3.1); none from the waiters.
    assert origin.hits("/f") == 2


async def test_waiting_is_bounded_then_the_waiter_goes_on_its_own(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()
    origin.script("/w", gated(origin, gate, first_only=True))
    proxy = await make_proxy(origin_url(origin), collapse_wait=0.2)
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/w"))
    await until(lambda: origin.hits("/w") == 1, "the leader upstream")
    # The leader's origin request is stuck; the waiter gives up on it and
    # fetches for itself, while the leader is still waiting.
    got = await fetch(client, "GET", proxy.url + "/w")
    assert (got.status, got.body) == (200, BODY)
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60"
    assert not leader.done()
    gate.set()
    assert (await leader).body == BODY
    assert origin.hits("/w") == 2


async def test_waiters_per_key_are_bounded(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()
    # All held: an early answer would be stored and turn later arrivals into hits.
    origin.script("/m", gated(origin, gate))
    proxy = await make_proxy(origin_url(origin), collapse_max_waiters=2)
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/m"))
    await until(lambda: origin.hits("/m") == 1, "the leader upstream")
    more = [asyncio.create_task(fetch(client, "GET", proxy.url + "/m")) for _ in range(4)]
    # Two wait; the other two go upstream on their own.
    await until(lambda: origin.hits("/m") == 3 and waiting(proxy) == 2, "2 waiters, 2 own")
    gate.set()
    got = [await leader, *await asyncio.gather(*more)]
    assert all(g.body == BODY for g in got)
    assert sum("collapsed" in g.headers["Cache-Status"] for g in got) == 2
    assert origin.hits("/m") == 3


async def test_collapsing_off_with_zero_waiters(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()
    origin.script("/z", gated(origin, gate))
    proxy = await make_proxy(origin_url(origin), collapse_max_waiters=0)
    tasks = [asyncio.create_task(fetch(client, "GET", proxy.url + "/z")) for _ in range(3)]
    await until(lambda: origin.hits("/z") == 3, "3 requests upstream")
    gate.set()
    await asyncio.gather(*tasks)


async def test_leader_client_leaving_does_not_stop_the_fill_for_waiters(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # 16 MiB: far more than socket buffers hold, so the proxy is mid-body when
    # the leader's client hangs up; past the 256 KiB buffer, so the body spills
    # to a file for the waiter.
    size, chunk = 16 << 20, bytes(range(256)) * 256
    gate = asyncio.Event()
    sent = {"bytes": 0}

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**MAX_AGE, "Date": origin.date()})
        resp.content_length = size
        await resp.prepare(request)
        while sent["bytes"] < size:
            if sent["bytes"] == 128 << 10:  # under the buffer until the waiter is in
                await gate.wait()
            await resp.write(chunk)
            sent["bytes"] += len(chunk)
        await resp.write_eof()
        return resp

    origin.script("/big", big)
    proxy = await make_proxy(origin_url(origin))
    async with client.get(proxy.url + "/big") as leader:
        assert "; stored" in leader.headers["Cache-Status"]
        await leader.content.readexactly(64 << 10)

        async def waiter() -> tuple[str, int, int]:
            async with client.get(proxy.url + "/big") as r:
                n = crc = 0
                async for part in r.content.iter_chunked(65536):
                    n += len(part)
                    crc = zlib.crc32(part, crc)
                return r.headers["Cache-Status"], n, crc

        w = asyncio.create_task(waiter())
        await until(lambda: waiting(proxy) == 1, "the waiter")
        leader.close()  # hang up mid-body
    gate.set()
    status, n, crc = await w
    expected = 0
    for _ in range(size // len(chunk)):
        expected = zlib.crc32(chunk, expected)
    assert (n, crc) == (size, expected)
    assert "collapsed" in status
    assert sent["bytes"] == size
    # The waiter is answered before the leader commits; then the flight lands.
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    got = await fetch(client, "HEAD", proxy.url + "/big")
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")  # the fill was stored
    assert origin.hits("/big") == 1


async def test_late_arrival_after_an_unbuffered_body_waits_for_the_store(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Nobody waits when the body outgrows the buffer: no copy is kept, and a
    # request arriving later waits for the fill to land, then hits the store.
    first, rest = b"x" * (256 << 10), b"y" * (256 << 10)
    gate = asyncio.Event()

    async def halves(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**MAX_AGE, "Date": origin.date()})
        resp.content_length = len(first) + len(rest)
        await resp.prepare(request)
        await resp.write(first)
        await gate.wait()
        await resp.write(rest)
        await resp.write_eof()
        return resp

    origin.script("/l", halves)
    proxy = await make_proxy(origin_url(origin), collapse_buffer=64 << 10)
    async with client.get(proxy.url + "/l") as leader:
        head = await leader.content.readexactly(len(first))
        late = asyncio.create_task(fetch(client, "GET", proxy.url + "/l"))
        counters = proxy.app[EDGE].counters
        await until(lambda: counters["collapse_waited_for_store"] == 1, "the late request")
        gate.set()
        assert head + await leader.read() == first + rest
    got = await late
    assert got.body == first + rest
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits("/l") == 1


async def test_waiter_with_other_vary_values_fetches_its_own(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 4.1: the leader's response is stored for its Accept-Language only.
    gate = asyncio.Event()
    vary = {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
    origin.script("/v", gated(origin, gate, headers=vary, first_only=True))
    leader = asyncio.create_task(
        fetch(client, "GET", proxy.url + "/v", headers={"Accept-Language": "en"})
    )
    await until(lambda: origin.hits("/v") == 1, "the leader upstream")
    same = asyncio.create_task(
        fetch(client, "GET", proxy.url + "/v", headers={"Accept-Language": "en"})
    )
    other = asyncio.create_task(
        fetch(client, "GET", proxy.url + "/v", headers={"Accept-Language": "fr"})
    )
    await until(lambda: waiting(proxy) == 2, "2 waiters")
    gate.set()
    got_same, got_other = await same, await other
    await leader
    assert "collapsed" in got_same.headers["Cache-Status"]
    assert got_other.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss")
    assert "collapsed" not in got_other.headers["Cache-Status"]
    assert origin.hits("/v") == 2
    assert origin.last().headers["Accept-Language"] == "fr"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"Cache-Control": "no-cache"}, "fwd=request: the client asked for its own answer"),
        ({"If-None-Match": ETAG}, "a conditional miss goes upstream with the client's fields"),
    ],
)
async def test_requests_that_must_go_on_their_own_do_not_collapse(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    extra: dict[str, Any],
    why: str,
) -> None:
    gate = asyncio.Event()
    origin.script("/o", gated(origin, gate, first_only=True))
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/o"))
    await until(lambda: origin.hits("/o") == 1, "the leader upstream")
    got = await fetch(client, "GET", proxy.url + "/o", headers=extra)
    assert "collapsed" not in got.headers["Cache-Status"], why
    assert origin.hits("/o") == 2
    gate.set()
    await leader


async def test_revalidation_answered_with_a_new_body_streams_it_to_waiters(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # The stale entry's revalidation gets a new 200 (RFC 9111 4.3.3): the
    # waiters share it, each with its own preconditions evaluated against it
    # (RFC 9110 13.2.2): the one that already holds the new version gets 304.
    old = {"Cache-Control": "max-age=5", "ETag": ETAG}
    origin.script("/n", Reply(body=b"old", headers=old))
    await fetch(client, "GET", proxy.url + "/n")
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    clock.advance(6)
    gate = asyncio.Event()
    new = {"Cache-Control": "max-age=5", "ETag": '"v2"'}
    origin.script("/n", gated(origin, gate, body=b"new", headers=new))
    leader = asyncio.create_task(fetch(client, "GET", proxy.url + "/n"))
    await until(lambda: origin.hits("/n") == 2, "the revalidation upstream")
    plain = asyncio.create_task(fetch(client, "GET", proxy.url + "/n"))
    has_new = asyncio.create_task(
        fetch(client, "GET", proxy.url + "/n", headers={"If-None-Match": '"v2"'})
    )
    await until(lambda: waiting(proxy) == 2, "2 waiters")
    gate.set()
    got_leader, got_plain, got_new = await leader, await plain, await has_new
    assert origin.hits("/n") == 2
    assert got_leader.headers["Cache-Status"] == (
        "edgeproxy; fwd=stale; fwd-status=200; stored; ttl=5"
    )
    assert (got_plain.status, got_plain.body) == (200, b"new")
    assert got_plain.headers["Cache-Status"] == (
        "edgeproxy; fwd=stale; fwd-status=200; collapsed; ttl=5"
    )
    assert (got_new.status, got_new.body) == (304, b"")
    assert got_new.headers["ETag"] == '"v2"'
