"""`PURGE <url>` on the public listener: off by default, admin token required."""

from __future__ import annotations

from dataclasses import replace

import aiohttp

from edgeproxy.state import EDGE
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

TOKEN = "s3cret-token"
CACHEABLE = {"Cache-Control": "max-age=600"}


def enable(proxy: Proxy, token: str | None) -> None:
    edge = proxy.app[EDGE]
    cfg = edge.snapshot.config
    admin = replace(cfg.admin, purge_method=True)
    edge.snapshot = replace(edge.snapshot, config=replace(cfg, admin=admin))
    edge.admin_token = token


async def stored(proxy: Proxy, client: aiohttp.ClientSession, path: str) -> bool:
    got = await fetch(client, "GET", proxy.url + path, headers={"Cache-Control": "only-if-cached"})
    return got.status == 200


async def test_off_by_default_purge_is_forwarded(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/a", Reply(body=b"a", headers=CACHEABLE))
    await fetch(client, "GET", proxy.url + "/a")
    got = await fetch(client, "PURGE", proxy.url + "/a", headers={"Authorization": "Bearer x"})
    assert got.status == 200  # the origin's answer to an extension method
    assert origin.last().method == "PURGE"
    # Like any unsafe method answered 2xx, it invalidates what we hold (RFC 9111 4.4).
    assert not await stored(proxy, client, "/a")


async def test_enabled_purge_with_token(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    enable(proxy, TOKEN)
    origin.script("/a", Reply(body=b"a", headers=CACHEABLE))
    origin.script("/b", Reply(body=b"b", headers=CACHEABLE))
    for path in ("/a", "/b"):
        await fetch(client, "GET", proxy.url + path)
    hits = origin.hits()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        got = await fetch(client, "PURGE", proxy.url + "/a", headers=headers)
        assert got.status == 401
        assert b"PURGE needs the admin token: invalid bearer token" in got.body
    assert await stored(proxy, client, "/a")
    got = await fetch(
        client, "PURGE", proxy.url + "/a", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert got.status == 200
    assert b'"purged": 1' in got.body
    assert origin.hits() == hits  # never forwarded
    assert not await stored(proxy, client, "/a")
    assert await stored(proxy, client, "/b")


async def test_enabled_without_a_configured_token_refuses(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    enable(proxy, None)
    origin.script("/a", Reply(body=b"a", headers=CACHEABLE))
    await fetch(client, "GET", proxy.url + "/a")
    got = await fetch(client, "PURGE", proxy.url + "/a", headers={"Authorization": "Bearer x"})
    assert got.status == 401 and b"no admin token is configured" in got.body
    assert await stored(proxy, client, "/a")
