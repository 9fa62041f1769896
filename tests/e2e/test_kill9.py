"""`kill -9` during a busy write phase, then a restart on the same cache
directory (issue #8; design.md "Write, then commit"; RFC 9111 section 3.3:
an incomplete response is never stored as complete).

A real `edgeproxy serve` fills many URLs at once, with bodies of every size
class the store has (empty, inline in SQLite, a file, spilled to a temp file
while streaming); it is SIGKILLed while fills are in flight. After the
restart every URL is asked again: whatever comes back (a hit or a new fill)
is complete and byte-exact (the origin's body per URL is deterministic), and
every entry acknowledged before the kill (a later request was a hit) is
still a hit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.harness import ScriptedOrigin
from tests.e2e.test_disk_faults import EdgeProc

pytestmark = pytest.mark.no_blockbuster  # drives a subprocess

# Empty, inline (< 32 KiB), a body file, spilled past 256 KiB while streaming.
SIZES = (0, 700, 20_000, 40_000, 300_000, 1_200_000)
CHUNK = 16_384


def body_of(n: int) -> bytes:
    size = SIZES[n % len(SIZES)]
    rng = random.Random(n)  # deterministic per URL
    return rng.randbytes(size)


@pytest.fixture
async def edge(tmp_path: Path, origin: ScriptedOrigin) -> AsyncIterator[EdgeProc]:
    async def serve(request: web.Request) -> web.StreamResponse:
        body = body_of(int(request.match_info.get("n") or request.path.rsplit("/", 1)[1]))
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=3600", "Date": origin.date()})
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), CHUNK):  # streamed: fills overlap each other
            await resp.write(body[i : i + CHUNK])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    for n in range(URLS):
        origin.script(f"/obj/{n}", serve)
    e = EdgeProc(tmp_path, origin)
    yield e
    await e.stop()


URLS = 240
SETTLED = 60  # filled and acknowledged before the busy phase


async def fetch(s: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with s.get(url) as r:
        return r.status, r.headers.get("Cache-Status", ""), await r.read()


async def test_kill_9_mid_fill_leaves_only_complete_entries(
    edge: EdgeProc, origin: ScriptedOrigin
) -> None:
    await edge.start()
    acked: set[int] = set()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        gate = asyncio.Semaphore(16)

        async def fill_and_ack(n: int) -> None:
            async with gate:
                status, _, body = await fetch(s, f"{edge.url}/obj/{n}")
                assert (status, body) == (200, body_of(n))
                status, cs, body = await fetch(s, f"{edge.url}/obj/{n}")
                assert (status, body) == (200, body_of(n))
                if "hit" in cs:
                    acked.add(n)

        await asyncio.gather(*(fill_and_ack(n) for n in range(SETTLED)))
        assert len(acked) == SETTLED  # a quiet fill is always stored

        # The busy phase: everything else at once; SIGKILL once a few landed.
        done = 0
        enough = asyncio.Event()

        async def fill(n: int) -> None:
            nonlocal done
            try:
                await fetch(s, f"{edge.url}/obj/{n}")
            except (TimeoutError, aiohttp.ClientError):
                return  # the proxy died under it
            done += 1
            if done >= 20:
                enough.set()

        busy = [asyncio.ensure_future(fill(n)) for n in range(SETTLED, URLS)]
        await asyncio.wait_for(enough.wait(), 30)
        in_flight = sum(1 for t in busy if not t.done())
        await edge.kill()
        await asyncio.gather(*busy, return_exceptions=True)
        assert in_flight > 0  # the kill did land in the middle of fills

    await edge.start()  # the same cache directory, port and keys
    async with aiohttp.ClientSession(timeout=timeout) as s:
        hits = 0
        for n in range(URLS):
            status, cs, body = await fetch(s, f"{edge.url}/obj/{n}")
            # Never a partial body: a hit is whole and exact, as is a refill.
            assert status == 200, (n, cs)
            assert body == body_of(n), (n, cs, len(body), len(body_of(n)))
            if n in acked:
                assert "hit" in cs, (n, cs)
            hits += "hit" in cs
        assert hits >= SETTLED
    assert "Traceback" not in edge.log, edge.log
