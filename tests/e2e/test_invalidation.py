"""Invalidation by unsafe methods (RFC 9111 section 4.4)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

HOST = "www.example.test"
MAX_AGE = {"Cache-Control": "max-age=600"}


async def store(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, *paths: str
) -> None:
    for path in paths:
        origin.script(path.split("?")[0], Reply(body=b"stored " + path.encode(), headers=MAX_AGE))
        got = await fetch(client, "GET", proxy.url + path, headers={"Host": HOST})
        assert "; stored" in got.headers["Cache-Status"]
        got = await fetch(client, "GET", proxy.url + path, headers={"Host": HOST})
        assert got.headers["Cache-Status"].startswith("edgeproxy; hit")


async def is_hit(proxy: Proxy, client: aiohttp.ClientSession, path: str, host: str = HOST) -> bool:
    got = await fetch(client, "GET", proxy.url + path, headers={"Host": host})
    return got.headers["Cache-Status"].startswith("edgeproxy; hit")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "FROBNICATE"])
@pytest.mark.parametrize("status", [200, 201, 204, 303])
async def test_unsafe_method_invalidates_target(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    method: str,
    status: int,
) -> None:
    # "including methods whose safety is unknown" (4.4).
    await store(proxy, origin, client, "/doc", "/other")
    origin.script(
        "/doc", Reply(status=status, headers={"Location": "/elsewhere"} if status == 303 else {})
    )
    got = await fetch(client, method, proxy.url + "/doc", headers={"Host": HOST}, data=b"change")
    assert got.status == status
    assert origin.last().method == method
    origin.script("/doc", Reply(body=b"new", headers=MAX_AGE))
    assert not await is_hit(proxy, client, "/doc")
    assert origin.last().method == "GET"
    assert await is_hit(proxy, client, "/other")  # nothing else went


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
async def test_error_response_invalidates_nothing(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, status: int
) -> None:
    await store(proxy, origin, client, "/doc")
    origin.script("/doc", Reply(status=status))
    await fetch(client, "POST", proxy.url + "/doc", headers={"Host": HOST})
    assert await is_hit(proxy, client, "/doc")
    assert origin.hits("/doc") == 2  # the GET and the POST


@pytest.mark.parametrize("method", ["OPTIONS"])
async def test_safe_methods_invalidate_nothing(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, method: str
) -> None:
    await store(proxy, origin, client, "/doc")
    await fetch(client, method, proxy.url + "/doc", headers={"Host": HOST})
    assert await is_hit(proxy, client, "/doc")


@pytest.mark.parametrize(
    ("field", "value", "invalidated"),
    [
        ("Location", "/moved", True),
        ("Location", f"http://{HOST}/moved", True),
        ("Location", "http://WWW.Example.TEST:80/moved", True),  # same origin, other spelling
        ("Content-Location", "/moved", True),
        ("Content-Location", "moved", True),  # relative to /doc
        # Another host: never (4.4, to stop denial of service).
        ("Location", "http://other.example/moved", False),
        ("Content-Location", "http://other.example/moved", False),
    ],
)
async def test_location_and_content_location_invalidated_on_same_host(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    field: str,
    value: str,
    invalidated: bool,
) -> None:
    await store(proxy, origin, client, "/doc", "/moved")
    origin.script("/doc", Reply(status=201, headers={field: value}))
    await fetch(client, "POST", proxy.url + "/doc", headers={"Host": HOST})
    assert await is_hit(proxy, client, "/moved") is not invalidated
    assert not await is_hit(proxy, client, "/doc")


async def test_other_host_with_same_path_is_untouched(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/doc", Reply(body=b"doc", headers=MAX_AGE))
    for host in (HOST, "other.example"):
        await fetch(client, "GET", proxy.url + "/doc", headers={"Host": host})
    origin.script("/doc", Reply(status=204))
    await fetch(client, "DELETE", proxy.url + "/doc", headers={"Host": HOST})
    assert await is_hit(proxy, client, "/doc", host="other.example")
    origin.script("/doc", Reply(body=b"doc", headers=MAX_AGE))
    assert not await is_hit(proxy, client, "/doc", host=HOST)


async def test_invalidation_covers_every_variant_and_query(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/doc", Reply(body=b"v", headers={**MAX_AGE, "Vary": "X-L"}))
    for lang in ("en", "fr"):
        await fetch(client, "GET", proxy.url + "/doc", headers={"Host": HOST, "X-L": lang})
    await fetch(client, "GET", proxy.url + "/doc?page=2", headers={"Host": HOST, "X-L": "en"})
    origin.script("/doc", Reply(status=200))
    await fetch(client, "PUT", proxy.url + "/doc", headers={"Host": HOST}, data=b"x")
    origin.script("/doc", Reply(body=b"v", headers={**MAX_AGE, "Vary": "X-L"}))
    for lang in ("en", "fr"):
        got = await fetch(client, "GET", proxy.url + "/doc", headers={"Host": HOST, "X-L": lang})
        # Both variants went: each goes to the origin (the second a vary-miss
        # only because the first was stored again).
        assert "fwd=uri-miss" in got.headers["Cache-Status"] or (
            lang == "fr" and "fwd=vary-miss" in got.headers["Cache-Status"]
        ), lang
        assert origin.last().headers["X-L"] == lang
    # The query is part of the URI: /doc?page=2 is another resource.
    got = await fetch(client, "GET", proxy.url + "/doc?page=2", headers={"Host": HOST, "X-L": "en"})
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
