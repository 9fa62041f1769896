"""A short, bounded soak (issue #8): a few thousand mixed requests against a
real `edgeproxy serve` process, with purges through the admin API.

Requests draw random methods (GET, HEAD, POST, DELETE, OPTIONS, an
extension method), request Cache-Control, Vary-selecting fields, ranges
and conditionals; the origin's answer is chosen by the URL (max-age, Vary,
ETag, surrogate tags, body size, and on a few URLs a failure: a 503 or a
connection dropped mid-head), so what a URL may legitimately answer is
known. Asserted:

- no 5xx the proxy caused: a 502/503/504 only on URLs whose origin was
  told to fail, or a 504 for `only-if-cached` (RFC 9111 section 5.2.1.7);
- every 200/206 body is the origin's, whole (or the asked range of it:
  RFC 9110 section 14);
- the proxy process's open file descriptors return to their baseline
  within a small constant after the run (/proc/PID/fd), and its RSS stays
  flat between two phases after a warm-up.

The generator is seeded (SOAK_SEED to replay one); the seed is printed.
Bounded: a fixed request count, each request with a timeout, every wait a
bounded poll.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.harness import ScriptedOrigin
from tests.e2e.test_disk_faults import EdgeProc

pytestmark = pytest.mark.no_blockbuster  # drives a subprocess

PATHS = 150  # distinct resources; with queries and Vary a few hundred entries
WARMUP, PHASE_A, PHASE_B = 500, 1000, 1500
CONCURRENCY = 12
FD_SLACK = 12  # pooled origin connections and the like may differ by a few
RSS_SLACK = 12 << 20  # phase B may not grow the proxy's RSS by more than this


def resource_of(n: int) -> dict[str, object]:
    """What the origin answers for /r/<n>: fixed per URL, so answers are known."""
    rng = random.Random(n * 7919)
    return {
        "max_age": rng.choice([0, 1, 30, 3600, None]),
        "vary": rng.random() < 0.3,
        "etag": rng.random() < 0.6,
        "tags": f"t{n % 5} all",
        # Past 256 KiB a hit is served from the disk file, not the hot tier.
        "size": rng.choice([0, 10, 1000, 20_000, 70_000, 400_000]),
        "fail": rng.choice(["503", "drop"]) if rng.random() < 0.05 else None,
        "private": rng.random() < 0.05,
    }


def body_of(n: int, lang: str) -> bytes:
    spec = resource_of(n)
    unit = f"{n}:{lang if spec['vary'] else '-'}|".encode()
    size = int(str(spec["size"]))
    return (unit * (size // len(unit) + 1))[:size]


async def origin_handler(request: web.Request) -> web.StreamResponse:
    n = int(request.path.rsplit("/", 1)[1])
    spec = resource_of(n)
    if request.method not in ("GET", "HEAD"):
        await request.read()
        return web.Response(status=200, text=f"{request.method} done\n")
    if spec["fail"] == "503":
        return web.Response(status=503, text="told to fail\n")
    if spec["fail"] == "drop":
        assert request.transport is not None
        request.transport.abort()  # the proxy sees the connection drop: 502
        return web.Response(status=500)
    lang = request.headers.get("X-Lang", "en") if spec["vary"] else "-"
    headers = {"Surrogate-Key": str(spec["tags"])}
    if spec["max_age"] is not None:
        cc = f"max-age={spec['max_age']}"
        headers["Cache-Control"] = ("private, " if spec["private"] else "") + cc
    if spec["vary"]:
        headers["Vary"] = "X-Lang"
    etag = f'"{n}-{lang}"'
    if spec["etag"]:
        headers["ETag"] = etag
        if request.headers.get("If-None-Match") in (etag, "*"):
            return web.Response(status=304, headers=headers)
    return web.Response(body=body_of(n, lang), headers=headers)


@pytest.fixture
async def edge(tmp_path: Path, origin: ScriptedOrigin) -> AsyncIterator[EdgeProc]:
    for n in range(PATHS):
        origin.script(f"/r/{n}", origin_handler)
    e = EdgeProc(tmp_path, origin)
    yield e
    await e.stop()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Soak:
    def __init__(self, edge: EdgeProc, rng: random.Random) -> None:
        self.edge = edge
        self.rng = rng
        self.seen: Counter[str] = Counter()
        self.problems: list[str] = []

    async def run(self, count: int) -> None:
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
        ) as s:
            plans = [self.plan() for _ in range(count)]  # drawn up front: one seed, one run
            queue = iter(plans)

            async def worker() -> None:
                for plan in queue:
                    await self.one(s, *plan)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    def plan(self) -> tuple[str, int, dict[str, str], dict[str, object] | None]:
        rng = self.rng
        n = rng.randrange(PATHS)
        if rng.random() < 0.02:
            purge: dict[str, object] = rng.choice(
                [
                    {"url": f"{self.edge.url}/r/{n}"},
                    {"prefix": f"{self.edge.url}/r/{n}"},
                    {"tag": f"t{n % 5}"},
                    {"tag": f"t{n % 5}", "soft": True},
                ]
            )
            return "PURGE", n, {}, purge
        method = rng.choices(
            ["GET", "HEAD", "POST", "DELETE", "OPTIONS", "REPORT"], [70, 12, 6, 3, 3, 6]
        )[0]
        headers: dict[str, str] = {"X-Lang": rng.choice(["en", "fr", "de"])}
        if rng.random() < 0.15:
            headers["Cache-Control"] = rng.choice(
                ["no-cache", "max-age=0", "no-store", "only-if-cached", "max-stale=5"]
            )
        if rng.random() < 0.15:
            headers["Range"] = rng.choice(["bytes=0-9", "bytes=-5", "bytes=3-", "bytes=x-y"])
        if rng.random() < 0.1:
            headers["If-None-Match"] = rng.choice([f'"{n}-en"', f'"{n}-fr"', "*", '"nope"'])
        if rng.random() < 0.05:
            headers["If-Modified-Since"] = "Thu, 01 Jan 2026 00:00:00 GMT"
        return method, n, headers, None

    async def one(
        self,
        s: aiohttp.ClientSession,
        method: str,
        n: int,
        headers: dict[str, str],
        purge: dict[str, object] | None,
    ) -> None:
        if purge is not None:
            async with s.post(self.edge.admin_url + "/purge", json=purge) as r:
                self.seen[f"purge {r.status}"] += 1
                if r.status != 200:
                    self.problems.append(f"purge {purge}: {r.status} {await r.text()}")
            return
        url = f"{self.edge.url}/r/{n}"
        data = b"payload" if method in ("POST", "REPORT") else None
        spec = resource_of(n)
        told_to_fail = spec["fail"] is not None and method in ("GET", "HEAD")
        try:
            async with s.request(method, url, headers=headers, data=data) as r:
                status = r.status
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            # A connection cut mid-response: the proxy's doing unless the origin's was.
            self.seen["broken"] += 1
            if not told_to_fail:
                self.problems.append(f"{method} /r/{n} {headers}: {e!r}")
            return
        self.seen[str(status)] += 1
        what = f"{method} /r/{n} {headers} -> {status}"
        if status >= 500:
            if told_to_fail and status in (502, 503, 504):
                return
            if status == 504 and headers.get("Cache-Control") == "only-if-cached":
                return
            self.problems.append(f"{what}: {body[:200]!r}")
            return
        if method == "GET" and status in (200, 206) and not told_to_fail:
            whole = body_of(n, headers["X-Lang"])
            if status == 200 and body != whole:
                self.problems.append(f"{what}: body of {len(body)} bytes, not {len(whole)}")
            if status == 206 and body not in whole:
                self.problems.append(f"{what}: 206 body not a part of the resource")


async def settled_fds(pid: int, limit: int | None = None) -> int:
    """The proxy's fd count once it is at most `limit`, or (no limit) once two
    reads agree; a bounded poll (~5 s), then the last count seen."""
    count = fd_count(pid)
    for _ in range(100):  # closed client connections go within a loop turn or two
        await asyncio.sleep(0.05)
        last, count = count, fd_count(pid)
        if (count <= limit) if limit is not None else (count == last):
            break
    return count


async def test_soak_mixed_requests_and_purges(edge: EdgeProc, origin: ScriptedOrigin) -> None:
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"soak seed {seed} (SOAK_SEED={seed} to replay)")
    soak = Soak(edge, random.Random(seed))
    start = time.monotonic()
    await edge.start()
    await soak.run(WARMUP)
    pid = edge.pid
    base_fds = await settled_fds(pid)  # the client's connections are closed by now
    await soak.run(PHASE_A)
    rss_a = rss(pid)
    await soak.run(PHASE_B)
    rss_b = rss(pid)
    fds = await settled_fds(pid, base_fds + FD_SLACK)
    elapsed = time.monotonic() - start
    print(f"soak: {sum(soak.seen.values())} requests in {elapsed:.1f}s: {dict(soak.seen)}")
    print(f"soak: fds {base_fds} -> {fds}; rss {rss_a >> 20} -> {rss_b >> 20} MiB")

    assert not soak.problems, f"seed {seed}:\n" + "\n".join(soak.problems[:20])
    assert sum(soak.seen.values()) == WARMUP + PHASE_A + PHASE_B
    assert fds <= base_fds + FD_SLACK, f"seed {seed}: fds {base_fds} -> {fds}"
    assert rss_b - rss_a <= RSS_SLACK, f"seed {seed}: rss {rss_a} -> {rss_b}"
    assert edge.proc is not None and edge.proc.returncode is None  # still up
    assert "Traceback" not in edge.log, edge.log[-5000:]
