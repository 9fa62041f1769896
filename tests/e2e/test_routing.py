"""Routing rules end to end: precedence, each route action and key rule (issue 3)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator

import aiohttp
import pytest

from edgeproxy.config import Config, parse_config
from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin

YAML = """\
cache: {{dir: {cache}}}
origins:
  app: {{url: "{app}", host: app.internal}}
  img: {{servers: ["{img}", "{img2}"]}}
routes:
  - name: blocked
    match: {{path: /private/}}
  - name: api
    match: {{host: api.example.com}}
    origin: app
    cache: off
    request_headers: {{set: {{X-Edge: api}}, remove: [X-Secret]}}
    response_headers: {{add: {{X-Route: api}}, remove: [X-Internal]}}
  - name: images
    match: {{host: "*.example.com", path: {{glob: "/img/**"}}, methods: [GET, HEAD]}}
    origin: img
    default_ttl: 100
    max_ttl: 50
    cache_key: {{query_params: [w], sort_query: true}}
  - name: forced
    match: {{path: {{prefix: /forced/}}}}
    origin: app
    force_ttl: 30
  - name: noquery
    match: {{path: {{regex: "^/static/"}}}}
    origin: app
    cache_key: {{ignore_query: true}}
  - name: lang
    match: {{path: /lang/}}
    origin: app
    cache_key: {{headers: [Accept-Language], cookies: [ab]}}
  - name: cookies
    match: {{path: /cookie/}}
    origin: app
    allow_set_cookie: true
  - name: www
    match: {{host: www.example.com}}
    origin: app
default_route: {default}
"""


@pytest.fixture
async def img2(clock: FakeClock) -> AsyncIterator[ScriptedOrigin]:
    o = ScriptedOrigin(clock)
    await o.start()
    yield o
    await o.close()


@pytest.fixture
async def img(clock: FakeClock) -> AsyncIterator[ScriptedOrigin]:
    o = ScriptedOrigin(clock)
    await o.start()
    yield o
    await o.close()


def config(
    tmp_path,
    origin: ScriptedOrigin,
    img: ScriptedOrigin,
    img2: ScriptedOrigin,  # type: ignore[no-untyped-def]
    default: str = "null",
) -> Config:
    def url(o: ScriptedOrigin) -> str:
        assert o.server is not None
        return f"http://127.0.0.1:{o.server.port}"

    text = YAML.format(
        cache=tmp_path / "cache", app=url(origin), img=url(img), img2=url(img2), default=default
    )
    return parse_config(textwrap.dedent(text), "routes.yaml")


@pytest.fixture
async def edge(
    tmp_path,
    origin: ScriptedOrigin,
    img: ScriptedOrigin,
    img2: ScriptedOrigin,  # type: ignore[no-untyped-def]
    clock: FakeClock,
) -> AsyncIterator[Proxy]:
    p = Proxy(config(tmp_path, origin, img, img2), clock)
    await p.start()
    yield p
    await p.close()


async def get(
    client: aiohttp.ClientSession, edge: Proxy, path: str, host: str, **headers: str
) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with client.get(edge.url + path, headers={"Host": host, **headers}) as r:
        return r.status, r.headers, await r.read()


async def test_precedence_and_origin_choice(
    edge: Proxy,
    origin: ScriptedOrigin,
    img: ScriptedOrigin,
    img2: ScriptedOrigin,
    client: aiohttp.ClientSession,
) -> None:
    for o in (origin, img, img2):
        o.script("/img/a.png", Reply(body=b"png", headers={"Cache-Control": "max-age=60"}))
    origin.script("/private/x", Reply(body=b"secret"))
    # The blocked route comes first, whatever the host: 404, origin untouched.
    status, _, body = await get(client, edge, "/private/x", "api.example.com")
    assert status == 404 and b"route 'blocked' has no origin" in body
    # *.example.com + glob -> the img origin; apex and other hosts don't match.
    status, _, _ = await get(client, edge, "/img/a.png", "cdn.example.com")
    assert status == 200 and img.hits("/img/a.png") == 1 and origin.hits() == 0
    status, _, body = await get(client, edge, "/img/a.png", "example.com")
    assert status == 404 and b"no route matches example.com/img/a.png" in body
    assert origin.hits() == 0


async def test_default_route_catches_unmatched(
    tmp_path,
    origin: ScriptedOrigin,  # type: ignore[no-untyped-def]
    img: ScriptedOrigin,
    img2: ScriptedOrigin,
    clock: FakeClock,
    client: aiohttp.ClientSession,
) -> None:
    p = Proxy(config(tmp_path, origin, img, img2, default="www"), clock)
    await p.start()
    try:
        origin.script("/anything", Reply(body=b"www"))
        status, _, body = await get(client, p, "/anything", "other.org")
        assert (status, body) == (200, b"www")
        assert origin.last().headers["Host"] == "app.internal"  # the origin's configured Host
    finally:
        await p.close()


async def test_cache_off_is_pass_through_with_header_edits(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script(
        "/v1/x", Reply(body=b"api", headers={"Cache-Control": "max-age=60", "X-Internal": "1"})
    )
    for _ in range(2):
        status, headers, body = await get(
            client, edge, "/v1/x", "api.example.com", **{"X-Secret": "s", "X-Edge": "client"}
        )
        assert (status, body) == (200, b"api")
        assert headers["Cache-Status"] == "edgeproxy; fwd=bypass; fwd-status=200"
        assert headers["X-Route"] == "api" and "X-Internal" not in headers
    assert origin.hits("/v1/x") == 2
    sent = origin.last().headers
    assert sent["X-Edge"] == "api" and "X-Secret" not in sent


async def test_ttl_policy_default_max_and_force(
    edge: Proxy,
    origin: ScriptedOrigin,
    img: ScriptedOrigin,
    img2: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
) -> None:
    # default_ttl 100 capped by max_ttl 50 when the origin gives no lifetime.
    for o in (img, img2):
        o.script("/img/plain.png", Reply(body=b"p"))
    _, headers, _ = await get(client, edge, "/img/plain.png", "cdn.example.com")
    assert "stored; ttl=50" in headers["Cache-Status"]
    clock.advance(49)
    _, headers, _ = await get(client, edge, "/img/plain.png", "cdn.example.com")
    assert headers["Cache-Status"] == "edgeproxy; hit; ttl=1"
    # force_ttl overrides the origin's own max-age=0.
    origin.script("/forced/x", Reply(body=b"f", headers={"Cache-Control": "max-age=0"}))
    _, headers, _ = await get(client, edge, "/forced/x", "any.org")
    assert "stored; ttl=30" in headers["Cache-Status"]
    _, headers, _ = await get(client, edge, "/forced/x", "any.org")
    assert headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits("/forced/x") == 1


async def test_round_robin_over_servers(
    edge: Proxy, img: ScriptedOrigin, img2: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    for o in (img, img2):
        o.script("/img/rr.png", Reply(body=b"rr", headers={"Cache-Control": "no-store"}))
    for _ in range(4):
        await get(client, edge, "/img/rr.png", "cdn.example.com")
    assert (img.hits(), img2.hits()) == (2, 2)


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("/img/q.png?w=100&utm=a", "/img/q.png?utm=b&w=100", True),  # only w is keyed
        ("/img/q.png?w=100", "/img/q.png?w=200", False),
    ],
)
async def test_query_key_rules(
    edge: Proxy,
    img: ScriptedOrigin,
    img2: ScriptedOrigin,
    client: aiohttp.ClientSession,
    first: str,
    second: str,
    same: bool,
) -> None:
    for o in (img, img2):
        o.script("/img/q.png", Reply(body=b"q", headers={"Cache-Control": "max-age=60"}))
    await get(client, edge, first, "cdn.example.com")
    _, headers, _ = await get(client, edge, second, "cdn.example.com")
    assert headers["Cache-Status"].startswith("edgeproxy; hit") is same
    assert img.hits() + img2.hits() == (1 if same else 2)
    # The origin still gets the query exactly as the client sent it.
    assert {r.path_qs for r in img.received + img2.received} <= {first, second}


async def test_ignore_query(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/static/a.css", Reply(body=b"css", headers={"Cache-Control": "max-age=60"}))
    await get(client, edge, "/static/a.css?v=1", "x.org")
    _, headers, _ = await get(client, edge, "/static/a.css?v=2", "x.org")
    assert headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits("/static/a.css") == 1


async def test_header_and_cookie_key_rules(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/lang/page", Reply(body=b"page", headers={"Cache-Control": "max-age=60"}))
    requests = [
        ({"Accept-Language": "fr"}, False),
        ({"Accept-Language": "fr"}, True),
        ({"Accept-Language": "de"}, False),
        ({"Accept-Language": "de", "Cookie": "ab=1; other=x"}, False),
        ({"Accept-Language": "de", "Cookie": "other=y; ab=1"}, True),  # other cookies unkeyed
    ]
    for headers, hit in requests:
        _, got, _ = await get(client, edge, "/lang/page", "x.org", **headers)
        assert got["Cache-Status"].startswith("edgeproxy; hit") is hit, headers
    assert origin.hits("/lang/page") == 3


async def test_set_cookie_storage_per_route(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    reply = Reply(body=b"c", headers={"Cache-Control": "max-age=60", "Set-Cookie": "s=1"})
    origin.script("/cookie/a", reply)
    origin.script("/other", reply)
    for path, host, stored in (("/cookie/a", "x.org", True), ("/other", "www.example.com", False)):
        _, headers, _ = await get(client, edge, path, host)
        assert ("stored" in headers["Cache-Status"]) is stored
