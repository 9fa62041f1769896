"""Serving stored responses: freshness (RFC 9111 section 4.2), Age (4.2.3, 5.1),
response and request Cache-Control (5.2), Pragma (5.4), Cache-Status (RFC 9211).
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

ETAG = '"s1"'


async def prime(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    headers: dict[str, str],
    path: str = "/r",
    body: bytes = b"stored",
) -> str:
    """Store a response; returns its Cache-Status on the miss."""
    origin.script(path, Reply(body=body, headers=headers))
    got = await fetch(client, "GET", proxy.url + path)
    assert got.status == 200
    assert "; stored" in got.headers["Cache-Status"]
    return got.headers["Cache-Status"]


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        # RFC 9111 section 4.2.1: first match of s-maxage, max-age, Expires - Date.
        pytest.param({"Cache-Control": "s-maxage=10, max-age=100"}, 10, id="s-maxage-wins"),
        pytest.param({"Cache-Control": "max-age=100, s-maxage=10"}, 10, id="s-maxage-wins-order"),
        pytest.param(
            {"Cache-Control": "max-age=20", "Expires": "+100"}, 20, id="max-age-over-expires"
        ),
        pytest.param({"Expires": "+30"}, 30, id="expires-minus-date"),
        pytest.param({"Expires": "+30", "Date": "-50"}, 80, id="expires-minus-past-date"),
    ],
)
async def test_freshness_lifetime_precedence(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    headers: dict[str, str],
    lifetime: int,
) -> None:
    resolved = {
        k: origin.date(float(v)) if k in ("Expires", "Date") else v for k, v in headers.items()
    }
    date_ago = -float(headers.get("Date", "0"))
    status = await prime(proxy, origin, client, resolved)
    remaining = lifetime - int(date_ago)
    assert status == f"edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl={remaining}"
    clock.advance(remaining - 1)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=1"
    assert got.headers["Age"] == str(lifetime - 1)
    assert origin.hits("/r") == 1
    clock.advance(1)  # age == lifetime: stale (4.2 "fresh if age < lifetime")
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=200; stored")
    assert origin.hits("/r") == 2


@pytest.mark.parametrize("expires", ["0", "not a date", "-1"])
async def test_invalid_expires_means_already_expired(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, expires: str
) -> None:
    # RFC 9111 section 5.3: an invalid Expires (notably "0") is in the past.
    status = await prime(proxy, origin, client, {"Expires": expires, "ETag": ETAG})
    assert status == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=0"
    origin.script("/r", Reply(status=304, headers={"ETag": ETAG}))
    got = await fetch(client, "GET", proxy.url + "/r")
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
    assert origin.hits("/r") == 2


async def test_age_from_origin_age_and_past_date(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9111 section 4.2.3: corrected_initial_age = max(apparent_age,
    # corrected_age_value); here Date is 100 s old, Age says 30.
    await prime(
        proxy,
        origin,
        client,
        {"Cache-Control": "max-age=300", "Date": origin.date(-100), "Age": "30"},
    )
    clock.advance(10)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Age"] == "110"
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=190"
    assert got.headers.getall("Age") == ["110"]  # replaced, not added to the origin's


async def test_age_value_larger_than_apparent_age(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    status = await prime(proxy, origin, client, {"Cache-Control": "max-age=300", "Age": "200"})
    # Already 200 s old when stored: 100 s left, on the miss too (RFC 9211 ttl).
    assert status == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=100"
    clock.advance(10)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Age"] == "210"
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=90"
    clock.advance(90)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert "fwd=stale" in got.headers["Cache-Status"]
    assert origin.hits("/r") == 2


async def test_age_counts_the_response_delay(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # 4.2.3: corrected_age_value = age_value + (response_time - request_time).
    # The origin takes 5 s (on the fake clock) and dates its response at the end.
    async def slow(request: web.Request) -> web.StreamResponse:
        clock.advance(5)
        return web.Response(
            body=b"slow",
            headers={"Cache-Control": "max-age=100", "Age": "20", "Date": origin.date()},
        )

    origin.script("/r", slow)
    miss = await fetch(client, "GET", proxy.url + "/r")
    assert miss.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=75"
    clock.advance(10)
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Age"] == "35"
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=65"


async def test_response_no_cache_always_revalidated(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 5.2.2.4: stored, never reused without validation.
    await prime(proxy, origin, client, {"Cache-Control": "no-cache, max-age=600", "ETag": ETAG})
    for _ in range(2):
        origin.script("/r", Reply(status=304, headers={"ETag": ETAG}))
        got = await fetch(client, "GET", proxy.url + "/r")
        assert (got.status, got.body) == (200, b"stored")
        assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
        assert origin.last().headers["If-None-Match"] == ETAG
    assert origin.hits("/r") == 3


async def test_response_no_cache_with_field_names(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # 5.2.2.4 qualified form: reusable without validation, minus those fields.
    await prime(
        proxy,
        origin,
        client,
        {
            "Cache-Control": 'max-age=60, no-cache="X-Secret, X-Other"',
            "X-Secret": "s",
            "X-Kept": "k",
        },
    )
    got = await fetch(client, "GET", proxy.url + "/r")
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert got.body == b"stored"
    assert "X-Secret" not in got.headers
    assert got.headers["X-Kept"] == "k"
    assert origin.hits("/r") == 1


@pytest.mark.parametrize(
    ("directive", "served_stale"),
    [
        # A client's max-stale lets a stale response be reused (5.2.1.2) ...
        ("max-age=10", True),
        # ... unless the response forbids it (5.2.2.2, 5.2.2.8, 5.2.2.10).
        ("max-age=10, must-revalidate", False),
        ("max-age=10, proxy-revalidate", False),
        ("s-maxage=10", False),
    ],
)
async def test_stale_reuse_with_max_stale(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    directive: str,
    served_stale: bool,
) -> None:
    await prime(proxy, origin, client, {"Cache-Control": directive, "ETag": ETAG})
    clock.advance(30)
    origin.script("/r", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": directive}))
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Cache-Control": "max-stale=60"})
    assert (got.status, got.body) == (200, b"stored")
    if served_stale:
        assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=-20"
        assert got.headers["Age"] == "30"
        assert origin.hits("/r") == 1
    else:
        assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
        assert origin.hits("/r") == 2
        assert origin.last().headers["If-None-Match"] == ETAG


@pytest.mark.parametrize(
    ("request_cc", "age", "hit"),
    [
        # 5.2.1.2 max-stale: staleness within the allowance.
        ("max-stale=60", 70, True),  # 10 s stale
        ("max-stale=5", 70, False),
        ("max-stale", 10_000, True),  # no value: any staleness
        # 5.2.1.1 max-age: the age must not exceed it.
        ("max-age=30", 20, True),
        ("max-age=10", 20, False),
        # 5.2.1.3 min-fresh: at least this much freshness left (60 - 20 = 40).
        ("min-fresh=40", 20, True),
        ("min-fresh=41", 20, False),
        # 5.2.1.4 no-cache: validate even though fresh.
        ("no-cache", 1, False),
    ],
)
async def test_request_directives(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    request_cc: str,
    age: int,
    hit: bool,
) -> None:
    await prime(proxy, origin, client, {"Cache-Control": "max-age=60", "ETag": ETAG})
    clock.advance(age)
    origin.script("/r", Reply(status=304, headers={"ETag": ETAG}))
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Cache-Control": request_cc})
    assert (got.status, got.body) == (200, b"stored")
    if hit:
        assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
        assert got.headers["Age"] == str(age)
        assert origin.hits("/r") == 1
    else:
        fwd = "stale" if age >= 60 else "request"
        assert got.headers["Cache-Status"].startswith(f"edgeproxy; fwd={fwd}; fwd-status=304")
        assert origin.hits("/r") == 2
        assert origin.last().headers["If-None-Match"] == ETAG
        # The client's own directive still travels upstream (5.2.1).
        assert origin.last().headers["Cache-Control"] == request_cc


@pytest.mark.parametrize(
    ("headers", "hit"),
    [
        # RFC 9111 section 5.4: Pragma: no-cache counts only without Cache-Control.
        ({"Pragma": "no-cache"}, False),
        ({"Pragma": "no-cache", "Cache-Control": "max-age=600"}, True),
        ({"Pragma": "x-other"}, True),
    ],
)
async def test_pragma_no_cache(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    headers: dict[str, str],
    hit: bool,
) -> None:
    await prime(proxy, origin, client, {"Cache-Control": "max-age=60", "ETag": ETAG})
    origin.script("/r", Reply(status=304, headers={"ETag": ETAG}))
    got = await fetch(client, "GET", proxy.url + "/r", headers=headers)
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"].startswith(
        "edgeproxy; hit" if hit else "edgeproxy; fwd=request; fwd-status=304"
    )
    assert origin.hits("/r") == (1 if hit else 2)


async def test_only_if_cached_with_nothing_stored_is_504(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 5.2.1.7: 504, and the origin is not contacted.
    origin.script("/r", Reply(body=b"x", headers={"Cache-Control": "max-age=60"}))
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Cache-Control": "only-if-cached"})
    assert got.status == 504
    assert got.body.startswith(b"Gateway Timeout")
    assert got.headers["Cache-Status"] == "edgeproxy; detail=only-if-cached"
    assert origin.hits() == 0


async def test_only_if_cached_served_when_fresh_504_when_stale(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await prime(proxy, origin, client, {"Cache-Control": "max-age=60", "ETag": ETAG})
    only = {"Cache-Control": "only-if-cached"}
    got = await fetch(client, "GET", proxy.url + "/r", headers=only)
    assert (got.status, got.body) == (200, b"stored")
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    clock.advance(61)
    got = await fetch(client, "GET", proxy.url + "/r", headers=only)
    assert got.status == 504
    # With max-stale the stale response is usable again.
    got = await fetch(
        client, "GET", proxy.url + "/r", headers={"Cache-Control": "only-if-cached, max-stale"}
    )
    assert (got.status, got.body) == (200, b"stored")
    assert origin.hits("/r") == 1


async def test_only_if_cached_vary_miss_is_504(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/r", Reply(body=b"en", headers={"Cache-Control": "max-age=60", "Vary": "X-L"}))
    await fetch(client, "GET", proxy.url + "/r", headers={"X-L": "en"})
    got = await fetch(
        client, "GET", proxy.url + "/r", headers={"X-L": "fr", "Cache-Control": "only-if-cached"}
    )
    assert got.status == 504
    assert origin.hits("/r") == 1


async def test_cache_status_on_every_kind_of_response(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9211 section 2: hit, fwd (uri-miss, vary-miss, stale, request,
    # method), fwd-status, stored, ttl.
    origin.script("/c", Reply(body=b"c", headers={"Cache-Control": "max-age=10", "Vary": "X-V"}))
    origin.script("/p", Reply(body=b"p"))
    url = proxy.url + "/c"
    seen = [
        (await fetch(client, "GET", url, headers={"X-V": "1"})).headers["Cache-Status"],
        (await fetch(client, "GET", url, headers={"X-V": "1"})).headers["Cache-Status"],
        (await fetch(client, "GET", url, headers={"X-V": "2"})).headers["Cache-Status"],
        (
            await fetch(client, "GET", url, headers={"X-V": "1", "Cache-Control": "no-cache"})
        ).headers["Cache-Status"],
        (await fetch(client, "POST", proxy.url + "/p")).headers["Cache-Status"],
    ]
    clock.advance(11)
    seen.append((await fetch(client, "GET", url, headers={"X-V": "2"})).headers["Cache-Status"])
    assert seen == [
        "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=10",
        "edgeproxy; hit; ttl=10",
        "edgeproxy; fwd=vary-miss; fwd-status=200; stored; ttl=10",
        "edgeproxy; fwd=request; fwd-status=200; stored; ttl=10",
        "edgeproxy; fwd=method; fwd-status=200",
        "edgeproxy; fwd=stale; fwd-status=200; stored; ttl=10",
    ]
