"""Disk faults against a real `edgeproxy serve`: full or unwritable disk, a
damaged database at start (issue #8).

A full disk, for real, as root and as non-root, without mounts: RLIMIT_FSIZE.
With the limit at 0 every write() to a regular file fails with EFBIG, as it
does on a full disk with ENOSPC (CPython ignores SIGXFSZ, so the write
returns the error); SQLite reports it as SQLITE_IOERR_WRITE ("disk I/O
error"). Root is not exempt (permissions are, rlimits are not), no
filesystem is needed, and `prlimit(2)` sets it on the running proxy
process from the test (same user) and lifts it again: the disk "recovers".
Pipes are not regular files: the proxy's stderr (a pipe) still works.
Reads keep working, as they do on a full disk.

The back-off between write retries reads the proxy's monotonic clock; a
subprocess has no fake one, so recovery is awaited by a bounded poll of
requests (the first retry comes within a second or two). The back-off
schedule itself is tested on the store with a FakeClock, where the fault is
a real ENOTDIR (the cache directory's parent is a file).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.policy.entry import Entry
from edgeproxy.store.base import Degraded, health_of
from edgeproxy.store.disk import BACKOFF_MIN, DiskStore
from tests.conftest import FakeClock
from tests.e2e.harness import Reply, ScriptedOrigin, free_port, spawn_serve, wait_healthy

pytestmark = pytest.mark.no_blockbuster  # drives a subprocess and files by hand

MAX_AGE = {"Cache-Control": "max-age=600"}

CONFIG = """\
listen: 127.0.0.1:{port}
admin: {{listen: "127.0.0.1:{admin}"}}
cache: {{dir: "{cache}"}}
origins:
  main: {{url: "{origin}"}}
routes:
  - name: main
    origin: main
"""


class EdgeProc:
    """A real `edgeproxy serve` (one process: the pid is the proxy's), its
    stderr drained into `log` so a chatty proxy never blocks on the pipe."""

    def __init__(self, tmp: Path, origin: ScriptedOrigin, cache: Path | None = None) -> None:
        assert origin.server is not None
        self.port, self.admin = free_port(), free_port()
        self.cache = cache or tmp / "cache"
        self.config = tmp / "edge.yaml"
        self.config.write_text(
            CONFIG.format(
                port=self.port,
                admin=self.admin,
                cache=self.cache,
                origin=f"http://127.0.0.1:{origin.server.port}",
            )
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.log = ""
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, preexec: Callable[[], None] | None = None) -> None:
        self.log = ""
        self.proc = await spawn_serve(self.config, "--no-watch", preexec=preexec)
        self._drain = asyncio.get_running_loop().create_task(self._read(self.proc))
        if not await wait_healthy(self.admin_url, self.proc):
            raise AssertionError(f"edgeproxy did not start:\n{self.log}")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.log += line.decode(errors="replace")

    async def kill(self) -> None:
        """SIGKILL: nothing runs after it (no cleanup, no commit)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 10)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 10)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
        await self.kill()

    def disk_full(self, full: bool) -> None:
        """RLIMIT_FSIZE 0 on the running proxy: every write to a file fails (EFBIG)."""
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (0 if full else hard, hard))


def no_file_writes() -> None:
    """preexec_fn: the proxy starts with a disk it can't write a byte to."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))


@pytest.fixture
async def edge(tmp_path: Path, origin: ScriptedOrigin) -> AsyncIterator[EdgeProc]:
    e = EdgeProc(tmp_path, origin)
    yield e
    await e.stop()


@pytest.fixture
async def s() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with s.get(url) as r:
        return r.status, r.headers.get("Cache-Status", ""), await r.read()


async def health(s: aiohttp.ClientSession, edge: EdgeProc) -> dict[str, Any]:
    async with s.get(edge.admin_url + "/healthz") as r:
        assert r.status == 200, await r.text()  # degraded is still 200: it serves
        data: dict[str, Any] = await r.json()
        return data


async def store_metrics(s: aiohttp.ClientSession, edge: EdgeProc) -> dict[str, float]:
    """The store gauges from GET /metrics (no token configured: loopback only)."""
    async with s.get(edge.admin_url + "/metrics") as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("edgeproxy_store_")
    }


async def poll(check: Callable[[], Awaitable[bool]], what: str, tries: int = 200) -> None:
    """Bounded: ~10 s at most, for the proxy's back-off (1 s, then 2 s, ...)."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def script(origin: ScriptedOrigin, *paths: str, size: int = 100) -> None:
    for p in paths:
        origin.script(p, Reply(body=body_of(p, size), headers=MAX_AGE))


def body_of(path: str, size: int) -> bytes:
    unit = path.encode() + b"|"
    return (unit * (size // len(unit) + 1))[:size]


# -- full disk at run time -----------------------------------------------------


@pytest.mark.parametrize("size", [100, 300_000], ids=["inline-body", "file-body"])
async def test_full_disk_passes_through_reports_and_recovers(
    edge: EdgeProc, origin: ScriptedOrigin, s: aiohttp.ClientSession, size: int
) -> None:
    script(origin, "/old", "/purged", size=size)
    await edge.start()
    for p in ("/old", "/purged"):
        await get(s, edge.url + p)
        assert "hit" in (await get(s, edge.url + p))[1]
    assert "store" not in await health(s, edge)

    edge.disk_full(True)
    script(origin, *(f"/new{i}" for i in range(20)), size=size)
    for i in range(20):  # every request answered, complete, none stored
        status, cs, body = await get(s, edge.url + f"/new{i}")
        assert (status, body) == (200, body_of(f"/new{i}", size)), cs
    assert origin.hits("/new0") == 1
    got = await health(s, edge)
    assert (got["status"], got["store"]) == ("degraded", "degraded")
    assert re.search("disk I/O error|File too large", got["store_health"]["reason"])
    assert got["store_health"]["write_failures"] >= 1
    assert (await store_metrics(s, edge))["edgeproxy_store_degraded"] == 1
    # Reads still work on a full disk: what is stored is still served.
    assert "hit" in (await get(s, edge.url + "/old"))[1]
    # Once degraded it stops trying to store: no "stored" while backing off.
    status, cs, _ = await get(s, edge.url + "/new0")
    assert status == 200 and "stored" not in cs, cs

    # A purge the disk can't take: refused (503), kept, and no hits until it is applied.
    async with s.post(edge.admin_url + "/purge", json={"prefix": edge.url + "/purged"}) as r:
        assert r.status == 503, await r.text()
    got = await health(s, edge)
    assert got["store_health"]["hits"] is False and got["store_health"]["pending"] == 1
    before = origin.hits("/old")
    assert "hit" not in (await get(s, edge.url + "/old"))[1]
    assert origin.hits("/old") == before + 1

    edge.disk_full(False)

    async def caching_again() -> bool:
        await get(s, edge.url + "/new5")
        return "hit" in (await get(s, edge.url + "/new5"))[1]

    await poll(caching_again, "caching to resume")
    assert "store" not in await health(s, edge)
    scraped = await store_metrics(s, edge)
    assert scraped["edgeproxy_store_degraded"] == 0
    assert scraped["edgeproxy_store_write_failures"] >= 1  # what happened stays counted
    # The kept purge went first: /purged comes from the origin, /old is a hit again.
    before = origin.hits("/purged")
    status, cs, body = await get(s, edge.url + "/purged")
    assert (status, body) == (200, body_of("/purged", size)) and "hit" not in cs
    assert origin.hits("/purged") == before + 1
    # Logged once per state change, not per request.
    assert edge.log.count("cache store degraded") == 1, edge.log
    assert edge.log.count("cache store recovered") == 1, edge.log


async def test_started_on_an_unwritable_disk_serves_then_caches(
    edge: EdgeProc, origin: ScriptedOrigin, s: aiohttp.ClientSession
) -> None:
    script(origin, "/a")
    await edge.start(preexec=no_file_writes)
    got = await health(s, edge)
    assert got["store"] == "degraded" and "opening cache" in got["store_health"]["reason"]
    for _ in range(3):
        status, cs, body = await get(s, edge.url + "/a")
        assert (status, body) == (200, body_of("/a", 100)) and "hit" not in cs
    edge.disk_full(False)

    async def caching() -> bool:
        await get(s, edge.url + "/a")
        return "hit" in (await get(s, edge.url + "/a"))[1]

    await poll(caching, "the cache to open")
    assert "store" not in await health(s, edge)
    assert "Traceback" not in edge.log


# -- damaged database at start -------------------------------------------------


def garbage(cache: Path) -> None:
    (cache / "cache.db").write_bytes(b"this is not an SQLite database\n" * 400)


def truncated(cache: Path) -> None:
    db = cache / "cache.db"
    os.truncate(db, db.stat().st_size // 3)


def directory_is_a_file(cache: Path) -> None:
    for p in sorted(cache.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    cache.rmdir()
    cache.write_bytes(b"not a directory")


@pytest.mark.parametrize("damage", [garbage, truncated, directory_is_a_file])
async def test_damaged_database_is_moved_aside_at_start(
    edge: EdgeProc,
    origin: ScriptedOrigin,
    s: aiohttp.ClientSession,
    damage: Callable[[Path], None],
) -> None:
    paths = [f"/p{i}" for i in range(300)]  # enough rows that a third of the file cuts pages
    script(origin, *paths)
    await edge.start()
    for p in paths:
        await get(s, edge.url + p)
    await edge.stop()
    # A clean stop checkpointed the WAL: cache.db holds it all.
    damage(edge.cache)

    await edge.start()  # no crash loop: it comes up and answers /healthz
    assert "store" not in await health(s, edge)
    assert re.search(
        r"ERROR edgeproxy.store: cache (database|directory) .*(damaged|not a dir)", edge.log
    )
    aside = [p.name for p in edge.cache.parent.rglob("*.damaged-*")]
    assert aside, edge.log
    # Empty, and caching: a miss, then a hit.
    before = origin.hits("/p1")
    assert "hit" not in (await get(s, edge.url + "/p1"))[1]
    assert "hit" in (await get(s, edge.url + "/p1"))[1]
    assert origin.hits("/p1") == before + 1


# -- the store's back-off, on a fake clock ---------------------------------------


def entry(key: str) -> Entry:
    return Entry(key, 200, CIMultiDictProxy(CIMultiDict()), 1.0, 1.0)


async def commit(store: DiskStore, key: str, body: bytes) -> Entry:
    w = store.open_writer(key)
    await w.write(body)
    return await w.commit(entry(key))


async def test_back_off_doubles_and_the_cache_opens_when_it_can(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    parent = tmp_path / "parent"
    parent.write_bytes(b"a file where a directory should be")  # ENOTDIR: real, even as root
    store = await DiskStore.open(str(parent / "cache"), threads=1, clock=clock)
    try:
        h = health_of(store)
        assert (h.state, h.hits, h.retry_in) == ("degraded", False, BACKOFF_MIN)
        assert "Not a directory" in h.reason
        assert await store.lookup("k") == []
        assert await store.stats() == {"entries": 0, "bytes": 0}
        with pytest.raises(Degraded):  # backing off: refused without touching the disk
            await commit(store, "k", b"x")
        assert store.health().write_failures == 1
        for wait in (1.0, 2.0, 4.0):  # each failed retry doubles the back-off
            clock.advance(wait)
            assert store.health().writable
            with pytest.raises(Degraded):
                await commit(store, "k", b"x")
            assert store.health().retry_in == 2 * wait
        failures = store.health().write_failures
        parent.unlink()
        parent.mkdir()
        clock.advance(7.9)
        with pytest.raises(Degraded):
            await commit(store, "k", b"x")  # still within the back-off: not tried
        assert store.health().write_failures == failures
        clock.advance(0.1)
        stored = await commit(store, "k", b"body")
        assert store.health() == type(store.health())(write_failures=failures)
        assert [e.variant for e in await store.lookup("k")] == [stored.variant]
    finally:
        await store.close()
