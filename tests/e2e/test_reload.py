"""Live reload of a running `edgeproxy serve` process: SIGHUP, POST /reload, file edits.

The proxy runs as a real subprocess (the way operators run it); the origins
are scripted in the test process. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FakeClock
from tests.e2e.harness import Reply, ScriptedOrigin, free_port, spawn_serve, wait_healthy

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
    cache: off
"""


class Edge:
    def __init__(self, tmp: Path, a: ScriptedOrigin, b: ScriptedOrigin) -> None:
        self.path = tmp / "edge.yaml"
        self.port, self.admin = free_port(), free_port()
        assert a.server is not None and b.server is not None
        self.values = {
            "port": self.port,
            "admin": self.admin,
            "cache": tmp / "cache",
            "a": f"http://127.0.0.1:{a.server.port}",
            "b": f"http://127.0.0.1:{b.server.port}",
        }
        self.proc: asyncio.subprocess.Process | None = None

    def write(self, target: str, text: str | None = None) -> None:
        self.path.write_text(text or CONFIG.format(target=target, **self.values))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    async def start(self, *flags: str) -> None:
        self.proc = await spawn_serve(self.path, *flags)
        if not await wait_healthy(self.admin_url, self.proc):
            raise AssertionError("edgeproxy did not start")

    async def stop(self) -> str:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.proc.communicate(), 20)
        assert self.proc.returncode == 0, err.decode()
        return err.decode()

    async def config(self, s: aiohttp.ClientSession) -> dict[str, object]:
        async with s.get(self.admin_url + "/config") as r:
            data: dict[str, object] = await r.json()
            return data

    async def wait_version(self, s: aiohttp.ClientSession, version: int) -> None:
        for _ in range(300):  # the watcher polls every second: allow ~15 s
            if (await self.config(s))["version"] == version:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"config version {version} never became active")


@pytest.fixture
async def pair(clock: FakeClock) -> AsyncIterator[tuple[ScriptedOrigin, ScriptedOrigin]]:
    a, b = ScriptedOrigin(clock), ScriptedOrigin(clock)
    await a.start()
    await b.start()
    for o, name in ((a, b"a"), (b, b"b")):
        o.script("/who", Reply(body=name))
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def edge(tmp_path: Path, pair: tuple[ScriptedOrigin, ScriptedOrigin]) -> AsyncIterator[Edge]:
    e = Edge(tmp_path, *pair)
    e.write("a")
    yield e
    if e.proc is not None and e.proc.returncode is None:
        await e.stop()


async def who(s: aiohttp.ClientSession, edge: Edge) -> bytes:
    async with s.get(edge.url + "/who") as r:
        assert r.status == 200
        return await r.read()


pytestmark = pytest.mark.no_blockbuster  # the test drives a subprocess and files by hand


async def test_sighup_reloads(edge: Edge) -> None:
    await edge.start("--no-watch")
    async with aiohttp.ClientSession() as s:
        assert await who(s, edge) == b"a"
        edge.write("b")
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGHUP)
        await edge.wait_version(s, 2)
        assert await who(s, edge) == b"b"
        assert (await edge.config(s))["trigger"] == "SIGHUP"
    await edge.stop()


async def test_admin_post_reload_and_bad_edit_keeps_old_rules(edge: Edge) -> None:
    await edge.start("--no-watch")
    async with aiohttp.ClientSession() as s:
        edge.write("b")
        async with s.post(edge.admin_url + "/reload") as r:
            assert r.status == 200
            assert (await r.json())["version"] == 2
        assert await who(s, edge) == b"b"
        # A broken edit: rejected with file:line:key, and the old rules keep serving.
        edge.write("b", CONFIG.format(target="nowhere", **edge.values))
        async with s.post(edge.admin_url + "/reload") as r:
            assert r.status == 422
            body = await r.json()
        assert body["reloaded"] is False and body["version"] == 2
        assert body["last_error"] == [
            f"{edge.path}:9 routes[0].origin: unknown origin 'nowhere' (known: a, b)"
        ]
        assert await who(s, edge) == b"b"
        config = await edge.config(s)
        assert config["version"] == 2 and config["last_error"] == body["last_error"]
    log = await edge.stop()
    assert "config reload (admin POST /reload) rejected; keeping version 2" in log


async def test_file_change_is_picked_up(edge: Edge) -> None:
    await edge.start()
    async with aiohttp.ClientSession() as s:
        assert await who(s, edge) == b"a"
        edge.write("b")
        await edge.wait_version(s, 2)
        assert await who(s, edge) == b"b"
        assert (await edge.config(s))["trigger"] == "file change"
    await edge.stop()


async def test_steady_traffic_across_ten_reloads_loses_nothing(edge: Edge) -> None:
    await edge.start("--no-watch")
    statuses: list[int] = []
    bodies: set[bytes] = set()
    done = asyncio.Event()

    async def traffic(s: aiohttp.ClientSession) -> None:
        for _ in range(2000):  # bounded; stops as soon as the reloads are done
            if done.is_set():
                return
            async with s.get(edge.url + "/who") as r:
                statuses.append(r.status)
                bodies.add(await r.read())

    async with aiohttp.ClientSession() as s:
        workers = [asyncio.create_task(traffic(s)) for _ in range(4)]
        for i in range(10):
            edge.write("b" if i % 2 == 0 else "a")
            async with s.post(edge.admin_url + "/reload") as r:
                assert r.status == 200
            await asyncio.sleep(0.05)  # let traffic run under each version
        done.set()
        await asyncio.gather(*workers)
        assert (await edge.config(s))["version"] == 11
    assert len(statuses) > 40
    assert set(statuses) == {200}
    assert bodies == {b"a", b"b"}
    await edge.stop()


async def test_listen_change_needs_restart(edge: Edge) -> None:
    await edge.start("--no-watch")
    async with aiohttp.ClientSession() as s:
        moved = CONFIG.format(target="b", **{**edge.values, "port": free_port()})
        edge.write("b", moved)
        async with s.post(edge.admin_url + "/reload") as r:
            body = await r.json()
        assert body["reloaded"] is True
        assert body["restart_needed"] and body["restart_needed"][0].startswith("listen ")
        assert await who(s, edge) == b"b"  # still on the old port, new rules
    log = await edge.stop()
    assert "config change needs a restart to take effect: listen" in log
