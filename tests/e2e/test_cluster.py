"""Many edges, one cache: real redis-server and real `edgeproxy serve` processes on loopback.

Each test starts its own redis-server (so it can kill and restart it) and
two edges sharing one scripted origin in the test process. What is asserted
is what clients saw and what reached the origin. Every wait is a bounded
poll, never a timed assertion. Skipped (with the reason) only when no
redis-server binary can be found: scripts/test installs Debian's package.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from tests.conftest import FakeClock
from tests.e2e.harness import Reply, ScriptedOrigin, free_port, spawn_serve

REDIS = shutil.which("redis-server")

pytestmark = [
    pytest.mark.no_blockbuster,  # the test drives subprocesses and files by hand
    pytest.mark.skipif(
        REDIS is None,
        reason="redis-server not found: the cluster tests need it "
        "(scripts/test installs Debian's redis-server package)",
    ),
]

CONFIG = """\
listen: 127.0.0.1:{port}
admin: {{listen: "127.0.0.1:{admin}"}}
cache: {{dir: "{cache}"}}
origin: {{url: "{origin}"}}
cluster:
  redis_url: "redis://127.0.0.1:{redis}/0"
  edge_id: {name}
  heartbeat: 0.2
  edge_ttl: 2
  wait_timeout: 5
  stream_max_len: {max_len}
  shared_tier: {shared}
"""

HOST = "shop.example"
MAX_AGE = {"Cache-Control": "max-age=600"}


async def poll(check: Callable[[], Awaitable[bool]], what: str, tries: int = 200) -> None:
    """Until `check()` holds: up to `tries` x 50 ms, else fail naming `what`."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


class RedisServer:
    """A redis-server process of our own, killable and restartable on its port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.proc: asyncio.subprocess.Process | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert REDIS is not None
        self.proc = await asyncio.create_subprocess_exec(
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            # Small stream nodes: MAXLEN ~ trims at this grain (the gap test).
            "--stream-node-max-entries",
            "2",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:

            async def up() -> bool:
                try:
                    return bool(await client.ping())
                except (redis.ConnectionError, OSError):
                    return False

            await poll(up, "redis-server answering")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 10)


class Edge:
    """One `edgeproxy serve` process with a cluster config; logs go to a file."""

    def __init__(
        self, tmp: Path, name: str, origin: ScriptedOrigin, rs: RedisServer, **opts: Any
    ) -> None:
        assert origin.server is not None
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir()
        self.port, self.admin = free_port(), free_port()
        self.log = self.dir / "stderr.log"
        self.path = self.dir / "edge.yaml"
        self.path.write_text(
            CONFIG.format(
                port=self.port,
                admin=self.admin,
                cache=self.dir / "cache",
                origin=f"http://127.0.0.1:{origin.server.port}",
                redis=rs.port,
                name=name,
                max_len=opts.get("max_len", 1000),
                shared="true" if opts.get("shared") else "false",
            )
        )
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    async def start(self) -> None:
        with open(self.log, "ab") as err:  # noqa: ASYNC230 (a test's own log file)
            self.proc = await spawn_serve(self.path, "--no-watch", stderr=err)
        async with aiohttp.ClientSession() as s:

            async def up() -> bool:
                try:
                    async with s.get(self.admin_url + "/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await poll(up, f"edge {self.name} serving", tries=300)

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), 20)
        assert self.proc.returncode == 0, self.stderr()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    async def get(self, s: aiohttp.ClientSession, path: str) -> tuple[int, bytes, str]:
        async with s.get(self.url + path, headers={"Host": HOST}) as r:
            return r.status, await r.read(), r.headers.get("Cache-Status", "")

    async def admin_call(
        self, s: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        async with s.request(method, self.admin_url + path, json=body) as r:
            return r.status, await r.json()

    async def purge(self, s: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.admin_call(s, "POST", "/purge", body)
        assert status == 200, answer
        result: dict[str, Any] = answer
        return result

    async def urls(self, s: aiohttp.ClientSession) -> list[str]:
        status, answer = await self.admin_call(s, "GET", "/entries")
        assert status == 200, answer
        return [e["url"] for e in answer["entries"]]

    async def health(self, s: aiohttp.ClientSession) -> dict[str, Any]:
        status, answer = await self.admin_call(s, "GET", "/healthz")
        assert status == 200, answer
        result: dict[str, Any] = answer
        return result


def key(path: str) -> str:
    return f"http://{HOST}{path}"


@pytest.fixture
async def origin(clock: FakeClock) -> AsyncIterator[ScriptedOrigin]:
    o = ScriptedOrigin(clock)
    await o.start()
    yield o
    await o.close()


@pytest.fixture
async def rs(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    await server.kill()


@pytest.fixture
async def edges(
    tmp_path: Path, origin: ScriptedOrigin, rs: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Edge, Edge]]:
    opts: dict[str, Any] = getattr(request, "param", {})
    a = Edge(tmp_path, "edge-a", origin, rs, **opts)
    b = Edge(tmp_path, "edge-b", origin, rs, **opts)
    await a.start()
    await b.start()
    yield a, b
    for e in (a, b):
        if e.proc is not None and e.proc.returncode is None:
            await e.stop()
        # Whatever happened to Redis, nothing went unhandled.
        assert "Traceback" not in e.stderr(), e.stderr()


def script(origin: ScriptedOrigin, *paths: str, tags: str | None = None) -> None:
    for p in paths:
        headers = dict(MAX_AGE)
        if tags is not None:
            headers["Surrogate-Key"] = tags
        origin.script(p, Reply(body=b"body " + p.encode(), headers=headers))


async def fill(s: aiohttp.ClientSession, edge: Edge, *paths: str) -> None:
    """Each path stored on `edge`: the second GET is a hit."""
    for p in paths:
        assert (await edge.get(s, p))[0] == 200
        _, _, cs = await edge.get(s, p)
        assert "hit" in cs, (p, cs)


async def is_hit(s: aiohttp.ClientSession, edge: Edge, path: str) -> bool:
    status, body, cs = await edge.get(s, path)
    assert status == 200 and body == b"body " + path.encode()
    return "hit" in cs


async def test_purges_on_a_reach_b(edges: tuple[Edge, Edge], origin: ScriptedOrigin) -> None:
    a, b = edges
    script(origin, "/u", "/dir/1", "/dir/2", "/keep")
    async with aiohttp.ClientSession() as s:
        for e in (a, b):
            await fill(s, e, "/u", "/dir/1", "/dir/2", "/keep")
        before = origin.hits()
        # URL purge with "wait": the answer comes once both edges applied it.
        answer = await a.purge(s, {"url": key("/u"), "wait": True})
        assert answer["purged"] == 1 and answer["cluster"] == "published"
        seq = answer["sequence"]
        assert isinstance(seq, int) and seq >= 1
        assert answer["wait"]["complete"] is True
        assert sorted(answer["wait"]["applied"]) == ["edge-a", "edge-b"]
        assert not await is_hit(s, b, "/u")
        # Prefix and tag purges, issued on B this time, reach A. (The proxy does
        # not store Surrogate-Key tags yet, see test_admin_purge's xfails: the
        # tag purge travels and is applied, matching nothing.)
        p2 = await b.purge(s, {"prefix": key("/dir/"), "wait": True})
        p3 = await b.purge(s, {"tags": ["sale", "spring"], "wait": True})
        assert p3["sequence"] == p2["sequence"] + 1 == seq + 2
        assert p2["wait"]["complete"] and p3["wait"]["complete"]
        for path in ("/dir/1", "/dir/2"):
            assert not await is_hit(s, a, path), path
        assert await is_hit(s, a, "/keep") and await is_hit(s, b, "/keep")
        # /u on B, and the two on A, went to the origin again; nothing else.
        assert origin.hits() == before + 3
        # GET /cluster on either edge: both, with the last purge applied.
        status, state = await b.admin_call(s, "GET", "/cluster")
        assert status == 200, state
        assert state["head"] == seq + 2
        listed = {e["id"]: e for e in state["edges"]}
        assert set(listed) == {"edge-a", "edge-b"}
        assert all(e["last_applied"] == seq + 2 and e["live"] for e in listed.values())
        # A soft purge travels too: B keeps the entry but revalidates it.
        await a.purge(s, {"url": key("/keep"), "soft": True, "wait": True})
        _, _, cs = await b.get(s, "/keep")
        assert "hit" not in cs, cs


async def test_propagation_latency_is_measured(
    edges: tuple[Edge, Edge], origin: ScriptedOrigin
) -> None:
    """A purge on A until B no longer lists the entry (printed, not asserted: no timed
    assertions). Healthy loopback setups show a few milliseconds."""
    a, b = edges
    paths = [f"/lat/{i}" for i in range(10)]
    script(origin, *paths)
    samples: list[float] = []
    async with aiohttp.ClientSession() as s:
        await fill(s, b, *paths)
        for p in paths:
            started = time.perf_counter()
            await a.purge(s, {"url": key(p)})

            async def gone(p: str = p) -> bool:
                return key(p) not in await b.urls(s)

            for _ in range(2000):  # a tight poll (1 ms): the measure, not a wait
                if await gone():
                    break
                await asyncio.sleep(0.001)
            else:
                raise AssertionError(f"{p} never purged on B")
            samples.append(time.perf_counter() - started)
    samples.sort()
    print(
        f"\npurge propagation A->B over {len(samples)} purges: "
        f"median {samples[len(samples) // 2] * 1000:.1f} ms, max {samples[-1] * 1000:.1f} ms"
    )
    assert len(samples) == len(paths)


async def test_edge_back_from_downtime_replays_missed_purges(
    edges: tuple[Edge, Edge], origin: ScriptedOrigin
) -> None:
    a, b = edges
    script(origin, "/gone", "/old/1", "/kept")
    async with aiohttp.ClientSession() as s:
        await fill(s, b, "/gone", "/old/1", "/kept")
        await b.stop()
        await a.purge(s, {"url": key("/gone")})
        await a.purge(s, {"tag": "spring"})
        await a.purge(s, {"prefix": key("/old/"), "soft": True})
        await b.start()  # replays before its listeners open
        before = origin.hits()
        assert not await is_hit(s, b, "/gone")
        assert not await is_hit(s, b, "/old/1")
        assert await is_hit(s, b, "/kept")
        assert origin.hits() == before + 2
    log = b.stderr()
    assert "cluster: applied purge 2 PurgeTags(tags=('spring',))" in log, log
    assert "cluster: applied purge 3 PurgePrefix(prefix='http://shop.example/old/') soft" in log


@pytest.mark.parametrize("edges", [{"max_len": 2}], indirect=True)
async def test_edge_gone_longer_than_the_stream_keeps_empties_its_cache(
    edges: tuple[Edge, Edge], origin: ScriptedOrigin
) -> None:
    a, b = edges
    script(origin, "/kept-elsewhere", "/other")
    async with aiohttp.ClientSession() as s:
        await fill(s, b, "/kept-elsewhere")
        await b.stop()
        for i in range(12):  # far more than the stream keeps (2, trimmed in nodes of 2)
            await a.purge(s, {"url": key(f"/nothing/{i}")})
        await b.start()
        # Not one of the purges named it, but B can't know what it missed.
        assert not await is_hit(s, b, "/kept-elsewhere")
    log = b.stderr()
    assert "cluster: emptying the cache: the stream no longer holds purges 1.." in log, log


@pytest.mark.parametrize("edges", [{"shared": True}], indirect=True)
async def test_shared_tier_serves_b_after_a_fetched(
    edges: tuple[Edge, Edge], origin: ScriptedOrigin, rs: RedisServer
) -> None:
    a, b = edges
    script(origin, "/shared")
    client = redis.Redis.from_url(rs.url)
    try:
        async with aiohttp.ClientSession() as s:
            assert not await is_hit(s, a, "/shared")

            async def in_redis() -> bool:
                return int(await client.zcard("edgeproxy:sh:i")) == 1

            await poll(in_redis, "A's fill written to the shared tier")
            status, body, _ = await b.get(s, "/shared")
            assert (status, body) == (200, b"body /shared")
            assert origin.hits("/shared") == 1  # one origin request in all
            assert await is_hit(s, b, "/shared")  # now in B's own store
            # A purge removes it from the shared tier as well as from both edges.
            answer = await b.purge(s, {"url": key("/shared"), "wait": True})
            assert answer["wait"]["complete"]
            assert int(await client.zcard("edgeproxy:sh:i")) == 0
            assert not await is_hit(s, a, "/shared")
            assert origin.hits("/shared") == 2
    finally:
        await client.aclose()


@pytest.mark.parametrize("edges", [{"shared": True}], indirect=True)
async def test_redis_outage_keeps_serving_and_catches_up(
    edges: tuple[Edge, Edge], origin: ScriptedOrigin, rs: RedisServer
) -> None:
    a, b = edges
    script(origin, "/x", "/y", "/new")
    async with aiohttp.ClientSession() as s:
        for e in (a, b):
            await fill(s, e, "/x", "/y")
        await rs.kill()

        async def degraded(e: Edge) -> bool:
            return (await e.health(s))["status"] == "degraded"

        for e in (a, b):
            await poll(lambda e=e: degraded(e), f"{e.name} reports degraded")
            assert await is_hit(s, e, "/x")  # serving goes on
        # A miss while Redis is down: the shared lookup fails open.
        status, body, _ = await b.get(s, "/new")
        assert (status, body) == (200, b"body /new")
        # A purge on A applies on A at once and is queued for the others.
        answer = await a.purge(s, {"url": key("/x")})
        assert answer == {"purged": 1, "soft": False, "sequence": None, "cluster": "queued"}
        assert not await is_hit(s, a, "/x")
        assert (await a.health(s))["cluster"]["queued"] == 1
        assert await is_hit(s, b, "/x")  # B can't know yet
        await rs.start()  # same port, empty: a new epoch

        async def caught_up() -> bool:
            return key("/x") not in await b.urls(s)

        await poll(caught_up, "the queued purge applied on B", tries=400)
        for e in (a, b):
            await poll(lambda e=e: _ok(s, e), f"{e.name} healthy again")
        assert not await is_hit(s, b, "/x")
        assert await is_hit(s, b, "/y")  # live through the outage: nothing emptied
    assert "Redis lost its data while this edge was connected" in b.stderr()


async def _ok(s: aiohttp.ClientSession, e: Edge) -> bool:
    return (await e.health(s))["status"] == "ok"
