"""Edge compression end to end: what clients saw (decompressed and compared)
and what reached the origin.

The rule: Accept-Encoding is normalised to one token (br, gzip or identity;
http/accept_encoding.py) for the Vary secondary key and for the request sent
upstream, so the origin is contacted once per object *and normalised coding*:
at most three times per object, however many spellings clients send, each
time with that token as its Accept-Encoding. A coded variant is compressed
once, on its fill, then served from the store.
"""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import brotli
import pytest
from aiohttp import web

from edgeproxy.policy.transform import Compression
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Got, Proxy, Reply, ScriptedOrigin, fetch, until
from tests.e2e.test_admin_api import AdminAPI, admin_listener

TEXT = b"".join(b"<p>line %05d of a compressible page</p>\n" % i for i in range(400))
ETAG = '"v1"'
PAGE = {"Cache-Control": "max-age=60", "ETag": ETAG, "Content-Type": "text/html"}


def decoded(got: Got) -> bytes:
    coding = got.headers.get("Content-Encoding")
    if coding == "gzip":
        return gzip.decompress(got.body)
    if coding == "br":
        return bytes(brotli.decompress(got.body))
    assert coding is None, coding
    return got.body


@pytest.fixture
async def edge(origin: ScriptedOrigin, make_proxy: MakeProxy) -> Proxy:
    assert origin.server is not None
    return await make_proxy(
        f"http://127.0.0.1:{origin.server.port}", compress=Compression(enabled=True)
    )


async def get(
    client: aiohttp.ClientSession, proxy: Proxy, path: str, ae: str | None, **headers: str
) -> Got:
    h = dict(headers)
    if ae is not None:
        h["Accept-Encoding"] = ae
    return await fetch(client, "GET", proxy.url + path, headers=h)


# (Accept-Encoding sent, the normalised coding: RFC 9110 section 12.5.3)
SPELLINGS = [
    ("gzip, deflate, br", "br"),
    ("gzip", "gzip"),
    (None, "identity"),
    ("br;q=1, gzip", "br"),
    ("x-gzip, deflate", "gzip"),
    ("", "identity"),
    ("deflate", "identity"),
    ("gzip;q=1, br;q=0.5", "gzip"),
    ("*", "br"),
    ("identity", "identity"),
]


async def test_origin_contacted_once_per_object_and_coding(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    for i, (ae, coding) in enumerate(SPELLINGS):
        got = await get(client, edge, "/p", ae)
        assert got.status == 200
        assert decoded(got) == TEXT, ae
        assert got.headers.get("Content-Encoding", "identity") == coding, ae
        # RFC 9110 section 12.5.5: the response depends on Accept-Encoding
        assert got.headers["Vary"] == "Accept-Encoding"
        # 8.8.3: a coded representation has its own (weak) entity tag
        assert got.headers["ETag"] == (ETAG if coding == "identity" else f'W/"v1-{coding}"')
        first = i < 3  # br, gzip, identity: one fill each; the rest are hits
        assert ("stored" in got.headers["Cache-Status"]) is first, ae
        assert ("hit" in got.headers["Cache-Status"]) is not first, ae
        if coding != "identity":
            assert len(got.body) < len(TEXT) // 3
    assert origin.hits("/p") == 3
    # Upstream saw only the normalised token, never the client's spelling.
    assert [r.headers["Accept-Encoding"] for r in origin.received] == ["br", "gzip", "identity"]


async def test_hit_has_content_length_of_the_coded_body(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    miss = await get(client, edge, "/p", "gzip")
    assert "Content-Length" not in miss.headers  # compressed while streaming: chunked
    hit = await get(client, edge, "/p", "gzip")
    assert hit.headers["Content-Length"] == str(len(hit.body))
    assert hit.body == miss.body  # compressed once, stored, replayed
    assert hit.headers["Cache-Status"] == "edgeproxy; hit; ttl=60"
    assert hit.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        # RFC 9111 section 5.2.2.6: MUST NOT transform
        ({**PAGE, "Cache-Control": "max-age=60, no-transform"}, "no-transform"),
        ({**PAGE, "Content-Type": "image/png"}, "type not in the list"),
    ],
)
async def test_left_alone(
    edge: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    headers: dict[str, str],
    why: str,
) -> None:
    origin.script("/p", Reply(body=TEXT, headers=headers))
    for ae in ("gzip", "br", None):
        got = await get(client, edge, "/p", ae)
        assert got.body == TEXT, why
        assert "Content-Encoding" not in got.headers, why
        assert got.headers["ETag"] == ETAG, why
        assert "Vary" not in got.headers, why  # the same for everyone: one variant
    assert origin.hits("/p") == 1, why


async def test_small_bodies_are_left_alone(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/s", Reply(body=b"<p>tiny</p>", headers=PAGE))  # under min_size
    got = await get(client, edge, "/s", "gzip")
    assert got.body == b"<p>tiny</p>" and "Content-Encoding" not in got.headers


async def test_request_no_transform_gets_identity(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 5.2.1.6: the client asks intermediaries not to transform.
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    got = await get(client, edge, "/p", "gzip", **{"Cache-Control": "no-transform"})
    assert got.body == TEXT and "Content-Encoding" not in got.headers
    assert origin.last().headers["Accept-Encoding"] == "identity"


async def test_already_encoded_by_the_origin(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The origin compressed it for our normalised "gzip": kept byte for byte,
    # never twice, and Vary is added even though the origin forgot it.
    packed = gzip.compress(TEXT)
    origin.script("/z", Reply(body=packed, headers={**PAGE, "Content-Encoding": "gzip"}))
    got = await get(client, edge, "/z", "gzip, br;q=0.5")
    assert got.body == packed
    assert got.headers["Content-Encoding"] == "gzip"
    assert got.headers["ETag"] == ETAG
    assert got.headers["Vary"] == "Accept-Encoding"
    assert origin.last().headers["Accept-Encoding"] == "gzip"
    hit = await get(client, edge, "/z", "gzip")
    assert hit.body == packed and "hit" in hit.headers["Cache-Status"]
    assert origin.hits("/z") == 1


async def test_head(edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession) -> None:
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    # A HEAD miss: the fields a GET would get (RFC 9110 section 9.3.2), no body.
    head = await fetch(client, "HEAD", edge.url + "/p", headers={"Accept-Encoding": "br"})
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Encoding"] == "br"
    assert head.headers["ETag"] == 'W/"v1-br"'
    assert "Content-Length" not in head.headers  # not the identity length
    full = await get(client, edge, "/p", "br")
    # From the stored br variant: its Content-Length, no body.
    head = await fetch(client, "HEAD", edge.url + "/p", headers={"Accept-Encoding": "br"})
    assert head.headers["Cache-Status"] == "edgeproxy; hit; ttl=60"
    assert head.headers["Content-Encoding"] == "br"
    assert head.headers["Content-Length"] == str(len(full.body))
    assert head.body == b""


async def test_304_revalidation_keeps_our_coding_and_tag(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    origin.script("/p", Reply(body=TEXT, headers={**PAGE, "Cache-Control": "max-age=5"}))
    first = await get(client, edge, "/p", "gzip")
    clock.advance(6)
    origin.script(
        "/p",
        Reply(status=304, headers={"Cache-Control": "max-age=5", "ETag": ETAG, "X-Version": "2"}),
    )
    got = await get(client, edge, "/p", "gzip")
    # RFC 9111 section 4.3.1: validated with the origin's own tag (weak:
    # 13.1.2 weak comparison matches its strong "v1").
    assert origin.last().headers["If-None-Match"] == 'W/"v1"'
    assert origin.last().headers["Accept-Encoding"] == "gzip"
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=5"
    assert got.headers["X-Version"] == "2"  # 4.3.4: fields from the 304
    assert got.headers["Content-Encoding"] == "gzip"
    assert got.headers["ETag"] == 'W/"v1-gzip"'
    assert got.body == first.body and decoded(got) == TEXT
    # The client's own validation with our tag: answered at the edge (13.1.2).
    again = await get(client, edge, "/p", "gzip", **{"If-None-Match": 'W/"v1-gzip"'})
    assert again.status == 304 and again.headers["ETag"] == 'W/"v1-gzip"'
    assert origin.hits("/p") == 2


async def test_client_validator_for_a_coded_variant_on_a_miss(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Nothing stored (another edge made the tag): upstream gets the origin's
    # tag, and the origin's 304 is relayed with ours, so the client's cache
    # can match it to what it holds (RFC 9111 section 4.3.4).
    origin.script("/p", Reply(status=304, headers={"ETag": ETAG, "Cache-Control": "max-age=60"}))
    got = await get(client, edge, "/p", "br", **{"If-None-Match": 'W/"v1-br"'})
    assert got.status == 304
    assert origin.last().headers["If-None-Match"] == 'W/"v1"'
    assert got.headers["ETag"] == 'W/"v1-br"'


async def test_range_of_a_coded_variant(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    # A Range miss that will be compressed: the range is ignored (RFC 9110
    # section 14.2 MAY), the whole coded body sent and stored.
    miss = await get(client, edge, "/p", "gzip", Range="bytes=0-9")
    assert miss.status == 200 and decoded(miss) == TEXT
    assert origin.last().headers.get("Range") is None
    # Stored: ranges of the coded representation come from the store.
    part = await get(client, edge, "/p", "gzip", Range="bytes=0-9")
    assert part.status == 206 and part.body == miss.body[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(miss.body)}"
    # If-Range with our weak tag never matches (13.1.5 strong comparison): whole.
    whole = await get(client, edge, "/p", "gzip", Range="bytes=0-9", **{"If-Range": 'W/"v1-gzip"'})
    assert whole.status == 200 and whole.body == miss.body
    assert origin.hits("/p") == 1


async def test_concurrent_misses_share_one_fill_per_coding(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=TEXT, headers={**PAGE, "Date": origin.date()})

    origin.script("/c", slow)
    leader = asyncio.create_task(get(client, edge, "/c", "gzip"))
    await until(lambda: origin.hits("/c") == 1, "the leader upstream")
    same = asyncio.create_task(get(client, edge, "/c", "x-gzip"))
    await until(lambda: sum(edge.app[EDGE].flights.waiting().values()) == 1, "a waiter")
    gate.set()
    got_leader, got_same = await leader, await same
    assert got_same.body == got_leader.body and decoded(got_same) == TEXT
    assert "collapsed" in got_same.headers["Cache-Status"]
    assert got_same.headers["Content-Encoding"] == "gzip"
    # Another coding is another variant (RFC 9111 section 4.1): its own fill.
    other = await get(client, edge, "/c", "br")
    assert other.headers["Content-Encoding"] == "br" and decoded(other) == TEXT
    assert origin.hits("/c") == 2


async def test_purge_removes_every_coding(
    edge: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
) -> None:
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    for ae in ("br", "gzip", None):
        await get(client, edge, "/p", ae)
    assert origin.hits("/p") == 3
    async with admin_listener(edge, clock) as url:
        admin = AdminAPI(url, client, edge.app[EDGE])
        assert await admin.purge({"url": edge.url + "/p"}) == {"purged": 3, "soft": False}
    for ae in ("br", "gzip", None):
        got = await get(client, edge, "/p", ae)
        assert (
            "fwd=uri-miss" in got.headers["Cache-Status"]
            or "fwd=vary-miss" in (got.headers["Cache-Status"])
        )
        assert decoded(got) == TEXT
    assert origin.hits("/p") == 6


async def test_compression_off_relays_as_is(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The default (Compression.enabled False): no transform, no Vary, but the
    # upstream Accept-Encoding is still the normalised token.
    origin.script("/p", Reply(body=TEXT, headers=PAGE))
    got = await get(client, proxy, "/p", "gzip, deflate")
    assert got.body == TEXT and "Content-Encoding" not in got.headers
    assert "Vary" not in got.headers
    assert origin.last().headers["Accept-Encoding"] == "gzip"
