"""What is stored (RFC 9111 section 3), under which key (section 4, 4.1).

Each case: the first request goes to the origin; a second identical request
is a hit only if the first response was stored. Both what the client saw
(Cache-Status `stored`, `hit`) and what the origin received are checked.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

MAX_AGE = {"Cache-Control": "max-age=60"}


async def store_and_reuse(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    reply: Reply,
    request_headers: dict[str, str] | None = None,
    path: str = "/s",
) -> tuple[bool, bool]:
    """(announced stored on the miss, second request answered from the cache)."""
    origin.script(path, reply)
    first = await fetch(client, "GET", proxy.url + path, headers=request_headers or {})
    assert first.status == reply.status
    assert first.body == reply.body
    second = await fetch(client, "GET", proxy.url + path, headers=request_headers or {})
    assert second.status == reply.status
    assert second.body == reply.body
    hit = second.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits(path) == (1 if hit else 2)
    return "; stored" in first.headers["Cache-Status"], hit


@pytest.mark.parametrize(
    ("status", "headers", "request_headers"),
    [
        pytest.param(200, {"Cache-Control": "max-age=60"}, {}, id="3-max-age"),
        pytest.param(200, {"Cache-Control": "s-maxage=60"}, {}, id="3-s-maxage"),
        pytest.param(200, {"Cache-Control": "public, max-age=60"}, {}, id="3-public"),
        pytest.param(200, {"Expires": "+60"}, {}, id="3-expires"),
        pytest.param(200, {"Last-Modified": "-10000"}, {}, id="4.2.2-heuristic-200"),
        pytest.param(404, {"Last-Modified": "-10000"}, {}, id="4.2.2-heuristic-404"),
        pytest.param(301, {"Cache-Control": "max-age=60", "Location": "/t"}, {}, id="3-301"),
        pytest.param(
            200,
            {"Cache-Control": "max-age=60, public"},
            {"Authorization": "Bearer t"},
            id="3.5-authorization-public",
        ),
        pytest.param(
            200,
            {"Cache-Control": "s-maxage=60"},
            {"Authorization": "Bearer t"},
            id="3.5-authorization-s-maxage",
        ),
        pytest.param(
            200,
            {"Cache-Control": "max-age=60, must-revalidate"},
            {"Authorization": "Bearer t"},
            id="3.5-authorization-must-revalidate",
        ),
    ],
)
async def test_stored_and_reused(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    status: int,
    headers: dict[str, str],
    request_headers: dict[str, str],
) -> None:
    reply = Reply(status=status, body=b"stored body", headers=dated(origin, headers))
    stored, hit = await store_and_reuse(proxy, origin, client, reply, request_headers)
    assert stored
    assert hit


@pytest.mark.parametrize(
    ("status", "headers", "request_headers"),
    [
        pytest.param(200, {"Cache-Control": "no-store, max-age=60"}, {}, id="5.2.2.5-no-store"),
        pytest.param(200, MAX_AGE, {"Cache-Control": "no-store"}, id="5.2.1.5-request-no-store"),
        pytest.param(200, {"Cache-Control": "private, max-age=60"}, {}, id="5.2.2.7-private"),
        pytest.param(
            200, {"Cache-Control": 'private="X-User", max-age=60'}, {}, id="5.2.2.7-private-named"
        ),
        pytest.param(200, MAX_AGE, {"Authorization": "Bearer t"}, id="3.5-authorization"),
        pytest.param(200, {**MAX_AGE, "Set-Cookie": "sid=1"}, {}, id="set-cookie-default-off"),
        pytest.param(206, {**MAX_AGE, "Content-Range": "bytes 0-10/100"}, {}, id="3.3-partial-206"),
        pytest.param(299, MAX_AGE, {}, id="3-status-not-understood"),
        pytest.param(200, {**MAX_AGE, "Vary": "*"}, {}, id="4.1-vary-star"),
        pytest.param(200, {}, {}, id="3-no-freshness-no-validator"),
        pytest.param(302, {}, {}, id="3-302-not-heuristic"),
    ],
)
async def test_not_stored(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    status: int,
    headers: dict[str, str],
    request_headers: dict[str, str],
) -> None:
    body = b"0123456789A" if status == 206 else b"not stored"
    reply = Reply(status=status, body=body, headers=dated(origin, headers))
    stored, hit = await store_and_reuse(proxy, origin, client, reply, request_headers)
    assert not stored
    assert not hit


async def test_set_cookie_stored_when_allowed(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    assert origin.server is not None
    proxy = await make_proxy(f"http://127.0.0.1:{origin.server.port}", allow_set_cookie=True)
    reply = Reply(body=b"with cookie", headers={**MAX_AGE, "Set-Cookie": "lang=en"})
    stored, hit = await store_and_reuse(proxy, origin, client, reply)
    assert stored and hit


async def test_validator_only_response_is_stored_and_revalidated(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # No freshness but an ETag: worth keeping to revalidate (RFC 9111 section
    # 3 "a validator"), stale at once (ttl=0), so reuse needs the origin's 304.
    origin.script("/s", Reply(body=b"validated", headers={"ETag": '"e1"'}))
    first = await fetch(client, "GET", proxy.url + "/s")
    assert first.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=0"
    origin.script("/s", Reply(status=304, headers={"ETag": '"e1"'}))
    second = await fetch(client, "GET", proxy.url + "/s")
    assert (second.status, second.body) == (200, b"validated")
    assert second.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
    assert origin.last().headers["If-None-Match"] == '"e1"'


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_responses_to_other_methods_are_not_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, method: str
) -> None:
    # Only GET responses are stored here (RFC 9111 section 2: the method is
    # part of the key and this cache keys GET only).
    origin.script("/s", Reply(body=b"answer", headers=MAX_AGE))
    got = await fetch(client, method, proxy.url + "/s")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=method; fwd-status=200"
    got = await fetch(client, "GET", proxy.url + "/s")
    assert "fwd=uri-miss" in got.headers["Cache-Status"]
    assert [r.method for r in origin.received] == [method, "GET"]


async def test_head_answered_from_stored_get(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    origin.script("/s", Reply(body=b"twelve bytes", headers={**MAX_AGE, "X-A": "1"}))
    await fetch(client, "GET", proxy.url + "/s")
    clock.advance(5)
    got = await fetch(client, "HEAD", proxy.url + "/s")
    assert got.status == 200
    assert got.body == b""
    assert got.headers["Content-Length"] == "12"
    assert got.headers["X-A"] == "1"
    assert got.headers["Age"] == "5"
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=55"
    assert origin.hits("/s") == 1


async def test_head_miss_is_forwarded_as_head_and_not_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/s", Reply(body=b"twelve bytes", headers=MAX_AGE))
    got = await fetch(client, "HEAD", proxy.url + "/s")
    assert (got.status, got.body) == (200, b"")
    assert origin.last().method == "HEAD"
    assert "stored" not in got.headers["Cache-Status"]
    got = await fetch(client, "GET", proxy.url + "/s")
    assert got.body == b"twelve bytes"
    assert "fwd=uri-miss" in got.headers["Cache-Status"]
    assert [r.method for r in origin.received] == ["HEAD", "GET"]


@pytest.mark.parametrize(
    ("last_modified_ago", "ttl"),
    [
        # RFC 9111 section 4.2.2: 10% of (Date - Last-Modified) ...
        (1000, 100),
        (50_000, 5000),
        # ... capped at one day.
        (100 * 86400, 86400),
    ],
)
async def test_heuristic_freshness(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    last_modified_ago: int,
    ttl: int,
) -> None:
    origin.script(
        "/h", Reply(body=b"heuristic", headers={"Last-Modified": origin.date(-last_modified_ago)})
    )
    got = await fetch(client, "GET", proxy.url + "/h")
    assert (
        got.headers["Cache-Status"] == f"edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl={ttl}"
    )
    clock.advance(ttl - 1)
    got = await fetch(client, "GET", proxy.url + "/h")
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=1"
    assert origin.hits("/h") == 1
    clock.advance(2)
    origin.script("/h", Reply(status=304))
    got = await fetch(client, "GET", proxy.url + "/h")
    assert (got.status, got.body) == (200, b"heuristic")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
    # Revalidated with If-Modified-Since from the stored Last-Modified (4.3.1).
    assert origin.last().headers["If-Modified-Since"] == origin.date(-last_modified_ago - ttl - 1)


async def test_vary_variants_side_by_side(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 4.1: each variant under its secondary key.
    async def by_language(request: web.Request) -> web.StreamResponse:
        lang = request.headers.get("Accept-Language", "none")
        return web.Response(
            text=f"hello in {lang}",
            headers={**MAX_AGE, "Vary": "Accept-Language", "Date": origin.date()},
        )

    origin.script("/v", by_language)
    url = proxy.url + "/v"
    en = await fetch(client, "GET", url, headers={"Accept-Language": "en"})
    assert en.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60"
    fr = await fetch(client, "GET", url, headers={"Accept-Language": "fr"})
    assert fr.headers["Cache-Status"] == "edgeproxy; fwd=vary-miss; fwd-status=200; stored; ttl=60"
    none = await fetch(client, "GET", url)
    assert (
        none.headers["Cache-Status"] == "edgeproxy; fwd=vary-miss; fwd-status=200; stored; ttl=60"
    )
    assert origin.hits("/v") == 3
    for headers, body in [
        ({"Accept-Language": "en"}, b"hello in en"),
        ({"Accept-Language": "fr"}, b"hello in fr"),
        ({}, b"hello in none"),
        ({"Accept-Language": "en"}, b"hello in en"),
    ]:
        got = await fetch(client, "GET", url, headers=headers)
        assert got.body == body
        assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
        assert got.headers["Vary"] == "Accept-Language"
    assert origin.hits("/v") == 3
    assert [r.headers.get("Accept-Language") for r in origin.received] == ["en", "fr", None]


async def test_vary_on_several_fields(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    headers = {**MAX_AGE, "Vary": "Accept-Encoding, Accept-Language"}
    origin.script("/v", Reply(body=b"v", headers=headers))
    url = proxy.url + "/v"
    both = {"Accept-Encoding": "gzip", "Accept-Language": "en"}
    await fetch(client, "GET", url, headers=both)
    hit = await fetch(client, "GET", url, headers=both)
    assert hit.headers["Cache-Status"].startswith("edgeproxy; hit")
    miss = await fetch(client, "GET", url, headers={**both, "Accept-Language": "de"})
    assert miss.headers["Cache-Status"].startswith("edgeproxy; fwd=vary-miss")
    miss = await fetch(client, "GET", url, headers={"Accept-Encoding": "gzip"})
    assert miss.headers["Cache-Status"].startswith("edgeproxy; fwd=vary-miss")
    assert origin.hits("/v") == 3


async def test_vary_star_is_relayed_never_matched(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/v", Reply(body=b"star", headers={**MAX_AGE, "Vary": "*"}))
    for _ in range(2):
        got = await fetch(client, "GET", proxy.url + "/v")
        assert got.body == b"star"
        assert got.headers["Vary"] == "*"
        assert got.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=200"
    assert origin.hits("/v") == 2


async def test_entries_never_shared_across_hosts(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The key holds scheme, host, path and query (RFC 9111 section 2).
    async def by_host(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text="for " + request.headers["X-Forwarded-Host"],
            headers={**MAX_AGE, "Date": origin.date()},
        )

    origin.script("/k", by_host)
    url = proxy.url + "/k"
    a = await fetch(client, "GET", url, headers={"Host": "a.example"})
    b = await fetch(client, "GET", url, headers={"Host": "b.example"})
    assert (a.body, b.body) == (b"for a.example", b"for b.example")
    assert origin.hits("/k") == 2
    for host, body in [
        ("a.example", b"for a.example"),
        ("b.example", b"for b.example"),
        ("A.Example", b"for a.example"),  # host names are case-insensitive
        ("a.example:80", b"for a.example"),  # the default port is the same origin
    ]:
        got = await fetch(client, "GET", url, headers={"Host": host})
        assert got.body == body, host
        assert got.headers["Cache-Status"].startswith("edgeproxy; hit"), host
    assert origin.hits("/k") == 2
    other_port = await fetch(client, "GET", url, headers={"Host": "a.example:8080"})
    assert "fwd=uri-miss" in other_port.headers["Cache-Status"]
    assert origin.hits("/k") == 3


async def test_key_includes_path_and_query(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/q", Reply(body=b"q", headers=MAX_AGE))
    origin.script("/Q", Reply(body=b"Q", headers=MAX_AGE))
    for target in ["/q?a=1", "/q?a=2", "/q", "/Q?a=1", "/q?a=1", "/q?a=2", "/q", "/Q?a=1"]:
        await fetch(client, "GET", proxy.url + target)
    assert [r.path_qs for r in origin.received] == ["/q?a=1", "/q?a=2", "/q", "/Q?a=1"]


def dated(origin: ScriptedOrigin, headers: dict[str, str]) -> dict[str, str]:
    """Resolve relative dates ("+60", "-10000") against the origin's clock."""
    out = dict(headers)
    for name in ("Expires", "Last-Modified"):
        if name in out and out[name][0] in "+-":
            out[name] = origin.date(float(out[name]))
    return out


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b""), (204, b""), (200, b"x"), (200, b"y" * 100_000)],
    ids=["empty-200", "204", "one-byte", "file-body"],
)
async def test_a_client_holding_the_whole_response_finds_it_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, status: int, body: bytes
) -> None:
    # The response is complete for the client only after the commit: the
    # last chunk, or for a body-less one the head itself, waits for it. So the
    # very next request is a hit, never a race with the store's thread, even
    # on another connection (one connection's requests are handled in turn).
    async with aiohttp.ClientSession() as other:
        for n in range(20):
            origin.script(f"/c{n}", Reply(status=status, body=body, headers=MAX_AGE))
            got = await fetch(client, "GET", proxy.url + f"/c{n}")
            assert (got.status, got.body) == (status, body)
            assert "stored" in got.headers["Cache-Status"]
            again = await fetch(other, "GET", proxy.url + f"/c{n}")
            assert "hit" in again.headers["Cache-Status"], (n, again.headers["Cache-Status"])
            assert (again.status, again.body) == (status, body)
    assert origin.hits() == 20
