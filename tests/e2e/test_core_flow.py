"""The README walkthrough, end to end: miss, hit, stale revalidated by 304, client 304."""

from __future__ import annotations

import aiohttp

from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin

ETAG = '"v1"'


async def test_miss_then_hit(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    origin.script("/a", Reply(body=b"hello", headers={"Cache-Control": "max-age=60", "ETag": ETAG}))
    async with client.get(proxy.url + "/a") as r:
        assert r.status == 200
        assert await r.read() == b"hello"
        assert (
            r.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60"
        )
    clock.advance(10)
    async with client.get(proxy.url + "/a") as r:
        assert r.status == 200
        assert await r.read() == b"hello"
        assert r.headers["Age"] == "10"
        assert r.headers["Cache-Status"] == "edgeproxy; hit; ttl=50"
        assert r.headers["ETag"] == ETAG
    assert origin.hits("/a") == 1


async def test_stale_entry_revalidated_with_304(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    origin.script(
        "/a",
        Reply(
            body=b"hello", headers={"Cache-Control": "max-age=5", "ETag": ETAG, "X-Version": "1"}
        ),
    )
    async with client.get(proxy.url + "/a") as r:
        assert await r.read() == b"hello"
    clock.advance(6)
    origin.script(
        "/a",
        Reply(status=304, headers={"Cache-Control": "max-age=5", "ETag": ETAG, "X-Version": "2"}),
    )
    async with client.get(proxy.url + "/a") as r:
        assert r.status == 200
        assert await r.read() == b"hello"
        assert r.headers["X-Version"] == "2"  # fields refreshed from the 304 (RFC 9111 4.3.4)
        assert r.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=5"
        assert r.headers["Age"] == "0"
    assert origin.hits("/a") == 2
    assert origin.last().headers["If-None-Match"] == ETAG
    clock.advance(2)
    async with client.get(proxy.url + "/a") as r:
        assert r.headers["Cache-Status"] == "edgeproxy; hit; ttl=3"
        assert r.headers["X-Version"] == "2"
        assert await r.read() == b"hello"
    assert origin.hits("/a") == 2


async def test_client_conditional_answered_from_cache(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/a", Reply(body=b"hello", headers={"Cache-Control": "max-age=60", "ETag": ETAG}))
    async with client.get(proxy.url + "/a") as r:
        await r.read()
    async with client.get(proxy.url + "/a", headers={"If-None-Match": f'"other", W/{ETAG}'}) as r:
        assert r.status == 304
        assert await r.read() == b""
        assert r.headers["ETag"] == ETAG
        assert r.headers["Cache-Control"] == "max-age=60"
        assert "Date" in r.headers
    assert origin.hits("/a") == 1
