"""Validation upstream (RFC 9111 section 4.3): conditional requests, 304 merges,
full replacements, errors, and client validators on a miss.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

ETAG = '"v1"'
LAST_MODIFIED_AGO = 3600


async def stale_entry(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    validators: dict[str, str],
    extra: dict[str, str] | None = None,
) -> None:
    """Store `/v` (max-age=10) and let it go stale."""
    origin.script(
        "/v",
        Reply(
            body=b"version one",
            headers={
                "Cache-Control": "max-age=10",
                "X-Version": "1",
                **validators,
                **(extra or {}),
            },
        ),
    )
    got = await fetch(client, "GET", proxy.url + "/v")
    assert "; stored" in got.headers["Cache-Status"]
    clock.advance(20)


@pytest.mark.parametrize(
    ("validators", "sent"),
    [
        # 4.3.1: If-None-Match from an ETag, If-Modified-Since from Last-Modified.
        ({"ETag": ETAG}, {"If-None-Match": ETAG}),
        ({"ETag": 'W/"weak"'}, {"If-None-Match": 'W/"weak"'}),
        ({"Last-Modified": "LM"}, {"If-Modified-Since": "LM"}),
        ({"ETag": ETAG, "Last-Modified": "LM"}, {"If-None-Match": ETAG, "If-Modified-Since": "LM"}),
    ],
)
async def test_conditional_request_carries_stored_validators(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    validators: dict[str, str],
    sent: dict[str, str],
) -> None:
    lm = origin.date(-LAST_MODIFIED_AGO)
    validators = {k: lm if v == "LM" else v for k, v in validators.items()}
    await stale_entry(proxy, origin, client, clock, validators)
    origin.script("/v", Reply(status=304, headers={"Cache-Control": "max-age=10", **validators}))
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.status, got.body) == (200, b"version one")
    seen = origin.last().headers
    assert origin.last().method == "GET"
    for name in ("If-None-Match", "If-Modified-Since"):
        expected = sent.get(name)
        assert seen.get(name) == (lm if expected == "LM" else expected), name


async def test_304_updates_fields_and_resets_timing(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG}, {"X-Untouched": "kept"})
    origin.script(
        "/v",
        Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=100", "X-Version": "2"}),
    )
    got = await fetch(client, "GET", proxy.url + "/v")
    # 4.3.4: the stored response, with the 304's fields, as a 200.
    assert (got.status, got.body) == (200, b"version one")
    assert got.headers["X-Version"] == "2"
    assert got.headers["X-Untouched"] == "kept"
    assert got.headers["Cache-Control"] == "max-age=100"
    assert got.headers["Age"] == "0"
    assert got.headers["Date"] == origin.date()
    assert got.headers["Content-Length"] == str(len(b"version one"))
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=100"
    # The refreshed entry is fresh again for its new lifetime.
    clock.advance(99)
    got = await fetch(client, "GET", proxy.url + "/v")
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=1"
    assert got.headers["X-Version"] == "2"
    assert got.headers["Age"] == "99"
    assert origin.hits("/v") == 2


async def test_304_to_the_client_when_its_own_conditions_match(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})
    origin.script("/v", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=10"}))
    got = await fetch(client, "GET", proxy.url + "/v", headers={"If-None-Match": ETAG})
    assert got.status == 304
    assert got.body == b""
    assert got.headers["ETag"] == ETAG
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=10"
    assert origin.hits("/v") == 2


async def test_client_validators_are_replaced_by_the_caches_own(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # The client holds another version: the cache validates what *it* holds
    # (4.3.1), then answers the client's condition itself (4.3.2).
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})
    origin.script("/v", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=10"}))
    got = await fetch(client, "GET", proxy.url + "/v", headers={"If-None-Match": '"v0"'})
    assert (got.status, got.body) == (200, b"version one")
    assert origin.last().headers.getall("If-None-Match") == [ETAG]


async def test_full_200_on_revalidation_replaces_the_entry(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})
    origin.script(
        "/v",
        Reply(body=b"version two", headers={"ETag": '"v2"', "Cache-Control": "max-age=10"}),
    )
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.status, got.body) == (200, b"version two")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=200; stored; ttl=10"
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.body, got.headers["ETag"]) == (b"version two", '"v2"')
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits("/v") == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_on_revalidation_is_passed_on(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    status: int,
) -> None:
    # 4.3.3: the cache may forward the error; this one does.
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})
    origin.script("/v", Reply(status=status, body=b"origin trouble"))
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.status, got.body) == (status, b"origin trouble")
    assert got.headers["Cache-Status"] == f"edgeproxy; fwd=stale; fwd-status={status}"
    # The stored response survives: once the origin recovers, it validates it.
    origin.script("/v", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=10"}))
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.status, got.body) == (200, b"version one")
    assert origin.last().headers["If-None-Match"] == ETAG


async def test_failed_connection_on_revalidation_is_502(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})
    await origin.close()
    got = await fetch(client, "GET", proxy.url + "/v")
    assert got.status == 502
    assert got.headers["Proxy-Status"].startswith("edgeproxy; error=connection_")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale")


async def test_304_for_another_representation_fetches_it_whole(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # 4.3.4: a 304 whose validator doesn't match what we hold updates nothing;
    # the cache asks again without conditions.
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})

    async def answer(request: web.Request) -> web.StreamResponse:
        if "If-None-Match" in request.headers:
            return web.Response(status=304, headers={"ETag": '"other"', "Date": origin.date()})
        return web.Response(
            body=b"version three",
            headers={"ETag": '"v3"', "Cache-Control": "max-age=10", "Date": origin.date()},
        )

    origin.script("/v", answer)
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.status, got.body) == (200, b"version three")
    assert [r.headers.get("If-None-Match") for r in origin.received[1:]] == [ETAG, None]


async def test_client_validators_forwarded_as_is_on_a_miss(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Nothing stored: the client's conditional goes upstream unchanged, and
    # the origin's 304 is relayed but never stored as a full response.
    lm = origin.date(-100)
    origin.script("/v", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=60"}))
    got = await fetch(
        client, "GET", proxy.url + "/v", headers={"If-None-Match": ETAG, "If-Modified-Since": lm}
    )
    assert got.status == 304
    assert got.body == b""
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=304"
    seen = origin.last().headers
    assert (seen["If-None-Match"], seen["If-Modified-Since"]) == (ETAG, lm)
    origin.script("/v", Reply(body=b"full", headers={"ETag": ETAG, "Cache-Control": "max-age=60"}))
    got = await fetch(client, "GET", proxy.url + "/v")
    assert (got.status, got.body) == (200, b"full")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss; fwd-status=200; stored")
    assert "If-None-Match" not in origin.last().headers


async def test_client_validators_forwarded_when_stale_entry_has_none(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # A stale entry without validators can't be revalidated: the request goes
    # as the client sent it, and a 304 replaces nothing.
    await stale_entry(proxy, origin, client, clock, {})
    origin.script("/v", Reply(status=304, headers={"ETag": ETAG}))
    got = await fetch(client, "GET", proxy.url + "/v", headers={"If-None-Match": ETAG})
    assert got.status == 304
    assert origin.last().headers["If-None-Match"] == ETAG
    assert "stored" not in got.headers["Cache-Status"]


async def test_head_revalidates_with_get(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await stale_entry(proxy, origin, client, clock, {"ETag": ETAG})
    origin.script("/v", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=10"}))
    got = await fetch(client, "HEAD", proxy.url + "/v")
    assert (got.status, got.body) == (200, b"")
    assert got.headers["Content-Length"] == str(len(b"version one"))
    assert (origin.last().method, origin.last().headers["If-None-Match"]) == ("GET", ETAG)
    got = await fetch(client, "GET", proxy.url + "/v")
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
