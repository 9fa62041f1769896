"""Range requests on a miss (RFC 9110 section 14): the edge fetches the whole
object without Range or If-Range, stores it, and cuts the client's range(s)
from the bytes as they arrive: a 206 single part as soon as its bytes pass,
multipart/byteranges part by part, 416 once the length is known. Above
max_object_size (Content-Length known up front) the Range request goes
upstream as is. A 206 from the origin is never stored (RFC 9111 section 3.3).
"""

from __future__ import annotations

import asyncio
from email.message import Message
from email.parser import BytesParser

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.http.dates import format_http_date
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Got, Proxy, Reply, ScriptedOrigin, fetch, until
from tests.e2e.test_ranges import pattern

ETAG = '"v1"'
BODY = pattern(300_000)  # bigger than one CHUNK and the collapse buffer
FIELDS = {"Cache-Control": "max-age=600", "ETag": ETAG, "Content-Type": "application/x-data"}


async def get(client: aiohttp.ClientSession, proxy: Proxy, path: str, **headers: str) -> Got:
    return await fetch(client, "GET", proxy.url + path, headers=headers)


async def assert_stored_whole(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    """The next plain GET is a hit with the whole object."""
    hits = origin.hits(path)
    got = await get(client, proxy, path)
    assert (got.status, got.body) == (200, body)
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits(path) == hits


@pytest.mark.parametrize(
    ("range_", "first", "last"),
    [
        ("bytes=0-99", 0, 99),  # 14.1.2 int-range
        ("bytes=100000-100099", 100_000, 100_099),  # inside a later chunk
        ("bytes=299990-", 299_990, 299_999),  # open int-range
        ("bytes=-10", 299_990, 299_999),  # suffix-range
        ("bytes=65530-65545", 65_530, 65_545),  # across a chunk boundary
        ("bytes=299990-999999", 299_990, 299_999),  # last-pos past the end: clipped
    ],
)
async def test_single_range_miss_fetches_the_whole_and_stores_it(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    range_: str,
    first: int,
    last: int,
) -> None:
    origin.script("/r", Reply(body=BODY, headers=FIELDS))
    got = await get(client, proxy, "/r", Range=range_, **{"If-Range": ETAG})
    assert got.status == 206  # RFC 9110 section 15.3.7.1
    assert got.body == BODY[first : last + 1]
    assert got.headers["Content-Range"] == f"bytes {first}-{last}/{len(BODY)}"
    assert got.headers["Content-Length"] == str(last - first + 1)
    assert got.headers["ETag"] == ETAG and got.headers["Accept-Ranges"] == "bytes"
    assert got.headers["Cache-Status"] == (
        "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=600"
    )
    # The origin was asked for the whole object: no Range, no If-Range.
    assert "Range" not in origin.last().headers and "If-Range" not in origin.last().headers
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    await assert_stored_whole(proxy, origin, client, "/r", BODY)


async def test_range_is_served_as_soon_as_its_bytes_arrive(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The origin sends the first 100 KB, then stalls until released: the
    # client's 206 for bytes 0-99 is complete long before the body ends.
    gate = asyncio.Event()

    async def stalling(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**FIELDS, "Date": origin.date()})
        resp.content_length = len(BODY)
        await resp.prepare(request)
        await resp.write(BODY[:100_000])
        await gate.wait()
        await resp.write(BODY[100_000:])
        await resp.write_eof()
        return resp

    origin.script("/s", stalling)
    # (Were it held back, the client's bounded read would fail the test.)
    got = await get(client, proxy, "/s", Range="bytes=0-99")
    assert (got.status, got.body) == (206, BODY[:100])
    assert not gate.is_set()  # answered while the origin still held the rest
    gate.set()
    await until(lambda: proxy.app[EDGE].counters["stored"] == 1, "the fill to be stored")
    await assert_stored_whole(proxy, origin, client, "/s", BODY)


def parse_multipart(got: Got) -> list[Message]:
    ctype = got.headers["Content-Type"]
    msg = BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + got.body)
    assert msg.is_multipart()
    return list(msg.get_payload())  # type: ignore[arg-type]


async def test_multipart_range_miss(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/m", Reply(body=BODY, headers=FIELDS))
    got = await get(client, proxy, "/m", Range="bytes=0-9, 200000-200009,-5")
    # RFC 9110 section 15.3.7.2: multipart/byteranges, one part per range,
    # each with Content-Type and Content-Range; no Content-Range on the whole.
    assert got.status == 206
    assert got.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert "Content-Range" not in got.headers
    assert got.headers["Content-Length"] == str(len(got.body))
    parts = parse_multipart(got)
    expected = [(0, 9), (200_000, 200_009), (299_995, 299_999)]
    assert [p["Content-Range"] for p in parts] == [
        f"bytes {a}-{b}/{len(BODY)}" for a, b in expected
    ]
    assert all(p["Content-Type"] == "application/x-data" for p in parts)
    assert [p.get_payload(decode=True) for p in parts] == [BODY[a : b + 1] for a, b in expected]
    await until(lambda: not proxy.app[EDGE].flights.waiting(), "the fill to land")
    await assert_stored_whole(proxy, origin, client, "/m", BODY)


async def test_unsatisfiable_range_miss_is_416_and_still_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/u", Reply(body=BODY, headers=FIELDS))
    got = await get(client, proxy, "/u", Range="bytes=400000-")
    # RFC 9110 section 15.5.17: 416 with the current length once it is known.
    assert got.status == 416
    assert got.headers["Content-Range"] == f"bytes */{len(BODY)}"
    assert "stored" in got.headers["Cache-Status"]
    await until(lambda: proxy.app[EDGE].counters["stored"] == 1, "the fill to be stored")
    await assert_stored_whole(proxy, origin, client, "/u", BODY)


@pytest.mark.parametrize(
    ("if_range", "expected"),
    [
        (ETAG, 206),  # 13.1.5: matches the fetched response's strong ETag
        ('"v0"', 200),  # another version: the whole representation
        ('W/"v1"', 200),  # weak never matches (strong comparison)
    ],
)
async def test_if_range_is_evaluated_against_the_fetched_response(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    if_range: str,
    expected: int,
) -> None:
    origin.script("/i", Reply(body=BODY, headers=FIELDS))
    got = await get(client, proxy, "/i", Range="bytes=0-9", **{"If-Range": if_range})
    assert got.status == expected
    assert got.body == (BODY[:10] if expected == 206 else BODY)
    assert "If-Range" not in origin.last().headers


async def test_if_range_date(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    modified = format_http_date(clock() - 3600)
    origin.script("/d", Reply(body=BODY, headers={**FIELDS, "Last-Modified": modified}))
    got = await get(client, proxy, "/d", Range="bytes=5-6", **{"If-Range": modified})
    assert (got.status, got.body) == (206, BODY[5:7])


async def test_too_big_to_store_passes_the_range_upstream(
    origin: ScriptedOrigin, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    assert origin.server is not None
    proxy = await make_proxy(f"http://127.0.0.1:{origin.server.port}", max_object_size=100_000)

    async def ranged(request: web.Request) -> web.StreamResponse:
        h = {**FIELDS, "Date": origin.date()}
        if request.headers.get("Range") == "bytes=10-19":
            h["Content-Range"] = f"bytes 10-19/{len(BODY)}"
            return web.Response(status=206, body=BODY[10:20], headers=h)
        return web.Response(body=BODY, headers=h)

    origin.script("/big", ranged)
    got = await get(client, proxy, "/big", Range="bytes=10-19")
    assert (got.status, got.body) == (206, BODY[10:20])
    assert got.headers["Content-Range"] == f"bytes 10-19/{len(BODY)}"
    # First the whole object (its Content-Length too big), then the client's
    # Range as is; the 206 is relayed, never stored (RFC 9111 section 3.3).
    assert origin.hits("/big") == 2
    assert "Range" not in origin.received[0].headers
    assert origin.received[1].headers["Range"] == "bytes=10-19"
    assert "stored" not in got.headers["Cache-Status"]
    again = await get(client, proxy, "/big", Range="bytes=10-19")
    assert again.status == 206 and origin.hits("/big") == 4


async def test_an_origin_206_is_never_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # An origin that answers 206 even to a request without Range: relayed as
    # is, not stored as a complete response (RFC 9111 sections 3.3, 3.4).
    part = {**FIELDS, "Content-Range": f"bytes 0-9/{len(BODY)}"}
    origin.script("/p", Reply(status=206, body=BODY[:10], headers=part))
    for _ in range(2):
        got = await get(client, proxy, "/p", Range="bytes=0-9")
        assert (got.status, got.body) == (206, BODY[:10])
        assert "stored" not in got.headers["Cache-Status"]
    assert origin.hits("/p") == 2


async def test_chunked_origin_range_is_ignored_then_served_from_the_store(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Length unknown until the end: Range is ignored (RFC 9110 section 14.2
    # MAY), the whole 200 relayed and stored; later ranges come from the store.
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**FIELDS, "Date": origin.date()})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(BODY)
        await resp.write_eof()
        return resp

    origin.script("/c", chunked)
    got = await get(client, proxy, "/c", Range="bytes=0-9")
    assert (got.status, got.body) == (200, BODY)
    got = await get(client, proxy, "/c", Range="bytes=0-9")
    assert (got.status, got.body) == (206, BODY[:10])
    assert origin.hits("/c") == 1


async def test_error_status_is_relayed(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Range applies to a 200 only (RFC 9110 section 14.2): a 404 goes as is.
    origin.script(
        "/n", Reply(status=404, body=b"not here", headers={"Cache-Control": "max-age=60"})
    )
    got = await get(client, proxy, "/n", Range="bytes=0-2")
    assert (got.status, got.body) == (404, b"not here")
    assert "Range" not in origin.last().headers


async def test_concurrent_range_misses_make_one_origin_fetch(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=BODY, headers={**FIELDS, "Date": origin.date()})

    origin.script("/k", slow)
    leader = asyncio.create_task(get(client, proxy, "/k", Range="bytes=0-9"))
    await until(lambda: origin.hits("/k") == 1, "the leader upstream")
    waiter = asyncio.create_task(get(client, proxy, "/k", Range="bytes=20-29"))
    await until(lambda: sum(proxy.app[EDGE].flights.waiting().values()) == 1, "a waiter")
    gate.set()
    got_leader, got_waiter = await leader, await waiter
    assert origin.hits("/k") == 1  # collapsed (collapse.py): one fetch for both
    assert (got_leader.status, got_leader.body) == (206, BODY[:10])
    assert "collapsed" in got_waiter.headers["Cache-Status"]
    # A waiter streams the leader's whole response (serve_stored's flight
    # path answers no ranges yet: RFC 9110 section 14.2 lets it ignore Range).
    assert (got_waiter.status, got_waiter.body) == (200, BODY)
    got = await get(client, proxy, "/k", Range="bytes=20-29")
    assert (got.status, got.body) == (206, BODY[20:30])
    assert origin.hits("/k") == 1


async def test_client_leaving_after_its_range_does_not_stop_the_fill(
    proxy: Proxy, origin: ScriptedOrigin
) -> None:
    # The client reads its 206 and closes its connection; the fill goes on.
    origin.script("/l", Reply(body=BODY, headers=FIELDS))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as own,
        own.get(proxy.url + "/l", headers={"Range": "bytes=0-9"}) as r,
    ):
        assert r.status == 206 and await r.read() == BODY[:10]
    await until(lambda: proxy.app[EDGE].counters["stored"] == 1, "the fill to be stored")
    async with aiohttp.ClientSession(auto_decompress=False) as c:
        await assert_stored_whole(proxy, origin, c, "/l", BODY)


async def test_unstorable_response_still_answers_the_range(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The whole object was asked for; it turns out not storable (no-store,
    # RFC 9111 section 5.2.2.5): the range is cut from it all the same, and
    # the rest is not read once the client has its answer.
    origin.script("/ns", Reply(body=BODY, headers={**FIELDS, "Cache-Control": "no-store"}))
    got = await get(client, proxy, "/ns", Range="bytes=10-19")
    assert (got.status, got.body) == (206, BODY[10:20])
    assert "stored" not in got.headers["Cache-Status"]
    got = await get(client, proxy, "/ns", Range="bytes=-3")
    assert (got.status, got.body) == (206, BODY[-3:])
    assert origin.hits("/ns") == 2
