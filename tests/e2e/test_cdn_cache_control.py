"""Targeted cache control (RFC 9213): CDN-Cache-Control and our own field,
end to end, one table per section.

The target list is [Edgeproxy-Cache-Control (configurable name),
CDN-Cache-Control]; both are removed from client responses by default.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from edgeproxy.http.dates import format_http_date
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

ETAG = '"t"'


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


async def first_and_second(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, headers: dict[str, str]
) -> tuple[str, str]:
    """Cache-Status of a miss and of the next request for the same URL."""
    origin.script("/t", Reply(body=b"body", headers=headers))
    first = await fetch(client, "GET", proxy.url + "/t")
    await landed(proxy)
    second = await fetch(client, "GET", proxy.url + "/t")
    return first.headers["Cache-Status"], second.headers["Cache-Status"]


async def landed(proxy: Proxy) -> None:
    # The client can hold the whole body before the commit; the flight lands after it.
    for _ in range(2000):  # bounded: 10 s
        if not proxy.app[EDGE].flights.waiting():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the fill never landed")


# -- Section 2.1: which field governs ---------------------------------------------


@pytest.mark.parametrize(
    ("headers", "first", "second"),
    [
        pytest.param(
            {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=600"},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=600",
            "edgeproxy; hit; ttl=600",
            id="cdn-cache-control-wins-over-cache-control",
        ),
        pytest.param(
            {"Edgeproxy-Cache-Control": "max-age=30", "CDN-Cache-Control": "max-age=600"},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=30",
            "edgeproxy; hit; ttl=30",
            id="most-specific-target-first",
        ),
        pytest.param(
            {"Cache-Control": "max-age=60", "Other-CDN-Cache-Control": "no-store"},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60",
            "edgeproxy; hit; ttl=60",
            id="fields-not-on-the-target-list-change-nothing",
        ),
        pytest.param(
            {"Cache-Control": "max-age=60"},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60",
            "edgeproxy; hit; ttl=60",
            id="no-targeted-field-cache-control-governs",
        ),
    ],
)
async def test_2_1_the_first_valid_field_on_the_target_list_governs(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    headers: dict[str, str],
    first: str,
    second: str,
) -> None:
    assert await first_and_second(proxy, origin, client, headers) == (first, second)
    assert origin.hits("/t") == 1


async def test_2_1_expires_is_ignored_along_with_cache_control(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # The targeted field carries no lifetime: neither Cache-Control's
    # max-age nor Expires counts, so the lifetime is heuristic (RFC 9111
    # 4.2.2): 10% of the 1000 s since Last-Modified.
    headers = {
        "Cache-Control": "max-age=500",
        "Expires": format_http_date(clock() + 1000),
        "CDN-Cache-Control": "stale-if-error=60",
        "Last-Modified": format_http_date(clock() - 1000),
    }
    first, _ = await first_and_second(proxy, origin, client, headers)
    assert first == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=100"


@pytest.mark.parametrize(
    ("targeted", "stored"),
    [
        pytest.param("no-store", False, id="no-store"),
        pytest.param("private", False, id="private"),
        pytest.param("max-age=600", True, id="max-age"),
    ],
)
async def test_2_1_required_directives_no_store_private_max_age(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    targeted: str,
    stored: bool,
) -> None:
    headers = {"Cache-Control": "public, max-age=600", "CDN-Cache-Control": targeted}
    first, second = await first_and_second(proxy, origin, client, headers)
    assert ("; stored" in first) is stored
    assert second.startswith("edgeproxy; hit") is stored
    assert origin.hits("/t") == (1 if stored else 2)


async def test_2_1_no_cache_in_the_targeted_field_revalidates_every_use(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    headers = {"Cache-Control": "max-age=600", "CDN-Cache-Control": "no-cache", "ETag": ETAG}
    origin.script("/t", Reply(body=b"body", headers=headers))
    await fetch(client, "GET", proxy.url + "/t")
    await landed(proxy)
    origin.script("/t", Reply(status=304, headers=headers))
    got = await fetch(client, "GET", proxy.url + "/t")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=stale; fwd-status=304")
    assert origin.last().headers["If-None-Match"] == ETAG


async def test_2_1_must_revalidate_in_the_targeted_field_forbids_stale_on_error(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # Cache-Control allows stale-if-error, but the targeted field governs (and
    # forbids serving stale: RFC 9111 section 5.2.2.2).
    headers = {
        "Cache-Control": "max-age=600, stale-if-error=600",
        "CDN-Cache-Control": "max-age=10, stale-if-error=60, must-revalidate",
        "ETag": ETAG,
    }
    origin.script("/t", Reply(body=b"body", headers=headers))
    await fetch(client, "GET", proxy.url + "/t")
    await landed(proxy)
    clock.advance(15)
    origin.script("/t", Reply(status=503, body=b"down"))
    got = await fetch(client, "GET", proxy.url + "/t")
    assert (got.status, got.body) == (503, b"down")


# -- Section 2.2: parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    "targeted",
    [
        pytest.param("", id="empty"),
        pytest.param('max-age=600, "not a key"', id="not-an-sf-dictionary"),
        pytest.param("max-age=600,", id="trailing-comma"),
    ],
)
async def test_2_2_an_empty_or_unparsable_field_is_ignored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, targeted: str
) -> None:
    headers = {"Cache-Control": "max-age=60", "CDN-Cache-Control": targeted}
    first, _ = await first_and_second(proxy, origin, client, headers)
    assert first == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60"


async def test_2_2_an_invalid_first_target_falls_to_the_next(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    headers = {
        "Cache-Control": "max-age=60",
        "Edgeproxy-Cache-Control": "max-age=(",
        "CDN-Cache-Control": "max-age=600",
    }
    first, _ = await first_and_second(proxy, origin, client, headers)
    assert first == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=600"


# -- Section 3: CDN-Cache-Control downstream, and our own field's name ----------


async def test_3_targeted_fields_are_removed_from_client_responses_by_default(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Section 3: a CDN "MAY remove it"; ours are for us, not for caches
    # downstream. Fields not on our list pass through (2.1).
    headers = {
        "Cache-Control": "no-store",
        "CDN-Cache-Control": "max-age=600",
        "Edgeproxy-Cache-Control": "max-age=300",
        "Other-CDN-Cache-Control": "max-age=5",
    }
    origin.script("/t", Reply(body=b"body", headers=headers))
    for _ in range(2):  # relayed, then from the store
        got = await fetch(client, "GET", proxy.url + "/t")
        await landed(proxy)
        assert "CDN-Cache-Control" not in got.headers
        assert "Edgeproxy-Cache-Control" not in got.headers
        assert got.headers["Other-CDN-Cache-Control"] == "max-age=5"
        # Downstream caches still see the origin's own Cache-Control.
        assert got.headers["Cache-Control"] == "no-store"
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=300"


async def test_3_strip_targeted_off_forwards_them(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(origin_url(origin), strip_targeted=False)
    headers = {"CDN-Cache-Control": "max-age=600", "Edgeproxy-Cache-Control": "max-age=300"}
    origin.script("/t", Reply(body=b"body", headers=headers))
    got = await fetch(client, "GET", proxy.url + "/t")
    assert got.headers["CDN-Cache-Control"] == "max-age=600"
    assert got.headers["Edgeproxy-Cache-Control"] == "max-age=300"


async def test_configured_targeted_field_name(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(origin_url(origin), targeted_field="Acme-Cache-Control")
    headers = {
        "Acme-Cache-Control": "max-age=42",
        "CDN-Cache-Control": "max-age=600",
        # No longer on the target list: ignored and passed through (2.1).
        "Edgeproxy-Cache-Control": "no-store",
    }
    first, second = await first_and_second(proxy, origin, client, headers)
    assert first == "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=42"
    assert second == "edgeproxy; hit; ttl=42"
    got = await fetch(client, "GET", proxy.url + "/t")
    assert "Acme-Cache-Control" not in got.headers
    assert got.headers["Edgeproxy-Cache-Control"] == "no-store"


# -- Section 3.1: the RFC's examples -----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "first"),
    [
        pytest.param(
            {"Cache-Control": "max-age=60, s-maxage=120", "CDN-Cache-Control": "max-age=600"},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=600",
            id="cdn-600-shared-120-others-60",
        ),
        pytest.param(
            {"CDN-Cache-Control": "max-age=600", "Cache-Control": "no-store"},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=600",
            id="cdn-600-others-no-store",
        ),
        pytest.param(
            {"Cache-Control": "no-store"},
            "edgeproxy; fwd=uri-miss; fwd-status=200",
            id="no-store-for-all",
        ),
        pytest.param(
            # "none": not a directive, there to avoid an empty (ignored) field.
            {"Cache-Control": "no-store", "CDN-Cache-Control": "none", "ETag": ETAG},
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=0",
            id="no-store-except-cdns",
        ),
    ],
)
async def test_3_1_examples(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    headers: dict[str, str],
    first: str,
) -> None:
    got_first, _ = await first_and_second(proxy, origin, client, headers)
    assert got_first == first
