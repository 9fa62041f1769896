"""Bodies stream both ways, never held whole in memory.

A 256 MiB body, generated chunk by chunk by one side and consumed chunk by
chunk by the other, crosses the proxy while this process's resident memory is
sampled (the origin, proxy and client all live in it): growth must stay far
below the body size. Checksums prove every byte arrived in order.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import RssWatch, ScriptedOrigin, fetch

SIZE = 256 << 20
CHUNK = 256 << 10
MAX_GROWTH = 64 << 20
SAMPLE_EVERY = 32  # chunks: every 8 MiB


def pattern(i: int) -> bytes:
    """Chunk i of the body: cheap to make, different per chunk."""
    return i.to_bytes(4, "big") * (CHUNK // 4)


def expected_crc() -> int:
    crc = 0
    for i in range(SIZE // CHUNK):
        crc = zlib.crc32(pattern(i), crc)
    return crc


@pytest.fixture(scope="module")
def body_crc() -> int:
    return expected_crc()


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


def generator_origin(origin: ScriptedOrigin, *, chunked: bool) -> None:
    async def generate(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600", "Date": origin.date()})
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = SIZE
        await resp.prepare(request)
        if request.method != "HEAD":
            for i in range(SIZE // CHUNK):
                await resp.write(pattern(i))
        await resp.write_eof()
        return resp

    origin.script("/big", generate)


async def download(
    client: aiohttp.ClientSession, url: str, watch: RssWatch
) -> tuple[int, int, str]:
    """Read the body chunk by chunk: (length, crc32, Cache-Status)."""
    n = crc = 0
    async with client.get(url) as r:
        assert r.status == 200
        async for chunk in r.content.iter_chunked(CHUNK):
            n += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if n // CHUNK % SAMPLE_EVERY == 0:
                watch.sample()
        return n, crc, r.headers["Cache-Status"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_download_larger_than_max_object_size_streams_flat(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    body_crc: int,
    chunked: bool,
) -> None:
    generator_origin(origin, chunked=chunked)
    proxy = await make_proxy(origin_url(origin), max_object_size=SIZE // 4)
    watch = RssWatch()
    n, crc, status = await download(client, proxy.url + "/big", watch)
    assert (n, crc) == (SIZE, body_crc)
    assert watch.samples >= SIZE // CHUNK // SAMPLE_EVERY // 2
    assert watch.growth < MAX_GROWTH, f"RSS grew {watch.growth >> 20} MiB"
    if not chunked:
        assert "stored" not in status  # known too big from Content-Length
    # Not stored: only-if-cached finds nothing (RFC 9111 section 5.2.1.7).
    got = await fetch(
        client, "HEAD", proxy.url + "/big", headers={"Cache-Control": "only-if-cached"}
    )
    assert got.status == 504
    assert origin.hits("/big") == 1


async def test_download_stored_while_streaming_stays_flat(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, body_crc: int
) -> None:
    # The tee to disk streams too: a body within max_object_size is written
    # to a temporary file as it passes, then committed.
    generator_origin(origin, chunked=True)
    proxy = await make_proxy(origin_url(origin), max_object_size=SIZE, size_limit=2 * SIZE)
    watch = RssWatch()
    n, crc, status = await download(client, proxy.url + "/big", watch)
    assert (n, crc) == (SIZE, body_crc)
    assert "; stored" in status
    assert watch.growth < MAX_GROWTH, f"RSS grew {watch.growth >> 20} MiB"
    got = await fetch(
        client, "HEAD", proxy.url + "/big", headers={"Cache-Control": "only-if-cached"}
    )
    assert got.status == 200
    assert got.headers["Content-Length"] == str(SIZE)
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    # Served back from disk, streamed as well.
    watch = RssWatch()
    n, crc, status = await download(client, proxy.url + "/big", watch)
    assert (n, crc, status[:14]) == (SIZE, body_crc, "edgeproxy; hit")
    assert watch.growth < MAX_GROWTH, f"RSS grew {watch.growth >> 20} MiB"
    assert origin.hits("/big") == 1


@pytest.mark.parametrize("with_length", [False, True], ids=["chunked", "content-length"])
async def test_upload_streams_flat(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    body_crc: int,
    with_length: bool,
) -> None:
    watch = RssWatch()
    seen = {"n": 0, "crc": 0}

    async def consume(request: web.Request) -> web.StreamResponse:
        async for chunk in request.content.iter_chunked(CHUNK):
            seen["n"] += len(chunk)
            seen["crc"] = zlib.crc32(chunk, seen["crc"])
            if seen["n"] // CHUNK % SAMPLE_EVERY == 0:
                watch.sample()
        return web.Response(text=f"got {seen['n']}")

    async def produce() -> AsyncIterator[bytes]:
        for i in range(SIZE // CHUNK):
            yield pattern(i)

    origin.script("/up", consume, read_body=False)
    proxy = await make_proxy(origin_url(origin))
    headers = {"Content-Length": str(SIZE)} if with_length else {}
    got = await fetch(client, "PUT", proxy.url + "/up", data=produce(), headers=headers)
    assert (got.status, got.body) == (200, f"got {SIZE}".encode())
    assert (seen["n"], seen["crc"]) == (SIZE, body_crc)
    assert watch.growth < MAX_GROWTH, f"RSS grew {watch.growth >> 20} MiB"
    if with_length:
        assert origin.last().headers["Content-Length"] == str(SIZE)
