"""POST /purge end to end: each kind, hard and soft, dry runs, Vary variants,
restarts, and a purge under concurrent traffic. What the client saw and what
reached the origin are both asserted.

Hard purge: the next request is a full miss (no conditional upstream). Soft
purge: the entry is stale (RFC 9111 section 4.2: `is_fresh` is false for a
soft-purged entry), so the next request revalidates with its validator
(section 4.3.1, If-None-Match) and a 304 serves the stored body.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.config import KeyRules
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch, make_config
from tests.e2e.test_admin_api import HOST, AdminAPI, admin_listener, fill, is_hit

ETAG = '"v1"'
CACHEABLE = {"Cache-Control": "max-age=600", "ETag": ETAG}


@pytest.fixture
async def admin(
    proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
) -> AsyncIterator[AdminAPI]:
    async with admin_listener(proxy, clock) as url:
        yield AdminAPI(url, client, proxy.app[EDGE])


def reply(path: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(body=b"stored " + path.encode(), headers={**CACHEABLE, **(headers or {})})


async def store(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, *paths: str, **kw: Any
) -> None:
    for path in paths:
        await fill(proxy, origin, client, path, reply=reply(path), **kw)


async def assert_full_miss(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = HOST,
    vary: bool = False,
) -> None:
    """After a hard purge: the origin gets a plain request, not a conditional one."""
    before = origin.hits()
    fresh = {**CACHEABLE, **({"Vary": "Accept-Encoding"} if vary else {})}
    origin.script(path.split("?")[0], Reply(body=b"fresh", headers=fresh))
    got = await fetch(client, method, proxy.url + path, headers={"Host": host, **(headers or {})})
    assert got.status == 200
    assert re.search(r"fwd=(uri|vary)-miss", got.headers["Cache-Status"]), got.headers
    assert origin.hits() == before + 1
    sent = origin.last()
    assert (sent.method, sent.path_qs) == (method, path)
    assert "If-None-Match" not in sent.headers


async def assert_revalidated(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str] | None = None,
    host: str = HOST,
) -> None:
    """After a soft purge: a conditional request upstream; its 304 serves the stored body."""
    before = origin.hits()
    origin.script(path.split("?")[0], Reply(status=304, headers=CACHEABLE))
    got = await fetch(client, "GET", proxy.url + path, headers={"Host": host, **(headers or {})})
    assert (got.status, got.body) == (200, b"stored " + path.encode())
    assert "fwd=stale; fwd-status=304" in got.headers["Cache-Status"]
    assert origin.hits() == before + 1
    assert origin.last().headers["If-None-Match"] == ETAG


# -- by URL -------------------------------------------------------------------------


VARIANTS = ("gzip", "br")


async def store_url_with_variants(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    for coding in VARIANTS:
        await fill(
            proxy,
            origin,
            client,
            "/p?x=1",
            headers={"Accept-Encoding": coding},
            reply=reply("/p?x=1", {"Vary": "Accept-Encoding"}),
        )
    await store(proxy, origin, client, "/p?x=12", "/p", "/other")


@pytest.mark.parametrize(
    "url",
    [
        f"http://{HOST}/p?x=1",
        # Host case and the default port are normalised as the proxy's keys are.
        f"HTTP://{HOST.upper()}:80/p?x=1",
    ],
)
async def test_url_purge_takes_every_variant_get_and_head(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    url: str,
) -> None:
    await store_url_with_variants(proxy, origin, client)
    assert await admin.purge({"url": url}) == {"purged": 2, "soft": False}
    # HEAD was answered from the stored GET: it goes upstream now too.
    await assert_full_miss(
        proxy, origin, client, "/p?x=1", "HEAD", {"Accept-Encoding": "gzip"}, vary=True
    )
    for coding in VARIANTS:
        await assert_full_miss(
            proxy, origin, client, "/p?x=1", headers={"Accept-Encoding": coding}, vary=True
        )
    for path in ("/p?x=12", "/p", "/other"):  # same path, other query: another URL
        assert await is_hit(proxy, client, path)


async def test_soft_url_purge_revalidates_every_variant(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    await store_url_with_variants(proxy, origin, client)
    assert await admin.purge({"url": f"http://{HOST}/p?x=1", "soft": True}) == {
        "purged": 2,
        "soft": True,
    }
    for coding in VARIANTS:
        await assert_revalidated(proxy, origin, client, "/p?x=1", {"Accept-Encoding": coding})
        # Revalidated: fresh again, served from storage.
        assert await is_hit(proxy, client, "/p?x=1", headers={"Accept-Encoding": coding})
    for path in ("/p?x=12", "/p", "/other"):
        assert await is_hit(proxy, client, path)


async def test_url_purge_of_nothing_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    await store(proxy, origin, client, "/a")
    assert await admin.purge({"url": f"http://{HOST}/b"}) == {"purged": 0, "soft": False}
    assert await is_hit(proxy, client, "/a")


async def test_url_purge_applies_the_route_key_rules(
    origin: ScriptedOrigin, clock: FakeClock, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # The route keys on a and b only, sorted: a purge names the URL as clients
    # request it, tracking parameters and all.
    assert origin.server is not None
    cfg = make_config(f"http://127.0.0.1:{origin.server.port}", str(tmp_path / "keyed"))
    route = replace(cfg.routes[0], key=KeyRules(query_params=("a", "b"), sort_query=True))
    keyed = Proxy(replace(cfg, routes=(route,)), clock)
    await keyed.start()
    try:
        async with admin_listener(keyed, clock) as url:
            admin = AdminAPI(url, client, keyed.app[EDGE])
            await store(keyed, origin, client, "/p?b=2&utm_source=mail&a=1", "/p?a=1")
            assert await admin.urls() == [f"http://{HOST}/p?a=1", f"http://{HOST}/p?a=1&b=2"]
            purge = {"url": f"http://{HOST}/p?utm_source=feed&b=2&a=1"}
            assert await admin.purge(purge) == {"purged": 1, "soft": False}
            await assert_full_miss(keyed, origin, client, "/p?b=2&a=1")
            assert await is_hit(keyed, client, "/p?a=1")
    finally:
        await keyed.close()


# -- by prefix ----------------------------------------------------------------------

PREFIX_PATHS = ("/img/1.png", "/img/sub/2.png", "/img", "/imgs/3.png", "/other")
UNDER_PREFIX = ("/img/1.png", "/img/sub/2.png")


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_prefix_purge(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    soft: bool,
) -> None:
    await store(proxy, origin, client, *PREFIX_PATHS)
    await store(proxy, origin, client, "/img/1.png", host="other.example")
    answer = await admin.purge({"prefix": f"http://{HOST}/img/", "soft": soft})
    assert answer == {"purged": len(UNDER_PREFIX), "soft": soft}
    check = assert_revalidated if soft else assert_full_miss
    for path in UNDER_PREFIX:
        await check(proxy, origin, client, path)
    for path in PREFIX_PATHS:
        if path not in UNDER_PREFIX:
            assert await is_hit(proxy, client, path)
    assert await is_hit(proxy, client, "/img/1.png", host="other.example")


# -- all, and all of one host -------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_purge_all_of_one_host(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    soft: bool,
) -> None:
    await store(proxy, origin, client, "/a", "/b")
    await store(proxy, origin, client, "/a", host="other.example")
    await store(proxy, origin, client, "/a", host=f"{HOST}.evil")  # not a host suffix match
    answer = await admin.purge({"all": True, "host": HOST.upper(), "soft": soft})
    assert answer == {"purged": 2, "soft": soft}
    check = assert_revalidated if soft else assert_full_miss
    for path in ("/a", "/b"):
        await check(proxy, origin, client, path)
    assert await is_hit(proxy, client, "/a", host="other.example")
    assert await is_hit(proxy, client, "/a", host=f"{HOST}.evil")


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_purge_all(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    soft: bool,
) -> None:
    await store(proxy, origin, client, "/a", "/b")
    await store(proxy, origin, client, "/a", host="other.example")
    assert await admin.purge({"all": True, "soft": soft}) == {"purged": 3, "soft": soft}
    assert (await admin.stats())["entries"] == (3 if soft else 0)
    check = assert_revalidated if soft else assert_full_miss
    for path in ("/a", "/b"):
        await check(proxy, origin, client, path)
    await check(proxy, origin, client, "/a", host="other.example")


# -- dry runs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_obj", "count"),
    [
        ({"url": f"http://{HOST}/p?x=1"}, 2),
        ({"prefix": f"http://{HOST}/p"}, 4),
        ({"all": True, "host": HOST}, 5),
        ({"all": True}, 6),
        ({"all": True, "soft": True}, 6),
    ],
)
async def test_dry_run_counts_and_touches_nothing(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    clock: FakeClock,
    request_obj: dict[str, Any],
    count: int,
) -> None:
    await store_url_with_variants(proxy, origin, client)
    await store(proxy, origin, client, "/a", host="other.example")
    listed = await admin.entries()
    hits = origin.hits()
    answer = await admin.purge({**request_obj, "dry_run": True})
    assert answer == {"purged": count, "soft": request_obj.get("soft", False), "dry_run": True}
    assert await admin.entries() == listed  # nothing deleted, nothing marked soft
    for coding in VARIANTS:
        assert await is_hit(proxy, client, "/p?x=1", headers={"Accept-Encoding": coding})
    for path in ("/p?x=12", "/p", "/other"):
        assert await is_hit(proxy, client, path)
    assert await is_hit(proxy, client, "/a", host="other.example")
    assert origin.hits() == hits
    stats = await admin.stats()
    assert (stats["purges"], stats["purged_entries"]) == (0, 0)
    # The real purge then takes exactly what the dry run counted.
    real = await admin.purge(request_obj)
    assert real["purged"] == count


# -- across a restart -------------------------------------------------------------------


async def test_purge_after_restart_on_the_same_cache_dir(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    make_proxy: MakeProxy,
) -> None:
    await store(proxy, origin, client, "/img/1.png", "/img/2.png", "/other")
    await proxy.close()
    assert origin.server is not None
    restarted = await make_proxy(f"http://127.0.0.1:{origin.server.port}")
    async with admin_listener(restarted, clock) as url:
        admin = AdminAPI(url, client, restarted.app[EDGE])
        assert await admin.urls() == [
            f"http://{HOST}/img/1.png",
            f"http://{HOST}/img/2.png",
            f"http://{HOST}/other",
        ]
        assert await admin.purge({"prefix": f"http://{HOST}/img/"}) == {"purged": 2, "soft": False}
        await assert_full_miss(restarted, origin, client, "/img/1.png")
        assert await is_hit(restarted, client, "/other")


# -- by tag (Surrogate-Key / Cache-Tag) -----------------------------------------------------


async def store_tagged(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, host: str = HOST
) -> None:
    """/p1 [product-1 list], /p2 [product-2 list], /p1v: two Vary variants tagged apart."""
    await fill(
        proxy,
        origin,
        client,
        "/p1",
        host=host,
        reply=reply("/p1", {"Surrogate-Key": "product-1 list"}),
    )
    await fill(
        proxy, origin, client, "/p2", host=host, reply=reply("/p2", {"Cache-Tag": "product-2,list"})
    )
    for coding in VARIANTS:
        await fill(
            proxy,
            origin,
            client,
            "/p1v",
            host=host,
            headers={"Accept-Encoding": coding},
            reply=reply(
                "/p1v", {"Vary": "Accept-Encoding", "Surrogate-Key": f"product-1 {coding}"}
            ),
        )


async def assert_tags_stored(admin: AdminAPI) -> None:
    tags = {
        (e["url"], e["vary"].get("accept-encoding")): e["tags"]
        for e in (await admin.entries())["entries"]
    }
    assert tags == {
        (f"http://{HOST}/p1", None): ["product-1", "list"],
        (f"http://{HOST}/p2", None): ["product-2", "list"],
        (f"http://{HOST}/p1v", "gzip"): ["product-1", "gzip"],
        (f"http://{HOST}/p1v", "br"): ["product-1", "br"],
    }


async def test_tags_are_stored_and_not_sent_to_clients(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    await store_tagged(proxy, origin, client)
    await assert_tags_stored(admin)
    assert await admin.urls(tag="list") == [f"http://{HOST}/p1", f"http://{HOST}/p2"]
    for path in ("/p1", "/p2"):
        got = await fetch(client, "GET", proxy.url + path, headers={"Host": HOST})
        assert "Surrogate-Key" not in got.headers
        assert "Cache-Tag" not in got.headers


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_tag_purge(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    soft: bool,
) -> None:
    await store_tagged(proxy, origin, client)
    await assert_tags_stored(admin)
    # product-1 is on /p1 and on both Vary variants of /p1v.
    assert await admin.purge({"tag": "product-1", "soft": soft}) == {"purged": 3, "soft": soft}
    check = assert_revalidated if soft else assert_full_miss
    await check(proxy, origin, client, "/p1")
    for coding in VARIANTS:
        if soft:
            await assert_revalidated(proxy, origin, client, "/p1v", {"Accept-Encoding": coding})
        else:
            await assert_full_miss(
                proxy, origin, client, "/p1v", headers={"Accept-Encoding": coding}, vary=True
            )
    assert await is_hit(proxy, client, "/p2")


async def test_tags_purge_takes_any_of_them_once(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    await store_tagged(proxy, origin, client)
    await assert_tags_stored(admin)
    # One Vary variant by its own tag, and /p2 by two tags: each counted once.
    dry = await admin.purge({"tags": ["gzip", "product-2", "list"], "dry_run": True})
    assert dry == {"purged": 3, "soft": False, "dry_run": True}
    assert await admin.purge({"tags": ["gzip", "product-2"]}) == {"purged": 2, "soft": False}
    await assert_full_miss(
        proxy, origin, client, "/p1v", headers={"Accept-Encoding": "gzip"}, vary=True
    )
    await assert_full_miss(proxy, origin, client, "/p2")
    assert await is_hit(proxy, client, "/p1v", headers={"Accept-Encoding": "br"})
    assert await is_hit(proxy, client, "/p1")


async def test_tag_index_survives_a_restart(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    make_proxy: MakeProxy,
    admin: AdminAPI,
) -> None:
    await store_tagged(proxy, origin, client)
    await assert_tags_stored(admin)
    await proxy.close()
    assert origin.server is not None
    restarted = await make_proxy(f"http://127.0.0.1:{origin.server.port}")
    async with admin_listener(restarted, clock) as url:
        again = AdminAPI(url, client, restarted.app[EDGE])
        await assert_tags_stored(again)
        assert await again.purge({"tag": "list"}) == {"purged": 2, "soft": False}
        await assert_full_miss(restarted, origin, client, "/p1")
        await assert_full_miss(restarted, origin, client, "/p2")
        for coding in VARIANTS:
            assert await is_hit(restarted, client, "/p1v", headers={"Accept-Encoding": coding})


async def test_a_replaced_response_takes_its_new_tags(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
) -> None:
    await fill(proxy, origin, client, "/a", reply=reply("/a", {"Surrogate-Key": "old"}))
    assert await admin.urls(tag="old") == [f"http://{HOST}/a"]
    # The client forces a refetch; the origin's new 200 replaces the stored one.
    origin.script("/a", Reply(body=b"v2", headers={**CACHEABLE, "Surrogate-Key": "new"}))
    got = await fetch(
        client, "GET", proxy.url + "/a", headers={"Host": HOST, "Cache-Control": "no-cache"}
    )
    assert "stored" in got.headers["Cache-Status"]
    assert await admin.urls(tag="old") == []
    assert await admin.purge({"tag": "old"}) == {"purged": 0, "soft": False}
    assert await admin.purge({"tag": "new"}) == {"purged": 1, "soft": False}
    await assert_full_miss(proxy, origin, client, "/a")


# -- under concurrent traffic -----------------------------------------------------------------

PATHS = [f"/item/{i}" for i in range(40)]
REQUESTS = 200
WORKERS = 8


@pytest.fixture
async def uncollapsed(
    origin: ScriptedOrigin,
    clock: FakeClock,
    client: aiohttp.ClientSession,
    make_proxy: MakeProxy,
    tmp_path: Path,
) -> AsyncIterator[tuple[Proxy, AdminAPI]]:
    """A second proxy (collapsing on, as by default) and its admin API."""
    assert origin.server is not None
    p = await make_proxy(
        f"http://127.0.0.1:{origin.server.port}", cache_dir=str(tmp_path / "uncollapsed")
    )
    async with admin_listener(p, clock) as url:
        yield p, AdminAPI(url, client, p.app[EDGE])


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_no_purged_content_is_served_after_the_purge_answer(
    uncollapsed: tuple[Proxy, AdminAPI],
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    soft: bool,
) -> None:
    """Versioned content under load: once the purge has answered, every response
    (to a request sent after that) is the new version, including for a fill
    of the old version that raced the purge (its commit is banned, purge.py)."""
    proxy, admin = uncollapsed
    version = 1
    racing = PATHS[0]
    race_started = asyncio.Event()
    race_release = asyncio.Event()

    async def content(request: web.Request) -> web.StreamResponse:
        v = version  # what the origin holds when the request reaches it
        etag = f'"v{v}"'
        headers = {"Cache-Control": "max-age=600", "ETag": etag, "Date": origin.date()}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if request.path == racing and v == 1:
            # A fill of the old version still in flight while the purge runs.
            race_started.set()
            await race_release.wait()
        return web.Response(body=f"v{v} {request.path}".encode(), headers=headers)

    for path in PATHS:
        origin.script(path, content)

    # (sent after the purge answered, path, body); Cache-Status kept for failure messages
    responses: list[tuple[bool, str, bytes]] = []
    statuses: dict[int, str] = {}
    purged = False
    sent = 0

    async def get(path: str) -> None:
        after = purged
        got = await fetch(client, "GET", proxy.url + path, headers={"Host": HOST})
        assert got.status == 200
        statuses[len(responses)] = got.headers["Cache-Status"]
        responses.append((after, path, got.body))

    async def traffic() -> None:
        nonlocal sent
        while sent < REQUESTS:
            path = PATHS[sent % len(PATHS)]
            sent += 1
            await get(path)

    async def purge() -> None:
        nonlocal version, purged
        await asyncio.wait_for(race_started.wait(), 30)
        for _ in range(1_000_000):  # bounded; traffic gets there in a few hundred turns
            if len(responses) >= REQUESTS // 4:
                break
            await asyncio.sleep(0)  # a turn of the loop, not a wait for time
        assert len(responses) >= REQUESTS // 4
        # Order matters: the origin changes, then time moves on, then the purge is
        # issued. Every fill begun before the purge has request_time < issued_at.
        version = 2
        clock.advance(1)
        answer = await admin.purge({"prefix": f"http://{HOST}/item/", "soft": soft})
        assert answer["purged"] > 0
        purged = True
        race_release.set()

    racer = asyncio.ensure_future(get(racing))
    await asyncio.gather(*(traffic() for _ in range(WORKERS)), purge(), racer)
    # And one more round of every path, all sent after the purge answered.
    for path in PATHS:
        await get(path)

    before = [body for after, _, body in responses if not after]
    after = [(path, body) for after, path, body in responses if after]
    assert any(body.startswith(b"v1 ") for body in before)  # the purge had work to do
    assert len(after) >= len(PATHS)
    stale = [
        (path, body, statuses[i])
        for i, (sent_after, path, body) in enumerate(responses)
        if sent_after and not body.startswith(b"v2 ")
    ]
    assert stale == []
    # The racing old fill reached its client (sent before the purge), yet no
    # later request was answered from it.
    assert (False, racing, b"v1 " + racing.encode()) in responses


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_a_request_after_a_purge_never_joins_an_older_fill(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    clock: FakeClock,
    soft: bool,
) -> None:
    """A fill of the old version is in flight when the purge answers; a request
    sent after the answer must not be served that fill (by request collapsing)."""
    version = 1
    started = asyncio.Event()
    release = asyncio.Event()

    async def content(request: web.Request) -> web.StreamResponse:
        v = version
        headers = {"Cache-Control": "max-age=600", "ETag": f'"v{v}"', "Date": origin.date()}
        if v == 1:
            started.set()
            await release.wait()
        return web.Response(body=f"v{v}".encode(), headers=headers)

    origin.script("/slow", content)
    key = f"http://{HOST}/slow"
    old = asyncio.ensure_future(fetch(client, "GET", proxy.url + "/slow", headers={"Host": HOST}))
    await asyncio.wait_for(started.wait(), 30)
    version = 2
    clock.advance(1)
    assert await admin.purge({"url": key, "soft": soft}) == {"purged": 0, "soft": soft}
    late = asyncio.ensure_future(fetch(client, "GET", proxy.url + "/slow", headers={"Host": HOST}))
    flights = proxy.app[EDGE].flights
    # Until `late` has chosen: upstream on its own, or waiting on the old fill.
    for _ in range(100_000):  # bounded; a few dozen turns of the loop in practice
        if origin.hits("/slow") == 2 or flights.waiting().get(key, 0) > 0:
            break
        await asyncio.sleep(0)
    release.set()
    assert (await old).body == b"v1"  # sent before the purge: the old version is fine
    got = await late
    assert got.body == b"v2", got.headers["Cache-Status"]
    assert origin.hits("/slow") == 2
