"""The admin listener (issue "Admin endpoint"): auth, malformed input, /entries,
/stats, /healthz, /config and /reload, through a real proxy and a real admin
listener on loopback.

Also the support the other test_admin_* files import: `AdminAPI` (a client of
the admin app) and `admin_listener` (the admin app of a running `Proxy`, built
as server.py builds it, on its own loopback port).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from edgeproxy.admin import MAX_LIMIT, build_admin_app
from edgeproxy.config import Config
from edgeproxy.purge import Purge
from edgeproxy.reload import Reloader
from edgeproxy.server import snapshot
from edgeproxy.state import EDGE, EdgeState
from edgeproxy.store.base import StoreError
from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch
from tests.unit.test_purge_request import MALFORMED

TOKEN = "test-admin-token-1234"
HOST = "shop.example"
MAX_AGE = {"Cache-Control": "max-age=600"}


# -- support ----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    json: Any


@dataclass
class AdminAPI:
    url: str
    client: aiohttp.ClientSession
    edge: EdgeState
    token: str | None = TOKEN

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | io.BytesIO | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Answer:
        h = dict(headers or {})
        if auth and self.token is not None:
            h.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        async with self.client.request(
            method, self.url + path, data=data, headers=h, params=params
        ) as r:
            text = await r.text()
            assert r.content_type == "application/json", text
            return Answer(r.status, r.headers, json.loads(text))

    async def purge(self, body: dict[str, Any]) -> dict[str, Any]:
        got = await self.call("POST", "/purge", body=body)
        assert got.status == 200, got.json
        result: dict[str, Any] = got.json
        return result

    async def entries(self, **params: str) -> dict[str, Any]:
        got = await self.call("GET", "/entries", params=params)
        assert got.status == 200, got.json
        result: dict[str, Any] = got.json
        return result

    async def urls(self, **params: str) -> list[str]:
        return [e["url"] for e in (await self.entries(**params))["entries"]]

    async def stats(self) -> dict[str, Any]:
        got = await self.call("GET", "/stats")
        assert got.status == 200, got.json
        result: dict[str, Any] = got.json
        return result


@contextlib.asynccontextmanager
async def admin_listener(
    proxy: Proxy, clock: FakeClock, token: str | None = TOKEN, **kw: Any
) -> AsyncIterator[str]:
    """The admin app of a started `proxy`, on its own loopback port; yields its URL."""
    edge = proxy.app[EDGE]

    def apply(config: Config) -> None:
        edge.snapshot = snapshot(config)

    app = build_admin_app(edge, Reloader(proxy.config, None, apply, clock), token, **kw)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def fill(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    path: str,
    *,
    host: str = HOST,
    headers: dict[str, str] | None = None,
    reply: Reply | None = None,
) -> None:
    """Store `path` (a miss that stores, then a hit proves it)."""
    origin.script(
        path.split("?")[0], reply or Reply(body=b"body " + path.encode(), headers=MAX_AGE)
    )
    h = {"Host": host, **(headers or {})}
    got = await fetch(client, "GET", proxy.url + path, headers=h)
    assert "; stored" in got.headers["Cache-Status"], got.headers["Cache-Status"]
    assert await is_hit(proxy, client, path, host=host, headers=headers)


async def is_hit(
    proxy: Proxy,
    client: aiohttp.ClientSession,
    path: str,
    *,
    host: str = HOST,
    headers: dict[str, str] | None = None,
) -> bool:
    got = await fetch(client, "GET", proxy.url + path, headers={"Host": host, **(headers or {})})
    return got.headers["Cache-Status"].startswith("edgeproxy; hit")


@pytest.fixture
async def admin(
    proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
) -> AsyncIterator[AdminAPI]:
    async with admin_listener(proxy, clock) as url:
        yield AdminAPI(url, client, proxy.app[EDGE])


# -- auth ---------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/purge", {"all": True}),
    ("GET", "/entries", None),
    ("GET", "/stats", None),
    ("GET", "/config", None),
    ("POST", "/reload", None),
]

BAD_AUTH = [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param(f"Basic {TOKEN}", id="wrong-scheme-basic"),
    pytest.param(f"Token {TOKEN}", id="wrong-scheme-token"),
    pytest.param(TOKEN, id="no-scheme"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Bearer ", id="bearer-empty-token"),
    pytest.param("Bearer wrong-token", id="wrong-token"),
    pytest.param(f"Bearer {TOKEN}x", id="token-with-suffix"),
    pytest.param(f"Bearer {TOKEN[:-1]}", id="token-prefix"),
    pytest.param(f"Bearer {TOKEN.upper()}", id="token-case"),
    pytest.param(f"Bearer\t{TOKEN}", id="tab-not-a-separator"),
]


@pytest.mark.parametrize("authorization", BAD_AUTH)
async def test_bad_credentials_get_401_and_change_nothing(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    authorization: str | None,
) -> None:
    await fill(proxy, origin, client, "/a")
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in ENDPOINTS:
        got = await admin.call(method, path, body=body, headers=headers, auth=False)
        assert got.status == 401, (method, path)
        assert got.json["error"] == "missing or invalid bearer token"
        # RFC 9110 section 15.5.2: a 401 carries a challenge (RFC 6750 section 3).
        assert got.headers["WWW-Authenticate"].startswith("Bearer")
    assert await is_hit(proxy, client, "/a")
    assert origin.hits("/a") == 1
    stats = await admin.stats()
    assert (stats["entries"], stats["purges"]) == (1, 0)
    assert admin.edge.counters["purges"] == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_right_token_with_any_scheme_case_is_accepted(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    scheme: str,
) -> None:
    # The auth scheme is case-insensitive (RFC 9110 section 11.1).
    await fill(proxy, origin, client, "/a")
    got = await admin.call(
        "POST", "/purge", body={"all": True}, headers={"Authorization": f"{scheme} {TOKEN}"}
    )
    assert (got.status, got.json) == (200, {"purged": 1, "soft": False})
    assert not await is_hit(proxy, client, "/a")


async def test_healthz_needs_no_token(admin: AdminAPI) -> None:
    got = await admin.call("GET", "/healthz", auth=False)
    assert (got.status, got.json) == (200, {"status": "ok", "warnings": []})


async def test_the_public_listener_never_reaches_the_admin_api(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    await fill(proxy, origin, client, "/a")
    for method, path, body in ENDPOINTS:
        got = await fetch(
            client,
            method,
            proxy.url + path,
            json=body,
            headers={"Host": HOST, "Authorization": f"Bearer {TOKEN}"},
        )
        # Forwarded to the origin like any request, which knows no such path.
        assert (origin.last().method, origin.last().path_qs) == (method, path)
        assert (got.status, got.body) == (404, b"not scripted\n")
    assert await is_hit(proxy, client, "/a")


class TestOpenOnLoopback:
    """No token configured: loopback-only and open, except to browsers."""

    @pytest.fixture
    async def open_admin(
        self, proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
    ) -> AsyncIterator[AdminAPI]:
        async with admin_listener(proxy, clock, token=None) as url:
            yield AdminAPI(url, client, proxy.app[EDGE], token=None)

    async def test_open_without_a_token(
        self,
        proxy: Proxy,
        origin: ScriptedOrigin,
        client: aiohttp.ClientSession,
        open_admin: AdminAPI,
    ) -> None:
        await fill(proxy, origin, client, "/a")
        assert await open_admin.purge({"url": f"http://{HOST}/a"}) == {"purged": 1, "soft": False}
        assert not await is_hit(proxy, client, "/a")

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({"Origin": "http://evil.example"}, id="cross-site-origin"),
            pytest.param({"Origin": "null"}, id="opaque-origin"),
            pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-site"),
            pytest.param({"Host": "evil.example:9090"}, id="dns-rebinding-host"),
        ],
    )
    async def test_browser_requests_are_refused(
        self,
        proxy: Proxy,
        origin: ScriptedOrigin,
        client: aiohttp.ClientSession,
        open_admin: AdminAPI,
        headers: dict[str, str],
    ) -> None:
        await fill(proxy, origin, client, "/a")
        got = await open_admin.call("POST", "/purge", body={"all": True}, headers=headers)
        assert got.status == 403
        assert got.json["error"]
        assert await is_hit(proxy, client, "/a")

    @pytest.mark.parametrize("host", ["localhost:9090", "127.0.0.1", "[::1]:9090", "LOCALHOST"])
    async def test_loopback_host_names_are_fine(self, open_admin: AdminAPI, host: str) -> None:
        got = await open_admin.call("GET", "/stats", headers={"Host": host})
        assert got.status == 200


# -- malformed purge requests ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
async def test_malformed_purge_is_400_and_purges_nothing(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    body: bytes,
    reason: str,
) -> None:
    await fill(proxy, origin, client, "/a")
    got = await admin.call(
        "POST", "/purge", data=body, headers={"Content-Type": "application/json"}
    )
    assert got.status == 400
    assert reason in got.json["error"]
    assert await admin.urls() == [f"http://{HOST}/a"]
    assert await is_hit(proxy, client, "/a")
    assert admin.edge.counters["purges"] == 0


async def test_purge_needs_post(admin: AdminAPI) -> None:
    async with admin.client.get(
        admin.url + "/purge", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as r:
        assert r.status == 405


async def test_oversized_purge_body_is_413(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    await fill(proxy, origin, client, "/a")
    body = json.dumps({"tags": ["t" * 1000] * 2000}).encode()  # 2 MB
    got = await admin.call("POST", "/purge", data=io.BytesIO(body))
    assert got.status == 413
    assert await is_hit(proxy, client, "/a")


# -- /entries -------------------------------------------------------------------


async def test_entries_describe_what_is_stored(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    clock: FakeClock,
) -> None:
    lm = "Sun, 06 Nov 1994 08:49:37 GMT"
    await fill(
        proxy,
        origin,
        client,
        "/a?x=1",
        reply=Reply(
            body=b"hello",
            headers={"Cache-Control": "max-age=60", "ETag": '"v1"', "Last-Modified": lm},
        ),
    )
    vary = Reply(body=b"v-body", headers={"Cache-Control": "max-age=30", "Vary": "Accept-Encoding"})
    for coding in ("gzip", "br"):
        await fill(proxy, origin, client, "/v", headers={"Accept-Encoding": coding}, reply=vary)
    clock.advance(10)
    answer = await admin.entries()
    assert (answer["count"], answer["truncated"], answer["prefix"], answer["tag"]) == (
        3,
        False,
        "",
        None,
    )
    a, gz, br = answer["entries"]
    assert a["url"] == f"http://{HOST}/a?x=1"
    assert (a["status"], a["age"], a["ttl"], a["size"]) == (200, 10, 50, 5)
    assert (a["etag"], a["last_modified"]) == ('"v1"', lm)
    assert (a["vary"], a["tags"], a["soft_purged"]) == ({}, [], False)
    assert a["variant"]
    # Vary variants: same URL, oldest first, each with its secondary key (RFC 9111 4.1)
    assert gz["url"] == br["url"] == f"http://{HOST}/v"
    assert (gz["vary"], br["vary"]) == ({"accept-encoding": "gzip"}, {"accept-encoding": "br"})
    assert gz["variant"] != br["variant"]
    assert (gz["age"], gz["ttl"], gz["size"], gz["etag"]) == (10, 20, 6, None)
    await admin.purge({"url": f"http://{HOST}/v", "soft": True})
    soft = (await admin.entries(prefix=f"http://{HOST}/v"))["entries"]
    assert [(e["soft_purged"], e["ttl"] <= 0) for e in soft] == [(True, True), (True, True)]


async def test_entries_filter_and_limit(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin: AdminAPI
) -> None:
    for path in ("/img/1", "/img/2", "/img", "/txt"):
        await fill(proxy, origin, client, path)
    await fill(proxy, origin, client, "/img/3", host="other.example")
    # The prefix is normalised as purge URLs are (host case, default port).
    assert await admin.urls(prefix=f"http://{HOST.upper()}:80/img/") == [
        f"http://{HOST}/img/1",
        f"http://{HOST}/img/2",
    ]
    assert await admin.urls(prefix="http://other.example/") == ["http://other.example/img/3"]
    page = await admin.entries(limit="2")
    assert (page["count"], page["truncated"]) == (2, True)
    # Key order: other.example sorts before shop.example.
    assert [e["url"] for e in page["entries"]] == [
        "http://other.example/img/3",
        f"http://{HOST}/img",
    ]
    page = await admin.entries(limit="5")
    assert (page["count"], page["truncated"]) == (5, False)
    assert await admin.urls(tag="no-such-tag") == []


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "0"}, id="limit-zero"),
        pytest.param({"limit": "-1"}, id="limit-negative"),
        pytest.param({"limit": "abc"}, id="limit-word"),
        pytest.param({"limit": "1.5"}, id="limit-fraction"),
        pytest.param({"limit": ""}, id="limit-empty"),
        pytest.param({"limit": " 1"}, id="limit-space"),
        pytest.param({"limit": "1_0"}, id="limit-underscore"),
        pytest.param({"limit": "\u0663"}, id="limit-arabic-digit"),
        pytest.param({"limit": str(MAX_LIMIT + 1)}, id="limit-over-max"),
        pytest.param({"limit": "9" * 5000}, id="limit-huge"),
        pytest.param({"tag": ""}, id="tag-empty"),
        pytest.param({"prefx": "http://a/"}, id="unknown-parameter"),
    ],
)
async def test_entries_bad_query_is_400(admin: AdminAPI, params: dict[str, str]) -> None:
    got = await admin.call("GET", "/entries", params=params)
    assert got.status == 400
    assert got.json["error"]


async def test_entries_repeated_parameter_is_400(admin: AdminAPI) -> None:
    got = await admin.call("GET", "/entries?limit=1&limit=2")
    assert got.status == 400
    assert "more than once" in got.json["error"]


async def test_entries_limit_bounds_are_accepted(admin: AdminAPI) -> None:
    for limit in ("1", str(MAX_LIMIT)):
        got = await admin.call("GET", "/entries", params={"limit": limit})
        assert got.status == 200


# -- /stats ---------------------------------------------------------------------


async def test_stats_count_what_happened(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    clock: FakeClock,
) -> None:
    before = await admin.stats()
    assert isinstance(before.pop("bytes"), int)  # the store's disk use, index included
    kinds = "hit miss stale revalidated collapsed client-304 bypass pass error none"
    none = dict.fromkeys(kinds.split(), 0)
    assert before.pop("outcomes") == none
    assert before == {
        "entries": 0,
        "hits": 0,
        "misses": 0,
        "revalidations": 0,
        "revalidated_304": 0,
        "client_304": 0,
        "stored": 0,
        "origin_requests": 0,
        "purges": 0,
        "purged_entries": 0,
    }
    etag = {"Cache-Control": "max-age=5", "ETag": '"e"'}
    origin.script("/a", Reply(body=b"aaaa", headers=etag))
    origin.script("/b", Reply(body=b"bb", headers=MAX_AGE))
    h = {"Host": HOST}
    await fetch(client, "GET", proxy.url + "/a", headers=h)  # miss, stored
    await fetch(client, "GET", proxy.url + "/b", headers=h)  # miss, stored
    await fetch(client, "GET", proxy.url + "/a", headers=h)  # hit
    got = await fetch(client, "GET", proxy.url + "/a", headers={**h, "If-None-Match": '"e"'})
    assert got.status == 304  # a client 304, from storage
    clock.advance(6)
    origin.script("/a", Reply(status=304, headers=etag))
    got = await fetch(client, "GET", proxy.url + "/a", headers=h)  # stale: revalidated, 304
    assert got.body == b"aaaa"
    await admin.purge({"url": f"http://{HOST}/b"})
    await admin.purge({"url": f"http://{HOST}/nothing"})
    await admin.purge({"all": True, "dry_run": True})  # not a purge: counts nothing
    stats = await admin.stats()
    assert stats["entries"] == 1
    assert {k: stats[k] for k in before if k != "entries"} == {
        "hits": 2,
        "misses": 2,
        "revalidations": 1,
        "revalidated_304": 1,
        "client_304": 1,
        "stored": 2,
        "origin_requests": 3,
        "purges": 2,
        "purged_entries": 1,
    }
    # Each request once, by what the client got (the access log's outcome).
    assert stats["outcomes"] == none | {"miss": 2, "hit": 1, "client-304": 1, "revalidated": 1}
    assert origin.hits() == 3


# -- /healthz ---------------------------------------------------------------------


class BrokenStore:
    """Wraps the real store; `stats` fails (the index can't be read)."""

    def __init__(self, inner: Any, error: Exception) -> None:
        self._inner = inner
        self._error = error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def stats(self) -> dict[str, int]:
        raise self._error

    async def purge(self, purge: Purge) -> int:
        raise StoreError("database is locked")

    async def entries(self, *args: Any) -> list[Any]:
        raise StoreError("database is locked")


class HungStore(BrokenStore):
    async def stats(self) -> dict[str, int]:
        await asyncio.Event().wait()  # never answers: only the timeout ends this
        raise AssertionError


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (StoreError("reading stats: disk I/O error"), "disk I/O error"),
        (RuntimeError("cannot schedule new futures after shutdown"), "after shutdown"),
    ],
)
async def test_healthz_503_when_the_store_fails(
    admin: AdminAPI, error: Exception, reason: str
) -> None:
    admin.edge.store = BrokenStore(admin.edge.store, error)  # type: ignore[assignment]
    got = await admin.call("GET", "/healthz", auth=False)
    assert got.status == 503
    assert got.json["status"] == "unavailable"
    assert reason in got.json["reason"]


async def test_healthz_503_when_the_store_hangs(
    proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
) -> None:
    edge = proxy.app[EDGE]
    real = edge.store
    edge.store = HungStore(real, StoreError("x"))  # type: ignore[assignment]
    try:
        async with admin_listener(proxy, clock, health_timeout=0.01) as url:
            got = await AdminAPI(url, client, edge).call("GET", "/healthz", auth=False)
    finally:
        edge.store = real
    assert got.status == 503
    assert "did not answer within 0.01s" in got.json["reason"]


async def test_healthz_503_without_an_origin(admin: AdminAPI) -> None:
    snap = admin.edge.snapshot
    admin.edge.snapshot = replace(snap, config=replace(snap.config, origins={}, routes=()))
    got = await admin.call("GET", "/healthz", auth=False)
    assert (got.status, got.json["reason"]) == (503, "no origin configured")


async def test_healthz_warns_when_the_cache_dir_is_unwritable(
    admin: AdminAPI, tmp_path: Any
) -> None:
    # (Root may write anywhere, so a directory that isn't there stands in.)
    snap = admin.edge.snapshot
    missing = str(tmp_path / "gone")
    cache = replace(snap.config.cache, directory=missing)
    admin.edge.snapshot = replace(snap, config=replace(snap.config, cache=cache))
    got = await admin.call("GET", "/healthz", auth=False)
    assert got.status == 200
    assert got.json == {
        "status": "ok",
        "warnings": [f"cache directory {missing} is not writable: passing through"],
    }


async def test_store_failures_are_503_not_500(admin: AdminAPI) -> None:
    admin.edge.store = BrokenStore(admin.edge.store, StoreError("database is locked"))  # type: ignore[assignment]
    for method, path, body in [
        ("POST", "/purge", {"all": True}),
        ("GET", "/entries", None),
        ("GET", "/stats", None),
    ]:
        got = await admin.call(method, path, body=body)
        assert got.status == 503, path
        assert "database is locked" in got.json["error"]
    assert admin.edge.counters["purges"] == 0


# -- /config and /reload ------------------------------------------------------------


async def test_config_and_reload_are_kept(admin: AdminAPI, proxy: Proxy) -> None:
    got = await admin.call("GET", "/config")
    assert got.status == 200
    assert got.json["version"] == 1
    assert [r["name"] for r in got.json["routes"]] == [r.name for r in proxy.config.routes]
    got = await admin.call("POST", "/reload")
    # Started without --config: nothing to reload from, and it says so.
    assert (got.status, got.json["reloaded"]) == (422, False)
    assert got.json["last_error"] == ["no config file: started without --config"]


async def test_repeated_wrong_tokens_lock_the_address_out(admin: AdminAPI) -> None:
    """Brute force: after 10 wrong tokens the address is refused for a while,
    even with the right token, and nothing is purged meanwhile."""
    client = admin.client
    for _ in range(10):
        async with client.post(
            admin.url + "/purge",
            json={"all": True},
            headers={"Authorization": "Bearer guess"},
        ) as r:
            assert r.status == 401
    async with client.post(
        admin.url + "/purge", json={"all": True}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert "too many failed authentication attempts" in (await r.json())["error"]
    async with client.get(admin.url + "/healthz") as r:
        assert r.status == 200  # probes stay open
