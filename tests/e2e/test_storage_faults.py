"""Storage across restarts and faults: write-then-commit, aborted fills, size
limits, damaged entries (design.md "Write, then commit"; RFC 9111 section 3.3:
an incomplete response is never stored as complete).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.state import EDGE
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, RawOrigin, Reply, ScriptedOrigin, fetch

MAX_AGE = {"Cache-Control": "max-age=600"}
BIG = bytes(range(256)) * 1024  # 256 KiB: a body file, not inline in SQLite


@pytest.fixture
async def raw_origin() -> AsyncIterator[RawOrigin]:
    o = RawOrigin()
    await o.start()
    yield o
    await o.close()


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


async def test_entries_survive_a_restart(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    cache_dir = str(tmp_path / "restart")
    origin.script("/big", Reply(body=BIG, headers={**MAX_AGE, "ETag": '"b"'}))
    origin.script("/v", Reply(body=b"variant", headers={**MAX_AGE, "Vary": "X-L"}))
    # The key holds the Host: keep it the same across the two listeners' ports.
    host = {"Host": "www.example.test"}
    first = await make_proxy(origin_url(origin), cache_dir=cache_dir)
    await fetch(client, "GET", first.url + "/big", headers=host)
    for lang in ("en", "fr"):
        await fetch(client, "GET", first.url + "/v", headers={**host, "X-L": lang})
    await first.close()

    clock.advance(30)
    second = await make_proxy(origin_url(origin), cache_dir=cache_dir)
    got = await fetch(client, "GET", second.url + "/big", headers=host)
    assert (got.status, got.body) == (200, BIG)
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=570"
    assert got.headers["Age"] == "30"
    assert got.headers["ETag"] == '"b"'
    for lang in ("en", "fr"):
        got = await fetch(client, "GET", second.url + "/v", headers={**host, "X-L": lang})
        assert got.headers["Cache-Status"].startswith("edgeproxy; hit"), lang
    assert origin.hits() == 3


async def test_client_disconnecting_half_way_leaves_no_entry(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Far more than socket buffers hold (the proxy is mid-body when the client
    # leaves), within the default max_object_size (64 MiB) so it is being stored.
    size = 48 << 20
    chunk = b"d" * 65536
    finished = asyncio.Event()
    sent = {"bytes": 0}

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**MAX_AGE, "Date": origin.date()})
        resp.content_length = size
        await resp.prepare(request)
        try:
            while sent["bytes"] < size:
                await resp.write(chunk)
                sent["bytes"] += len(chunk)
            await resp.write_eof()
        finally:
            finished.set()
        return resp

    origin.script("/big", big)
    async with client.get(proxy.url + "/big") as r:
        assert r.status == 200
        assert "; stored" in r.headers["Cache-Status"]
        await r.content.readexactly(1 << 20)
        r.close()  # hang up mid-body
    # The proxy gives up on the origin too: its handler ends early.
    await asyncio.wait_for(finished.wait(), 10)
    assert sent["bytes"] < size

    origin.script("/big", Reply(body=b"complete", headers=MAX_AGE))
    got = await fetch(client, "GET", proxy.url + "/big")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss")
    assert got.body == b"complete"
    assert origin.hits("/big") == 2


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nCache-Control: max-age=600\r\n\r\n"
            + b"x" * 40000,
            id="content-length-longer-than-body",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=600\r\n\r\n"
            + b"4000\r\n"
            + b"y" * 0x4000
            + b"\r\n"
            + b"4000\r\n"
            + b"z" * 100,
            id="chunked-cut-mid-chunk",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=600\r\n\r\n"
            + b"10\r\n"
            + b"y" * 16
            + b"\r\n",
            id="chunked-without-last-chunk",
        ),
    ],
)
async def test_origin_breaking_off_aborts_client_and_stores_nothing(
    make_proxy: MakeProxy, raw_origin: RawOrigin, client: aiohttp.ClientSession, raw: bytes
) -> None:
    raw_origin.script("/cut", raw)
    proxy = await make_proxy(raw_origin.url)
    for attempt in (1, 2):
        async with client.get(proxy.url + "/cut") as r:
            assert r.status == 200
            # The client sees an error, never a clean short 200.
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        # Nothing was stored: the second request goes to the origin again.
        assert raw_origin.hits("/cut") == attempt


async def test_origin_stalling_mid_body_past_read_timeout(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**MAX_AGE, "Date": origin.date()})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b"s" * 100)
        await release.wait()
        return resp

    origin.script("/stall", stall)
    proxy = await make_proxy(origin_url(origin), read_timeout=0.3)
    try:
        async with client.get(proxy.url + "/stall") as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
    finally:
        release.set()
    origin.script("/stall", Reply(body=b"whole", headers=MAX_AGE))
    got = await fetch(client, "GET", proxy.url + "/stall")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss")
    assert origin.hits("/stall") == 2


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_over_max_object_size_passed_through_not_stored(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, framing: str
) -> None:
    body = bytes(range(256)) * 64  # 16 KiB
    limit = 10_000

    async def send(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**MAX_AGE, "Date": origin.date()})
        if framing == "chunked":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 1000):
            await resp.write(body[i : i + 1000])
        await resp.write_eof()
        return resp

    origin.script("/big", send)
    proxy = await make_proxy(origin_url(origin), max_object_size=limit)
    for _ in range(2):
        got = await fetch(client, "GET", proxy.url + "/big")
        assert (got.status, got.body) == (200, body)
        assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss")
        if framing == "content-length":
            # Known too big before the body: not announced as stored.
            assert "stored" not in got.headers["Cache-Status"]
    assert origin.hits("/big") == 2


async def test_at_max_object_size_is_stored(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    body = b"m" * 10_000
    origin.script("/fits", Reply(body=body, headers=MAX_AGE))
    proxy = await make_proxy(origin_url(origin), max_object_size=len(body))
    await fetch(client, "GET", proxy.url + "/fits")
    got = await fetch(client, "GET", proxy.url + "/fits")
    assert got.body == body
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")


def _files(cache_dir: Path) -> list[Path]:
    """Files holding stored bodies: everything but SQLite's own."""
    return [p for p in cache_dir.rglob("*") if p.is_file() and not p.name.startswith("cache.db")]


def _delete(cache_dir: Path) -> int:
    files = _files(cache_dir)
    for p in files:
        p.unlink()
    return len(files)


def _truncate(cache_dir: Path) -> int:
    files = _files(cache_dir)
    for p in files:
        os.truncate(p, p.stat().st_size // 2)
    return len(files)


def _garble_metadata(cache_dir: Path) -> int:
    """Overwrite every JSON document in the cache's SQLite tables (entry metadata,
    whatever the store's layout) with text that no longer parses."""
    con = sqlite3.connect(cache_dir / "cache.db")
    changed = 0
    try:
        with con:
            tables = [
                r[0]
                for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_") and r[0] != "Settings"
            ]
            for table in tables:
                for column in [r[1] for r in con.execute(f"PRAGMA table_info({table})")]:
                    changed += con.execute(
                        f"UPDATE {table} SET {column} = '{{\"garbled' "
                        f"WHERE typeof({column}) IN ('text', 'blob') "
                        f"AND CAST(substr({column}, 1, 1) AS TEXT) IN ('{{', '[')"
                    ).rowcount
    finally:
        con.close()
    return changed


def _garble_inline_bodies(cache_dir: Path) -> int:
    """Overwrite every value diskcache keeps inline (small bodies) with a shorter one."""
    con = sqlite3.connect(cache_dir / "cache.db")
    try:
        with con:
            return con.execute(
                "UPDATE Cache SET value = ? WHERE typeof(value) = 'blob'", (b"\xff\x00",)
            ).rowcount
    finally:
        con.close()


@pytest.mark.parametrize(
    ("damage", "body"),
    [
        pytest.param(_delete, BIG, id="body-file-deleted"),
        pytest.param(_truncate, BIG, id="body-file-truncated"),
        pytest.param(_garble_metadata, BIG, id="metadata-garbled"),
        pytest.param(_garble_metadata, b"small inline body", id="metadata-garbled-small-body"),
        pytest.param(_garble_inline_bodies, b"small inline body", id="inline-body-garbled"),
    ],
)
async def test_damaged_entry_is_a_miss_never_a_500(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    damage: Callable[[Path], int],
    body: bytes,
) -> None:
    origin.script("/d", Reply(body=body, headers={**MAX_AGE, "Vary": "X-L"}))
    await fetch(client, "GET", proxy.url + "/d", headers={"X-L": "en"})
    assert (
        (await fetch(client, "GET", proxy.url + "/d", headers={"X-L": "en"}))
        .headers["Cache-Status"]
        .startswith("edgeproxy; hit")
    )
    assert await asyncio.to_thread(damage, tmp_path / "cache") > 0
    # The copy this worker holds in its hot tier was read whole before the
    # damage; a worker without it is the one that meets the damaged entry.
    store = proxy.app[EDGE].store
    if isinstance(store, TieredStore):
        store.drop_memory()

    got = await fetch(client, "GET", proxy.url + "/d", headers={"X-L": "en"})
    assert (got.status, got.body) == (200, body)
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss")
    # Stored again, whole, and served from the cache after that.
    got = await fetch(client, "GET", proxy.url + "/d", headers={"X-L": "en"})
    assert (got.status, got.body) == (200, body)
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert origin.hits("/d") == 2
