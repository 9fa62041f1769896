"""Misses answered on the wire (edgeproxy/wire_miss.py).

A plain GET the hot tier knows nothing of is looked up, fetched, stored
and answered from the listener's protocol when the answer is the simple
case (a 200 with a Content-Length within the hot tier's largest object,
stored as it came); anything else is handed to aiohttp's handler with the
lookup and, once it went upstream, the origin's answer. The comparison
test runs a proxy with the fast path on beside one with it off through
the same misses and holds what the client got (field for field), what
reached the origin, /stats' counters, the outcome counts and the
Prometheus counts to be the same. The rest of the e2e suite runs on the
wire path by default, misses included (collapsing, streaming, storing,
faults), and its [aiohttp] runs take the full path.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
from multidict import CIMultiDict

from edgeproxy.policy.transform import Compression
from edgeproxy.state import EDGE
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch, until
from tests.e2e.test_wire import origin_url
from tests.e2e.test_wire_revalidation import metric_lines

CACHEABLE = {"Cache-Control": "max-age=60", "ETag": '"e"', "Content-Type": "application/x-bin"}
TEXT = {"Cache-Control": "max-age=60", "Content-Type": "text/plain"}

# (path, reply, request fields, whether the wire path answers it itself)
STEPS: list[tuple[str, Reply, dict[str, str], bool]] = [
    ("/plain", Reply(body=b"p" * 1000, headers=CACHEABLE), {}, True),
    ("/plain", Reply(body=b"p" * 1000, headers=CACHEABLE), {}, False),  # a hit now
    ("/empty", Reply(body=b"", headers=CACHEABLE), {}, True),  # the head waits for the commit
    ("/vary", Reply(body=b"v", headers={**CACHEABLE, "Vary": "X-Lang"}), {"X-Lang": "de"}, True),
    # Another variant of a hot key: fwd=vary-miss, the full path's.
    ("/vary", Reply(body=b"v", headers={**CACHEABLE, "Vary": "X-Lang"}), {"X-Lang": "en"}, False),
    ("/vary", Reply(body=b"v", headers={**CACHEABLE, "Vary": "X-Lang"}), {"X-Lang": "de"}, False),
    ("/tagged", Reply(body=b"t", headers={**CACHEABLE, "Surrogate-Key": "a b"}), {}, True),
    ("/text", Reply(body=b"some text " * 40, headers=TEXT), {}, True),  # Vary added, as is
    ("/text-gz", Reply(body=b"more text " * 100, headers=TEXT), {"Accept-Encoding": "gzip"}, False),
    ("/no-store", Reply(body=b"n", headers={"Cache-Control": "no-store"}), {}, False),
    ("/no-store", Reply(body=b"n", headers={"Cache-Control": "no-store"}), {}, False),  # pass
    ("/oic", Reply(body=b"i", headers=CACHEABLE), {"Cache-Control": "only-if-cached"}, False),
    ("/private", Reply(body=b"n", headers={"Cache-Control": "private"}), {}, False),
    ("/missing", Reply(status=404, body=b"gone", headers=CACHEABLE), {}, False),
    ("/big", Reply(body=b"b" * 5000, headers=CACHEABLE), {}, False),  # over memory_max_object
    ("/cond", Reply(body=b"c", headers=CACHEABLE), {"If-None-Match": '"x"'}, False),
    ("/range", Reply(body=b"0123456789", headers=CACHEABLE), {"Range": "bytes=2-4"}, False),
    ("/own", Reply(body=b"o", headers=CACHEABLE), {"Cache-Control": "no-cache"}, True),
]


def upstream_view(origin: ScriptedOrigin) -> list[tuple[str, str, list[tuple[str, str]]]]:
    names = ("if-none-match", "range", "accept-encoding", "via", "x-forwarded-for", "x-lang")
    return [
        (r.method, r.path_qs, [(n, r.headers.get(n, "-")) for n in names]) for r in origin.received
    ]


async def run_steps(client: aiohttp.ClientSession, p: Proxy, origin: ScriptedOrigin) -> list[Any]:
    seen = []
    edge = p.app[EDGE]
    for path, reply, headers, on_wire in STEPS:
        origin.script(path, reply)
        before = edge.counters["wire_misses"]
        got = await fetch(client, "GET", p.url + path, headers=headers)
        fields = [(k, v) for k, v in got.headers.items() if k.lower() != "x-request-id"]
        seen.append((path, got.status, fields, got.body))
        if p.config.cache.fast_path:  # [wire] only: which ones it took
            assert edge.counters["wire_misses"] - before == int(on_wire), path
    # Out of memory, still on disk: looked up by the wire path, answered by
    # the full path from what it found (no second lookup: the counts agree).
    store = edge.store
    assert isinstance(store, TieredStore)
    store.drop_memory()
    got = await fetch(client, "GET", p.url + "/plain")
    seen.append(
        (
            "/plain again",
            got.status,
            [(k, v) for k, v in got.headers.items() if k.lower() != "x-request-id"],
            got.body,
        )
    )
    return seen


async def test_both_paths_miss_alike(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    tmp_path: Any,
    hit_path: str,
) -> None:
    start = clock.now
    runs = []
    for fast in (True, False):
        clock.now = start
        origin.received.clear()
        p = await make_proxy(
            origin_url(origin),
            cache_dir=str(tmp_path / str(fast)),
            fast_path=fast,
            memory_max_object=4096,
            compress=Compression(enabled=True),
        )
        seen = await run_steps(client, p, origin)
        edge = p.app[EDGE]
        await asyncio.sleep(0.01)  # the metrics flush once per loop turn
        assert isinstance(edge.store, TieredStore)
        tally = (
            {k: v for k, v in edge.counters.items() if not k.startswith("wire_")},
            dict(edge.outcomes),
            edge.store.memory_stats(),
            metric_lines(edge.metrics.registry),
        )
        runs.append((seen, upstream_view(origin), tally, edge.counters["wire_misses"]))
    (wire_seen, wire_up, wire_tally, on_wire), (full_seen, full_up, full_tally, off_wire) = runs
    for w, f in zip(wire_seen, full_seen, strict=True):
        assert w == f, w[0]
    assert wire_up == full_up
    assert wire_tally == full_tally
    assert any('cache="miss"' in line for line in wire_tally[3]), wire_tally[3]
    assert off_wire == 0
    assert on_wire == (sum(on for *_, on in STEPS) if hit_path == "wire" else 0)
    got = {path: (status, CIMultiDict(fields), body) for path, status, fields, body in wire_seen}
    status, fields, body = got["/plain"]
    assert (status, body) == (200, b"p" * 1000)
    assert fields["Cache-Status"].startswith("edgeproxy; hit")  # the second request's
    assert got["/text"][1]["Vary"] == "Accept-Encoding"  # compressible: varies on it
    assert got["/text-gz"][1]["Content-Encoding"] == "gzip"
    assert gzip.decompress(got["/text-gz"][2]) == b"more text " * 100
    assert got["/range"][0] == 206
    assert got["/missing"][0] == 404
    assert got["/oic"][0] == 504  # RFC 9111 section 5.2.1.7: nothing stored
    assert "hit" in got["/plain again"][1]["Cache-Status"]


async def test_origin_down_is_the_full_paths_error(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    """No origin: one attempt (the wire path's), answered by the full path
    with its 502 and Proxy-Status."""
    p = await make_proxy(origin_url(origin))
    await origin.close()
    edge = p.app[EDGE]
    got = await fetch(client, "GET", p.url + "/x")
    assert got.status == 502
    assert "connection_refused" in got.headers["Proxy-Status"]
    assert edge.counters["origin_requests"] == 1
    assert edge.counters["misses"] == 1


async def test_a_miss_collapses_with_its_waiters(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    """Requests for a key being fetched wait for it and get the same body
    from the one origin response."""
    gate = asyncio.Event()

    async def slow(request: Any) -> Any:
        from aiohttp import web

        await gate.wait()
        return web.Response(body=b"s" * 100, headers={**CACHEABLE, "Date": origin.date()})

    origin.script("/slow", slow)
    p = await make_proxy(origin_url(origin))
    flights = p.app[EDGE].flights
    first = asyncio.ensure_future(fetch(client, "GET", p.url + "/slow"))
    await until(lambda: origin.hits("/slow") == 1, "the miss upstream")
    rest = [asyncio.ensure_future(fetch(client, "GET", p.url + "/slow")) for _ in range(3)]
    await until(lambda: sum(flights.waiting().values()) >= 3, "three waiters")
    gate.set()
    answers = await asyncio.gather(first, *rest)
    assert [a.body for a in answers] == [b"s" * 100] * 4
    assert origin.hits("/slow") == 1
    assert "stored" in answers[0].headers["Cache-Status"]
    assert all("collapsed" in a.headers["Cache-Status"] for a in answers[1:])
