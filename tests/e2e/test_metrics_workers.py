"""GET /metrics of a real `edgeproxy serve --workers 2`: the totals add up
across workers, and still do after a worker is killed and restarted.

A dead worker's counters are kept (its files stay in the metrics directory):
its requests happened, and a Prometheus counter must never go down. Its live
gauge is dropped by the supervisor as it reaps it (mark_process_dead), so
`edgeproxy_workers` stays the number of live workers. The supervisor makes
its metrics directory with mkdtemp: TMPDIR points it into the test's own
directory, so the test can read each worker's files and see it removed at exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import FakeClock
from tests.e2e.harness import Reply, ScriptedOrigin
from tests.e2e.test_metrics import Scraped, parse
from tests.e2e.test_reload import Edge
from tests.e2e.test_workers import fresh, get, worker_pids, write

pytestmark = pytest.mark.no_blockbuster  # the test drives a subprocess and files by hand

PATH = "/p"
HIT = {"route": "main", "method": "GET", "cache": "hit"}


@pytest.fixture
async def pair(clock: FakeClock) -> AsyncIterator[tuple[ScriptedOrigin, ScriptedOrigin]]:
    a, b = ScriptedOrigin(clock), ScriptedOrigin(clock)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def edge(
    tmp_path: Path,
    pair: tuple[ScriptedOrigin, ScriptedOrigin],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Edge]:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the subprocess's mkdtemp
    pair[0].script(PATH, Reply(body=b"p", headers={"Cache-Control": "max-age=600"}))
    e = Edge(tmp_path, *pair)
    write(e, "a")
    yield e
    if e.proc is not None and e.proc.returncode is None:
        e.proc.kill()
        await e.proc.wait()


async def scrape(s: aiohttp.ClientSession, edge: Edge) -> tuple[int, Scraped]:
    """One scrape and the pid of the worker that answered it."""
    async with s.get(edge.admin_url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return int(r.headers["Edgeproxy-Worker"]), parse(await r.text())


async def scrape_all(
    s: aiohttp.ClientSession, edge: Edge, pids: set[int], requests: int
) -> dict[int, Scraped]:
    """A scrape from every worker in `pids`, once the total is `requests`
    (counts land as a handler returns, a moment after its client is answered)."""
    seen: dict[int, Scraped] = {}
    for _ in range(500):
        pid, m = await scrape(s, edge)
        if m.total("edgeproxy_requests_total") == requests:
            seen[pid] = m
        if set(seen) >= pids:
            return seen
        await asyncio.sleep(0.01)
    raise AssertionError(f"scrapes with {requests} requests only from {set(seen)} of {pids}")


def per_worker(metrics_dir: Path) -> dict[int, float]:
    """Requests each worker's own counter file holds."""
    out: dict[int, float] = {}
    for f in metrics_dir.glob("counter_*.db"):
        pid = int(f.stem.rsplit("_", 1)[1])
        families = MultiProcessCollector.merge([str(f)])
        out[pid] = sum(
            s.value
            for fam in families
            if fam.name == "edgeproxy_requests"
            for s in fam.samples
            if s.name == "edgeproxy_requests_total"
        )
    return out


async def traffic(s: aiohttp.ClientSession, edge: Edge, n: int) -> None:
    for _ in range(n):
        assert await get(s, edge.url + PATH) == (200, b"p")


async def test_totals_add_up_across_workers_and_survive_a_restart(
    edge: Edge, pair: tuple[ScriptedOrigin, ScriptedOrigin], tmp_path: Path
) -> None:
    origin = pair[0]
    await edge.start("--workers", "2", "--no-watch")
    (metrics_dir,) = (tmp_path / "tmp").glob("edgeproxy-metrics-*")
    async with fresh() as s:
        pids = await worker_pids(s, edge, 2)
        # New connections until both workers served some (SO_REUSEPORT spreads
        # connections by hash); bounded.
        sent = 0
        for _ in range(20):
            await traffic(s, edge, 10)
            sent += 10
            counts = per_worker(metrics_dir)
            if set(counts) >= pids and all(counts[p] > 0 for p in pids):
                break
        scraped = await scrape_all(s, edge, pids, sent)
        # Every worker reports the same totals: the sum of both, not its own.
        counts = per_worker(metrics_dir)
        assert counts.keys() == pids and all(counts[p] > 0 for p in pids)
        assert sum(counts.values()) == sent
        for m in scraped.values():
            assert m.total("edgeproxy_requests_total") == sent
            # One shared disk store: one miss, every other request a hit.
            assert m.get("edgeproxy_requests_total", **HIT) == sent - 1
            assert m.get("edgeproxy_origin_requests_total", origin="a", status="200") == 1
            assert m.get("edgeproxy_response_bytes_total", source="cache") == sent - 1
            assert m.get("edgeproxy_workers") == 2
            assert m.get("edgeproxy_cache_entries") == 1
        assert origin.hits(PATH) == 1

        # Kill one; the supervisor restarts it.
        victim = min(pids)
        victim_counted = counts[victim]
        os.kill(victim, signal.SIGKILL)
        now: set[int] = set()
        for _ in range(200):
            now = await worker_pids(s, edge, 2)
            if victim not in now and len(now - pids) == 1:
                break
        assert victim not in now and len(now - pids) == 1, now
        more = 20
        await traffic(s, edge, more)
        scraped = await scrape_all(s, edge, now, sent + more)
        for m in scraped.values():
            # The dead worker's counts are kept: still every request sent.
            assert m.total("edgeproxy_requests_total") == sent + more
            assert m.get("edgeproxy_requests_total", **HIT) == sent + more - 1
            # Its live gauge went with it: two live workers, not three.
            assert m.get("edgeproxy_workers") == 2
        assert per_worker(metrics_dir)[victim] == victim_counted
    await edge.stop()
    assert not metrics_dir.exists()  # the supervisor removes its directory
