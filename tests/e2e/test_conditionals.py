"""Client preconditions answered from the cache (RFC 9111 section 4.3.2, RFC 9110
section 13): 304 and 412 without contacting the origin.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

ETAG = '"c1"'
LM_AGO = 1000  # Last-Modified, seconds before the response


async def prime(proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession) -> None:
    origin.script(
        "/c",
        Reply(
            body=b"conditional body",
            headers={
                "Cache-Control": "max-age=60",
                "ETag": ETAG,
                "Last-Modified": origin.date(-LM_AGO),
                "Expires": origin.date(60),
                "Vary": "X-Variant",
                "Content-Location": "/c.txt",
                "Content-Type": "text/plain",
                "X-Other": "not in a 304",
            },
        ),
    )
    got = await fetch(client, "GET", proxy.url + "/c")
    assert "; stored" in got.headers["Cache-Status"]


@pytest.mark.parametrize(
    ("conditions", "status"),
    [
        # RFC 9110 section 13.1.2: If-None-Match, weak comparison.
        ({"If-None-Match": ETAG}, 304),
        ({"If-None-Match": f"W/{ETAG}"}, 304),
        ({"If-None-Match": '"a", "b", ' + ETAG}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        # 13.1.3: If-Modified-Since against Last-Modified ...
        ({"If-Modified-Since": "LM"}, 304),
        ({"If-Modified-Since": "LM+10"}, 304),
        ({"If-Modified-Since": "LM-10"}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        # ... only without If-None-Match (13.2.2 step 4).
        ({"If-None-Match": '"other"', "If-Modified-Since": "LM+10"}, 200),
        ({"If-None-Match": ETAG, "If-Modified-Since": "LM-10"}, 304),
        # 13.1.1: If-Match, strong comparison; failing -> 412.
        ({"If-Match": ETAG}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{ETAG}"}, 412),
        # 13.1.4: If-Unmodified-Since; failing -> 412.
        ({"If-Unmodified-Since": "LM"}, 200),
        ({"If-Unmodified-Since": "LM-10"}, 412),
        # 13.2.2: If-Match is evaluated first.
        ({"If-Match": '"other"', "If-None-Match": ETAG}, 412),
    ],
)
async def test_preconditions_answered_from_the_cache(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    conditions: dict[str, str],
    status: int,
) -> None:
    await prime(proxy, origin, client)
    clock.advance(5)
    lm = clock() - 5 - LM_AGO
    headers = {}
    for name, value in conditions.items():
        if value.startswith("LM"):
            value = origin.date(lm - clock() + float(value[2:] or 0))
        headers[name] = value
    got = await fetch(client, "GET", proxy.url + "/c", headers=headers)
    assert got.status == status
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=55"
    assert origin.hits("/c") == 1  # the origin was not contacted
    if status == 200:
        assert got.body == b"conditional body"
        assert got.headers["Age"] == "5"
    elif status == 304:
        assert got.body == b""
    else:
        assert got.body.startswith(b"Precondition Failed")


async def test_304_carries_the_required_fields_only(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9110 section 15.4.5: ETag, Cache-Control, Date, Expires, Vary,
    # Content-Location as the 200 would have; no body.
    await prime(proxy, origin, client)
    stored = origin.last()
    clock.advance(5)
    got = await fetch(client, "GET", proxy.url + "/c", headers={"If-None-Match": ETAG})
    assert got.status == 304
    assert got.body == b""
    assert got.headers["ETag"] == ETAG
    assert got.headers["Cache-Control"] == "max-age=60"
    assert got.headers["Expires"] == origin.date(55)
    assert got.headers["Date"] == origin.date(-5)
    assert got.headers["Vary"] == "X-Variant"
    assert got.headers["Content-Location"] == "/c.txt"
    assert got.headers["Age"] == "5"
    assert "X-Other" not in got.headers
    assert got.headers.get("Content-Length", "0") == "0"
    assert stored.method == "GET"
    assert origin.hits("/c") == 1


async def test_head_with_if_none_match_gets_304(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    await prime(proxy, origin, client)
    got = await fetch(client, "HEAD", proxy.url + "/c", headers={"If-None-Match": ETAG})
    assert got.status == 304
    assert origin.hits("/c") == 1


async def test_conditions_on_a_just_revalidated_entry(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9111 section 4.3.2 applies to a response just validated upstream too.
    await prime(proxy, origin, client)
    clock.advance(100)
    origin.script("/c", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=60"}))
    got = await fetch(client, "GET", proxy.url + "/c", headers={"If-Match": '"nope"'})
    assert got.status == 412
    got = await fetch(client, "GET", proxy.url + "/c", headers={"If-None-Match": ETAG})
    assert got.status == 304
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=60"
    assert origin.hits("/c") == 2


async def test_conditions_on_a_stored_error_status_are_not_evaluated(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9110 section 13.2.1: preconditions are ignored when the response
    # would be other than 2xx; a stored 404 answers as a 404.
    origin.script("/gone", Reply(status=404, body=b"no", headers={"Cache-Control": "max-age=60"}))
    await fetch(client, "GET", proxy.url + "/gone")
    got = await fetch(client, "GET", proxy.url + "/gone", headers={"If-None-Match": "*"})
    assert (got.status, got.body) == (404, b"no")
    got = await fetch(client, "GET", proxy.url + "/gone", headers={"If-Match": '"x"'})
    assert (got.status, got.body) == (404, b"no")
    assert origin.hits("/gone") == 1
