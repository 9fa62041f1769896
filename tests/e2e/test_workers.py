"""The process model of a real `edgeproxy serve`: workers, restarts, graceful stop.

The proxy runs as a subprocess (tests/e2e/test_reload.py's Edge); the origin
is scripted in the test process. Which worker answered an admin call is in
its `Edgeproxy-Worker` header (the worker's pid). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock
from tests.e2e.harness import Reply, ScriptedOrigin
from tests.e2e.test_reload import Edge

pytestmark = pytest.mark.no_blockbuster  # the test drives a subprocess and files by hand

CONFIG = """\
listen: 127.0.0.1:{port}
admin: {{listen: "127.0.0.1:{admin}"}}
cache: {{dir: {cache}}}
origins:
  a: {{url: "{a}"}}
  b: {{url: "{b}"}}
routes:
  - name: main
    origin: {target}
"""


@pytest.fixture
async def pair(clock: FakeClock) -> AsyncIterator[tuple[ScriptedOrigin, ScriptedOrigin]]:
    a, b = ScriptedOrigin(clock), ScriptedOrigin(clock)
    await a.start()
    await b.start()
    for o, name in ((a, b"a"), (b, b"b")):
        o.script("/who", Reply(body=name, headers={"Cache-Control": "no-store"}))
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def edge(tmp_path: Path, pair: tuple[ScriptedOrigin, ScriptedOrigin]) -> AsyncIterator[Edge]:
    e = Edge(tmp_path, *pair)
    write(e, "a")
    yield e
    if e.proc is not None and e.proc.returncode is None:
        e.proc.kill()
        await e.proc.wait()


def write(edge: Edge, target: str) -> None:
    edge.write(target, CONFIG.format(target=target, **edge.values))


def fresh() -> aiohttp.ClientSession:
    """A new connection per request: SO_REUSEPORT spreads connections, not requests."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def worker_pids(s: aiohttp.ClientSession, edge: Edge, count: int) -> set[int]:
    """Poll /healthz until `count` distinct workers answered (so all are up)."""
    seen: set[int] = set()
    for _ in range(400):
        try:
            async with s.get(edge.admin_url + "/healthz") as r:
                if r.status == 200:
                    seen.add(int(r.headers["Edgeproxy-Worker"]))
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.02)
        if len(seen) >= count:
            return seen
    raise AssertionError(f"only workers {seen} answered")


async def versions(s: aiohttp.ClientSession, edge: Edge, pids: set[int], v: int) -> None:
    """Poll GET /config until every worker in `pids` reports config version `v`."""
    at: dict[int, int] = {}
    for _ in range(400):
        async with s.get(edge.admin_url + "/config") as r:
            at[int(r.headers["Edgeproxy-Worker"])] = (await r.json())["version"]
        if set(at) >= pids and all(at[p] == v for p in pids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"config versions per worker {at}, wanted {v} on {pids}")


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(1000):  # ~10 s at most
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with s.get(url) as r:
        return r.status, await r.read()


async def test_reload_reaches_every_worker(edge: Edge) -> None:
    await edge.start("--workers", "2", "--no-watch")
    assert edge.proc is not None
    async with fresh() as s:
        pids = await worker_pids(s, edge, 2)
        write(edge, "b")
        # POST /reload lands on one worker; the supervisor passes it to the other.
        async with s.post(edge.admin_url + "/reload") as r:
            assert r.status == 200 and (await r.json())["version"] == 2
        await versions(s, edge, pids, 2)  # 2 on both: nobody reloaded twice
        for _ in range(20):
            assert await get(s, edge.url + "/who") == (200, b"b")
        # SIGHUP to the supervisor: every worker reloads once.
        write(edge, "a")
        edge.proc.send_signal(signal.SIGHUP)
        await versions(s, edge, pids, 3)
        for _ in range(20):
            assert await get(s, edge.url + "/who") == (200, b"a")
    await edge.stop()


async def test_purge_reaches_every_worker(
    edge: Edge, pair: tuple[ScriptedOrigin, ScriptedOrigin]
) -> None:
    origin = pair[0]
    origin.script("/p", Reply(body=b"v1", headers={"Cache-Control": "max-age=600"}))
    await edge.start("--workers", "2", "--no-watch")
    async with fresh() as s:
        await worker_pids(s, edge, 2)
        for _ in range(20):  # fresh connections: both workers store/serve it
            assert await get(s, edge.url + "/p") == (200, b"v1")
        assert origin.hits("/p") == 1  # one shared disk store
        origin.script("/p", Reply(body=b"v2", headers={"Cache-Control": "max-age=600"}))
        async with s.post(edge.admin_url + "/purge", json={"all": True}) as r:
            assert r.status == 200
        # No worker's hot tier still holds v1.
        for _ in range(20):
            assert await get(s, edge.url + "/p") == (200, b"v2")
        assert origin.hits("/p") == 2
    await edge.stop()


async def test_killed_worker_is_restarted_and_loses_only_its_requests(edge: Edge) -> None:
    await edge.start("--workers", "2", "--no-watch")
    ok: list[int] = []
    lost: list[BaseException] = []
    done = asyncio.Event()

    async def traffic() -> None:
        async with fresh() as s:
            for _ in range(3000):  # bounded; stops once the worker is back
                if done.is_set():
                    return
                try:
                    status, body = await get(s, edge.url + "/who")
                    assert (status, body) == (200, b"a")
                    ok.append(status)
                except aiohttp.ClientConnectionError as e:
                    lost.append(e)

    async with fresh() as s:
        pids = await worker_pids(s, edge, 2)
        clients = [asyncio.create_task(traffic()) for _ in range(4)]
        await until(lambda: len(ok) >= 20)
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        # A new worker answers; the survivor never stopped.
        now = await worker_pids(s, edge, 2)
        for _ in range(200):
            if len(now - pids) == 1:
                break
            now |= await worker_pids(s, edge, 1)
        served_before = len(ok)
        await until(lambda: len(ok) >= served_before + 20)
        done.set()
        await asyncio.gather(*clients)
    assert victim not in now and len(now - pids) == 1 and (pids - {victim}) <= now
    # At most the requests the dead worker held: one per concurrent client.
    assert len(lost) <= len(clients), lost
    log = await edge.stop()
    assert f"pid {victim} exited (signal SIGKILL)" in log


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_drains_in_flight_requests(
    edge: Edge, pair: tuple[ScriptedOrigin, ScriptedOrigin], workers: str
) -> None:
    origin = pair[0]
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"done", headers={"Cache-Control": "max-age=60"})

    origin.script("/slow", slow)
    await edge.start("--workers", workers, "--no-watch", "--drain-timeout", "20")
    assert edge.proc is not None
    async with fresh() as s:
        await worker_pids(s, edge, int(workers))
        in_flight = [asyncio.create_task(get(s, edge.url + f"/slow?{i}")) for i in range(4)]
        for _ in range(500):
            if origin.hits("/slow") == 4:
                break
            await asyncio.sleep(0.01)
        assert origin.hits("/slow") == 4
        edge.proc.send_signal(signal.SIGTERM)
        # Stop accepting: new connections are refused while the four drain.
        for _ in range(500):
            try:
                await get(s, edge.url + "/who")
            except aiohttp.ClientConnectorError:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("still accepting after SIGTERM")
        assert not any(t.done() for t in in_flight)
        release.set()
        assert await asyncio.gather(*in_flight) == [(200, b"done")] * 4
    log = await edge.stop()  # exit code 0
    assert "draining in-flight requests" in log


async def test_drain_is_bounded(edge: Edge, pair: tuple[ScriptedOrigin, ScriptedOrigin]) -> None:
    origin = pair[0]
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"late")

    origin.script("/stuck", stuck)
    await edge.start("--no-watch", "--drain-timeout", "0.3")
    assert edge.proc is not None
    async with fresh() as s:
        await worker_pids(s, edge, 1)
        held = asyncio.create_task(get(s, edge.url + "/stuck"))
        for _ in range(500):
            if origin.hits("/stuck") == 1:
                break
            await asyncio.sleep(0.01)
        edge.proc.send_signal(signal.SIGTERM)
        # The process exits 0 though the origin never answered: the drain has a bound.
        await edge.stop()
        release.set()
        with pytest.raises(aiohttp.ClientError):
            await held
